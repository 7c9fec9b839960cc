"""Real Ray across the nodes' containers, and the serving-engine stand-ins on top.

Ray counts /dev/davinci[0-9]* when AscendCL is absent
(ray/_private/accelerators/npu.py), so the containers' 8 fake devices each
make `ray status` report NPUs without any --resources flag.
"""

import json
import shlex
import time
import urllib.error
import urllib.request

import pytest

from .conftest import in_container, runbook_run_argv, ssh_ok

pytestmark = pytest.mark.emulated

CONTAINER = "ascemu-test-ray"
MODEL = "/data/models/deepseek-r1"


@pytest.fixture(scope="module")
def ray_cluster(cluster):
    head, worker = cluster.nodes
    try:
        for node in cluster.nodes:
            ssh_ok(cluster, node, shlex.join(runbook_run_argv(CONTAINER, ["sleep", "infinity"])))
        got = in_container(cluster, head, CONTAINER,
                           f"ray start --head --port=6379 --node-ip-address={head.address} --include-dashboard=false")
        assert got.returncode == 0, got.stdout + got.stderr
        got = in_container(cluster, worker, CONTAINER,
                           f"ray start --address={head.address}:6379 --node-ip-address={worker.address}")
        assert got.returncode == 0, got.stdout + got.stderr
        yield cluster
    finally:
        for node in cluster.nodes:
            cluster.ssh(node, f"docker rm -f {CONTAINER}")


def ray_status(cluster):
    got = in_container(cluster, "node0", CONTAINER, "ray status")
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_ray_status_shows_16_npu_on_2_nodes(ray_cluster):
    deadline = time.time() + 30
    while True:
        # Right after `ray start` it may still say "No cluster status".
        status = ray_status(ray_cluster)
        active = status.split("Active:")[1].split("Pending:")[0] if "Active:" in status else ""
        if active.count("node_") == 2 or time.time() > deadline:
            break
        time.sleep(1)
    assert active.count("node_") == 2, status
    assert "0.0/16.0 NPU" in status, status


def http(url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return http(url)
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


def test_vllm_mindspore_tp16_over_ray_serves_openai_api(ray_cluster):
    head = ray_cluster.nodes[0]
    # runbook 000's serve command (TP16 across both nodes through Ray)
    cmd = (f"vllm-mindspore serve --model={MODEL} --trust_remote_code --max-num-seqs=256 --max_model_len=32768 "
           "--max-num-batched-tokens=4096 --block-size=128 --gpu-memory-utilization=0.9 "
           "--tensor-parallel-size 16 --distributed-executor-backend=ray --port 8100 > /tmp/vllm.log 2>&1")
    assert in_container(ray_cluster, head, CONTAINER, cmd, detach=True).returncode == 0
    try:
        base = f"http://{head.address}:8100"
        assert wait_http(f"{base}/health")[0] == 200
        _, models = http(f"{base}/v1/models")
        assert [m["id"] for m in models["data"]] == [MODEL]
        status, reply = http(f"{base}/v1/completions",
                             {"model": MODEL, "prompt": "I am", "max_tokens": 20, "temperature": 0})
        assert status == 200 and reply["object"] == "text_completion" and reply["model"] == MODEL
        assert MODEL in reply["choices"][0]["text"]
        status, chat = http(f"{base}/v1/chat/completions",
                            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30})
        assert status == 200 and MODEL in chat["choices"][0]["message"]["content"]
        with pytest.raises(urllib.error.HTTPError) as err:
            http(f"{base}/v1/completions", {"model": "other", "prompt": "x"})
        assert err.value.code == 404
        log = in_container(ray_cluster, head, CONTAINER, "cat /tmp/vllm.log").stdout
        assert "ray cluster: 2 nodes, 16.0 NPU" in log and "Application startup complete." in log
    finally:
        in_container(ray_cluster, head, CONTAINER, "pkill -f 'vllm-mindspore serve'")


def test_engine_rejects_unknown_flags_and_bad_values_with_exit_2(ray_cluster):
    cases = [f"vllm-mindspore serve {MODEL} --tensor-parallel-size 8 --no-such-flag",
             f"vllm-mindspore serve {MODEL} --block-size 7",
             f"vllm-mindspore serve {MODEL} --additional-config '{{not json'",
             f"lmdeploy serve api_server {MODEL} --backend pytorch --device ascend --tp 8 --no-such-flag"]
    for cmd in cases:
        got = in_container(ray_cluster, "node0", CONTAINER, cmd)
        assert got.returncode == 2, (cmd, got.stdout, got.stderr)


def test_engine_start_failures_exit_1_with_the_cause(ray_cluster):
    cases = {"vllm-mindspore serve /data/models/absent --tensor-parallel-size 8": "is not a local folder",
             f"vllm-mindspore serve {MODEL} --tensor-parallel-size 32 --distributed-executor-backend ray":
                 "exceeds the total number of available NPUs",
             f"ASCEND_RT_VISIBLE_DEVICES=0,1,2,3 vllm-mindspore serve {MODEL} --tensor-parallel-size 8 "
             "--distributed-executor-backend mp": "needs 8 NPUs on this node, 4 visible",
             f"lmdeploy serve api_server {MODEL} --tp 8": "device 'cuda' is not available"}
    for cmd, message in cases.items():
        got = in_container(ray_cluster, "node0", CONTAINER, cmd, timeout=60)
        assert got.returncode == 1 and message in got.stdout, (cmd, got.stdout, got.stderr)


