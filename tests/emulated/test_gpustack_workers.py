"""Real GPUStack 2.x workers on the emulated cluster (issue 12, part 4: the emulator side).

A real GPUStack server (PyPI, on Debian's PostgreSQL) runs as a process of
node0; real workers run on the other nodes as containers with the node's
docker socket, as runbook 002 and GPUStack's docs run them. They register
over the emulated network and report the NPUs they find through DCMI, which
on these nodes is the emulator's stand-in libdcmi.so (emulator/gpustack.py,
emulator/standins/libdcmi.c). Started by hand here, not through the Pulumi
program (its GPUStack steps are tested elsewhere).

Checked through the server's API, as an operator would: /v2/workers and
/v2/gpu-devices. A node without the DCMI library and a node that cannot reach
the server show what GPUStack itself does with them.

Needs what emulator/install-gpustack.sh installs (CI runs it as root); when
something is missing the test FAILS with what to install, never skips.
"""
from __future__ import annotations

import json
import time

import pytest

from emulator import gpustack
from emulator.nodefs import NodeRoot
from tests.emulated.conftest import own_cluster

pytestmark = pytest.mark.emulated

# Slow: GPUStack's server takes ~60 s to answer /healthz here, a worker ~60-120 s to register
# (2 cores shared with other jobs).
REGISTER_TIMEOUT_S = 420


def require_gpustack() -> None:
    missing = gpustack.missing_prerequisites()
    if missing:
        pytest.fail("GPUStack workers cannot run on the emulated nodes; missing: " + "; ".join(missing)
                    + f". Install with: {gpustack.INSTALL}", pytrace=False)


