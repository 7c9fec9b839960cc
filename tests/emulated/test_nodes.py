"""Each emulated node behaves like an Ascend server reached over ssh: its own
hostname, the Ascend host files, a docker engine that runs the runbooks'
containers, and Ray across nodes counting the fake NPUs."""

import hashlib
import json
import re
import shlex
import subprocess

import pytest

from emulator import image

from .conftest import DEVICES, in_container, runbook_run_argv, ssh_ok

pytestmark = pytest.mark.emulated


def test_ssh_reaches_each_node_with_its_own_hostname(cluster):
    seen = []
    for node in cluster.nodes:
        out = ssh_ok(cluster, node, "hostname; cat /etc/hostname; ip -o -4 addr show dev eth0 | awk '{print $4}'")
        hostname, etc_hostname, *addresses = out.split()
        assert hostname == etc_hostname == node.hostname
        assert f"{node.address}/24" in addresses
        seen.append(hostname)
    assert seen == ["ascend-node0", "ascend-node1"]


def test_ssh_uses_the_per_run_key_only(cluster):
    node = cluster.nodes[0]
    # Without the key (and with no agent) the node refuses: key auth only.
    got = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                          "-o", "IdentityFile=/dev/null", f"root@{node.address}", "true"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert got.returncode == 255 and "Permission denied" in got.stderr
    # With it, host keys are pinned: StrictHostKeyChecking=yes against the run's known_hosts.
    assert ssh_ok(cluster, node, "echo ok").strip() == "ok"


def test_nodes_have_the_ascend_host_files(cluster):
    layout = cluster.layout
    digests = set()
    for node in cluster.nodes:
        out = ssh_ok(cluster, node, "stat -c '%F %t:%T %n' /dev/davinci[0-7] /dev/davinci_manager "
                                    "/dev/devmm_svm /dev/hisi_hdc")
        lines = out.splitlines()
        assert len(lines) == 11 and all(line.startswith("character special file 1:3 ") for line in lines)
        paths = [*layout.npu_smi, layout.hccn_tool, f"{layout.driver_dir}/version.info",
                 f"{layout.firmware_dir}/version.info", layout.dcmi_dir, layout.hccn_conf,
                 layout.ascend_install_info, layout.vnpu_cfg, *layout.npu_log_dirs]
        ssh_ok(cluster, node, "ls -d " + " ".join(paths))
        version = ssh_ok(cluster, node, f"head -1 {layout.driver_dir}/version.info").strip()
        assert version == f"Version={cluster.hardware.driver_version}"
        conf = ssh_ok(cluster, node, f"cat {layout.hccn_conf}")
        for dev, ip in enumerate(node.device_ips):
            assert f"address_{dev}={ip}\n" in conf
            assert f"netdetect_{dev}=198.19.255.254\n" in conf
        model = layout.model_dirs[0]
        listing = ssh_ok(cluster, node, f"cd {model} && sha256sum $(ls)")
        digests.add(hashlib.sha256(listing.encode()).hexdigest())
        assert "config.json" in listing and "model-00001-of-00002.safetensors" in listing
    assert len(digests) == 1, "the model fixture must be identical on every node"


def test_node_files_never_reach_the_host(cluster):
    import os
    assert not os.path.exists("/etc/hccn.conf")
    assert not os.path.exists("/usr/local/Ascend")
    assert not os.path.exists("/dev/davinci0")
    # and one node's writes stay on that node
    ssh_ok(cluster, "node0", "echo from-node0 > /root/ascemu-test-note")
    assert "No such file" in cluster.ssh("node1", "cat /root/ascemu-test-note").stderr
    assert not os.path.exists("/root/ascemu-test-note")
    ssh_ok(cluster, "node0", "rm /root/ascemu-test-note")