def test_lmdeploy_ready_delay_then_crash(ray_cluster):
    head = ray_cluster.nodes[0]
    cmd = (f"ASCEMU_ENGINE_READY_DELAY=2 ASCEMU_ENGINE_CRASH=5 lmdeploy serve api_server {MODEL} "
           "--backend pytorch --device ascend --eager-mode --tp 16 --server-port 23334 > /tmp/lmdeploy.log 2>&1; "
           "echo exit=$? >> /tmp/lmdeploy.log")
    start = time.time()
    assert in_container(ray_cluster, head, CONTAINER, cmd, detach=True).returncode == 0
    url = f"http://{head.address}:23334/v1/models"
    time.sleep(0.5)
    with pytest.raises(OSError):
        http(url, timeout=1)  # not ready yet: nothing listens during the delay
    assert wait_http(url)[1]["data"][0]["id"] == MODEL
    assert time.time() - start >= 2
    deadline = time.time() + 15
    while "exit=" not in (log := in_container(ray_cluster, head, CONTAINER, "cat /tmp/lmdeploy.log").stdout):
        assert time.time() < deadline, log
        time.sleep(0.5)
    assert "exit=1" in log and "crash injected" in log


def test_mindie_daemon_reads_config_and_rank_table(ray_cluster):
    head = ray_cluster.nodes[0]
    service = "/usr/local/Ascend/mindie/latest/mindie-service"
    # runbook 001's sed edits of conf/config.json
    edits = {"ipAddress": f'"{head.address}"', "httpsEnabled": "false", "multiNodesInferEnabled": "true",
             "modelWeightPath": f'"{MODEL.replace("/", chr(92) + "/")}"', "modelName": '"DeepSeek-R1"',
             "worldSize": "8", "port": "1025"}
    sed = "; ".join(f"sed -i 's/\"{k}\"[[:space:]]*:[[:space:]]*.*,/\"{k}\" : {v},/' {service}/conf/config.json"
                    for k, v in edits.items())
    sed += (f"; sed -i 's/\"npuDeviceIds\"[[:space:]]*:[[:space:]]*\\[\\[.*\\]\\],/\"npuDeviceIds\" : "
            f"[[0,1,2,3,4,5,6,7]],/' {service}/conf/config.json")
    assert in_container(ray_cluster, head, CONTAINER, sed).returncode == 0
    table = {"version": "1.0", "server_count": "1", "status": "completed",
             "server_list": [{"server_id": head.address, "container_ip": head.address,
                              "device": [{"device_id": str(d), "device_ip": ip, "rank_id": str(d)}
                                         for d, ip in enumerate(head.device_ips)]}]}
    write = f"echo {shlex.quote(json.dumps(table))} > /tmp/rank_table.json"
    env = f"RANKTABLEFILE=/tmp/rank_table.json MIES_CONTAINER_IP={head.address}"
    in_container(ray_cluster, head, CONTAINER, f"{write}; chmod 644 /tmp/rank_table.json")
    got = in_container(ray_cluster, head, CONTAINER, f"cd {service} && {env} ./bin/mindieservice_daemon")
    assert got.returncode == 1 and "must be 640 or stricter" in got.stdout
    in_container(ray_cluster, head, CONTAINER, "chmod 640 /tmp/rank_table.json")
    cmd = f"cd {service} && {env} ./bin/mindieservice_daemon > /tmp/mindie.log 2>&1"
    assert in_container(ray_cluster, head, CONTAINER, cmd, detach=True).returncode == 0
    try:
        status, body = http_retry(f"http://{head.address}:1025/",
                                  {"inputs": "I love Beijing, because", "stream": False})
        assert status == 200 and "DeepSeek-R1" in body["generated_text"]
        assert "Daemon start success!" in in_container(ray_cluster, head, CONTAINER, "cat /tmp/mindie.log").stdout
    finally:
        in_container(ray_cluster, head, CONTAINER, "pkill -f mindieservice_daemon")


def http_retry(url, body, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            return http(url, body)
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_ray_stop_on_one_node_leaves_the_other_alone(ray_cluster):
    """`ray stop` stops every Ray process it can see; each node has its own PID
    namespace, so stopping node1's Ray (as the runbooks do before an env change)
    leaves node0's untouched. Runs last in this module; rejoins node1 after."""
    head, worker = ray_cluster.nodes
    raylets = {n.name: ray_cluster.exec(n, ["pgrep", "-x", "raylet"]).stdout.split() for n in ray_cluster.nodes}
    assert len(raylets["node0"]) == 1 and len(raylets["node1"]) == 1  # each node sees only its own
    got = in_container(ray_cluster, worker, CONTAINER, "ray stop")
    assert got.returncode == 0, got.stderr
    assert ray_cluster.exec(worker, ["pgrep", "-x", "raylet"]).stdout.split() == []
    assert ray_cluster.exec(head, ["pgrep", "-x", "raylet"]).stdout.split() == raylets["node0"]
    got = in_container(ray_cluster, worker, CONTAINER,
                       f"ray start --address={head.address}:6379 --node-ip-address={worker.address}")
    assert got.returncode == 0, got.stdout + got.stderr