class Api:
    """The server's REST API, called with curl from inside node0 (the server's own machine)."""

    def __init__(self, gs: gpustack.GpustackOnCluster):
        self.gs = gs
        self.jar = f"{gpustack.STATE}/test-cookies"
        password = gs.read_server_file("initial_admin_password")
        got = gs.curl(gs.server_node, ["-sS", "-c", self.jar, "-o", "/dev/null", "-w", "%{http_code}",
                                       "-X", "POST", "--data-urlencode", "username=admin",
                                       "--data-urlencode", "password@-", f"{gs.server_url}/auth/login"],
                      stdin=password)
        assert got.stdout == "200", f"login: {got.stdout} {got.stderr}"

    def call(self, method: str, path: str, body: dict | None = None):
        args = ["-sS", "-b", self.jar, "-X", method, "-w", "\n%{http_code}", f"{self.gs.server_url}{path}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        got = self.gs.curl(self.gs.server_node, args, stdin=json.dumps(body) if body is not None else None)
        text, _, code = got.stdout.rpartition("\n")
        assert code.startswith("2"), f"{method} {path}: HTTP {code} {text[:500]} {got.stderr}"
        return json.loads(text) if text.strip() else None

    def try_call(self, method: str, path: str, body: dict):
        """The answer, or None while the server answers an error (e.g. a route not made yet)."""
        got = self.gs.curl(self.gs.server_node, ["-sS", "-b", self.jar, "-X", method, "-w", "\n%{http_code}",
                                                 "-H", "Content-Type: application/json", "--data-binary", "@-",
                                                 f"{self.gs.server_url}{path}"], stdin=json.dumps(body))
        text, _, code = got.stdout.rpartition("\n")
        return json.loads(text) if code == "200" else None

    def get(self, path: str):
        return self.call("GET", path)

    def workers(self) -> dict[str, dict]:
        return {w["name"]: w for w in self.get("/v2/workers")["items"]}


@pytest.fixture(scope="module")
def setup():
    """node0: server; node1: a worker; node2: a worker on a node without libdcmi.so;
    node3: a worker whose node cannot reach node0."""
    require_gpustack()
    with own_cluster(4, "gpustack", prefix="ptgstk", subnet=244) as cluster:
        gs = gpustack.GpustackOnCluster(cluster, cluster.nodes[0])
        try:
            gs.start_database()
            gs.start_server()
            root = NodeRoot(cluster.nodes[2].holder_pid)
            for path in gpustack.library_paths(cluster.layout):
                assert root.remove(path), path
            cluster.set_fault("node3", unreachable=[cluster.nodes[0].address])
            for node in cluster.nodes[1:]:
                gpustack.load_worker_images(cluster, node, [gpustack.MINDIE_RUNNER_IMAGE])
            workers = {node.name: gs.start_worker_container(node) for node in cluster.nodes[1:]}
            api = Api(gs)
            yield cluster, gs, api, workers
        finally:
            for proc in list(gs.processes):
                print(gs.log_tail(proc, 60))  # shown by pytest only when a test failed
            gs.stop_all()


def wait_for(predicate, timeout_s: float, what: str, explain):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(3)
    pytest.fail(f"{what} not within {timeout_s} s: {explain()}", pytrace=False)


def test_workers_register_ready_with_8_npus_each(setup):
    cluster, gs, api, workers = setup
    good, no_dcmi = cluster.nodes[1], cluster.nodes[2]
    wait_for(lambda: all(api.workers().get(n.hostname, {}).get("state") == "ready" for n in (good, no_dcmi)),
             REGISTER_TIMEOUT_S, "workers ready",
             lambda: json.dumps({k: v.get("state") for k, v in api.workers().items()})
             + "".join(gs.log_tail(p) for p in gs.processes if p.container))
    worker = api.workers()[good.hostname]
    assert worker["ip"] == good.address
    npus = worker["status"]["gpu_devices"]
    assert [d["index"] for d in npus] == list(range(8))
    assert {d["vendor"] for d in npus} == {"ascend"}
    assert {d["name"] for d in npus} == {cluster.hardware.chip_name}
    assert {d["memory"]["total"] for d in npus} == {cluster.hardware.hbm_mb * 1024 * 1024}  # 64 GiB
    assert {d["driver_version"] for d in npus} == {cluster.hardware.driver_version}
    # The device IPs DCMI reports are the node's (hccn_tool -ip -g, /etc/hccn.conf).
    assert [d["network"]["inet"] for d in npus] == good.device_ips

    devices = api.get("/v2/gpu-devices")["items"]
    by_worker: dict[str, list[int]] = {}
    for d in devices:
        by_worker.setdefault(d["worker_name"], []).append(d["index"])
    assert sorted(by_worker[good.hostname]) == list(range(8))
    # Every NPU is one device cluster-wide: ids carry the worker's name.
    assert len({d["id"] for d in devices}) == len(devices)


def test_a_node_without_libdcmi_registers_without_npus(setup):
    """GPUStack does not refuse a node whose DCMI library is missing: the worker registers
    (CPU only) and reports no NPU, which is what an operator then sees."""
    cluster, gs, api, workers = setup
    no_dcmi = cluster.nodes[2]
    worker = wait_for(lambda: api.workers().get(no_dcmi.hostname), REGISTER_TIMEOUT_S,
                      f"worker {no_dcmi.hostname}", lambda: gs.log_tail(workers[no_dcmi.name]))
    assert worker["status"]["gpu_devices"] in (None, [])
    assert no_dcmi.hostname not in {d["worker_name"] for d in api.get("/v2/gpu-devices")["items"]}


def test_a_worker_that_cannot_reach_the_server_never_registers(setup):
    cluster, gs, api, workers = setup
    cut_off, good = cluster.nodes[3], cluster.nodes[1]
    # By the time the good worker is ready the cut-off one has had as long to register.
    wait_for(lambda: api.workers().get(good.hostname, {}).get("state") == "ready", REGISTER_TIMEOUT_S,
             "worker ready", lambda: json.dumps({k: v.get("state") for k, v in api.workers().items()}))
    assert cut_off.hostname not in api.workers()
    # What GPUStack 2.3.0's worker says about it (it retries, then shuts down).
    log = gs.log_tail(workers[cut_off.name], 200)
    assert f"Registering worker with name: {cut_off.hostname}" in log, log
    assert "Failed to register worker: All connection attempts failed" in log, log


MODEL = "deepseek-r1"


def test_a_model_deployed_through_the_api_runs_on_the_stand_in_engine_and_answers(setup):
    """POST /v2/models (backend MindIE, TP8 on one worker), then the instance reaches `running`
    with its backend container started by the worker through node1's docker socket, and a chat
    request through the server's OpenAI-compatible route is answered by the stand-in engine."""
    cluster, gs, api, workers = setup
    node = cluster.nodes[1]
    wait_for(lambda: api.workers().get(node.hostname, {}).get("state") == "ready", REGISTER_TIMEOUT_S,
             "worker ready", lambda: json.dumps({k: v.get("state") for k, v in api.workers().items()}))
    cluster_id = next(c["id"] for c in api.get("/v2/clusters")["items"] if c.get("is_default"))
    model = api.call("POST", "/v2/models", {
        "name": MODEL, "source": "local_path", "local_path": cluster.layout.model_dirs[0], "backend": "MindIE",
        "backend_parameters": ["--tensor-parallel-size=8", "--npu-memory-fraction=0.95"],
        "replicas": 1, "cluster_id": cluster_id, "worker_selector": {"worker-name": node.hostname},
        # The route /v1/chat/completions resolves a model name through (as the program's request has it).
        "enable_model_route": True})

    def instance():
        items = api.get(f"/v2/model-instances?model_id={model['id']}")["items"]
        if items and items[0]["state"] == "error":
            pytest.fail(f"instance failed: {items[0].get('state_message')}", pytrace=False)
        return items[0] if items and items[0]["state"] == "running" else None

    running = wait_for(instance, REGISTER_TIMEOUT_S, "model instance running",
                       lambda: json.dumps([(i["state"], i.get("state_message"))
                                           for i in api.get(f"/v2/model-instances?model_id={model['id']}")["items"]])
                       + gs.log_tail(workers[node.name]))
    assert running["worker_name"] == node.hostname
    assert sorted(running["gpu_indexes"]) == list(range(8))

    # The backend container: started by the worker on node1's dockerd, from the image GPUStack asked
    # for by name (the deployer creates it by the image's id), running the stand-in MindIE daemon.
    runner_id = node.exec(["docker", "image", "inspect", "-f", "{{.Id}}", gpustack.MINDIE_RUNNER_IMAGE]).stdout.strip()
    got = node.exec(["docker", "ps", "-q", "--filter", f"label=runtime.gpustack.ai/workload={running['name']}"])
    containers = {}
    for cid in got.stdout.split():
        image = node.exec(["docker", "inspect", "-f", "{{.Image}}", cid]).stdout.strip()
        containers[cid] = image
    serving = [cid for cid, image in containers.items() if image == runner_id]
    assert len(serving) == 1, (runner_id, containers)
    logs = node.exec(["docker", "logs", serving[0]])
    assert "emulator stand-in mindieservice_daemon" in logs.stdout + logs.stderr
    assert "Daemon start success!" in logs.stdout + logs.stderr

    request = {"model": MODEL, "messages": [{"role": "user", "content": "Mindspore is"}], "max_tokens": 16}
    answer = wait_for(lambda: api.try_call("POST", "/v1/chat/completions", request), 120, "a chat answer",
                      lambda: json.dumps(api.get("/v2/model-routes")))
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"]