def test_docker_run_over_ssh_with_the_runbook_devices_and_mounts(cluster):
    for node in cluster.nodes:
        argv = runbook_run_argv("ascemu-test-run", ["sleep", "infinity"])
        ssh_ok(cluster, node, shlex.join(argv))
        try:
            script = ("hostname; ls /dev | grep -c '^davinci[0-9]'; npu-smi info | grep -c 910B3; "
                      "/usr/local/Ascend/driver/tools/hccn_tool -i 0 -ip -g; ip -o -4 addr show dev eth0 | wc -l; "
                      "python3 -c 'import ray; print(ray.__version__)'")
            got = in_container(cluster, node, "ascemu-test-run", script)
            assert got.returncode == 0, got.stderr
            out = got.stdout.split()
            assert out[0] == node.hostname  # host network: the node's hostname
            assert out[1] == "8" and out[2] == "8"
            assert f"ipaddr:{node.device_ips[0]}" in out
            inspect = json.loads(ssh_ok(cluster, node, "docker inspect ascemu-test-run"))[0]["HostConfig"]
            assert inspect["NetworkMode"] == "host" and inspect["IpcMode"] == "host"
            assert [d["PathOnHost"] for d in inspect["Devices"]] == [a.split("=", 1)[1] for a in DEVICES]
            assert "CAP_SYS_RESOURCE" in inspect["CapDrop"] and inspect["Privileged"] is False
        finally:
            cluster.ssh(node, "docker rm -f ascemu-test-run")


def test_privileged_is_mapped_because_this_sandbox_cannot_grant_it(cluster):
    """--privileged needs CAP_SYS_RESOURCE in the bounding set; where it is
    missing (this sandbox) docker refuses it and the substitute works."""
    bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", open("/proc/self/status").read()).group(1), 16)
    has_sys_resource = bool(bounding & (1 << 24))
    base = image.base_docker_args()
    got = cluster.ssh("node0", shlex.join(["docker", "run", "--rm", "--privileged", *base, image.IMAGE, "true"]))
    if has_sys_resource:
        assert got.returncode == 0, got.stderr
    else:
        assert got.returncode != 0 and "apply caps" in got.stderr
    substitute = image.privileged_substitute()["docker_run_args"]
    ssh_ok(cluster, "node0", shlex.join(["docker", "run", "--rm", *substitute, *base, image.IMAGE, "true"]))


def test_docker_dial_stdio_over_ssh_as_pulumi_docker_does(cluster):
    """pulumi_docker's Provider(host="ssh://root@node", ssh_opts=...) runs
    `ssh <opts> root@node docker system dial-stdio` and speaks the engine API."""
    node = cluster.nodes[1]
    request = "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    got = subprocess.run(["ssh", *cluster.ssh_opts(), node.ssh_target, "docker", "system", "dial-stdio"],
                         input=request, capture_output=True, text=True, timeout=30)
    assert got.stdout.startswith("HTTP/1.1 200") and got.stdout.rstrip().endswith("OK"), got
    # and the docker CLI with DOCKER_HOST=ssh://... (the emulator's ssh wrapper supplies the key)
    got = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         env=cluster.docker_env(node), capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert image.IMAGE in got.stdout.split()


def test_sftp_copy_and_parallel_sessions(cluster, tmp_path):
    """pulumi_command's CopyToRemote uses SFTP; a rollout opens many sessions at once."""
    src = tmp_path / "rank_table.json"
    src.write_text('{"status": "completed"}\n')
    got = subprocess.run(["sftp", "-F", str(cluster.ssh_config_path), "-b", "-", "node1"],
                         input=f"put {src} /root/ascemu-sftp-test.json\n", capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stderr
    copied = ssh_ok(cluster, "node1", "cat /root/ascemu-sftp-test.json; rm /root/ascemu-sftp-test.json")
    assert copied == src.read_text()
    procs = [subprocess.Popen(cluster.ssh_args(cluster.nodes[i % 2]) + ["sleep 1; hostname"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(24)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 24, outputs
    assert sorted(out.strip() for out, _ in outputs) == ["ascend-node0"] * 12 + ["ascend-node1"] * 12
