"""ascend-inference:host on the emulated cluster: the provisioning steps run
for real over SSH (stand-in `.run` installers from emulator/runpackages.py,
the node's `reboot` and `systemctl` stand-ins), a second `up` does nothing,
and each host fault (an old driver or firmware, an install waiting for a
reboot, docker missing or stopped) stops the rollout at the node's preflight
with one line naming node, what was found and what the stack expects, before
anything later ran."""
from __future__ import annotations

import json
import re
import time

import pytest

from emulator import runpackages
from emulator.nodefs import NodeRoot, driver_version_info, firmware_version_info
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-mindie"  # runbook 001: expects driver 24.1.rc3, firmware 7.5.0.1.129
DRIVER_RUN = "/root/packages/Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run"
FIRMWARE_RUN = "/root/packages/Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run"
RUNTIME_RUN = "/root/packages/Ascend-docker-runtime_6.0.0_linux-aarch64.run"
# What must not have started when a host fault stops the rollout: the gate
# that reads every node's checked facts, and all that waits for it. (Steps
# that wait only for their node's preflight command, the env file and the
# container-name check, may have run; the env file is removed by destroy.)
LATER = {"cluster-verified", "node0-rank-table", "node1-rank-table", "node0-container", "node1-container",
         "node0-serve", "node1-serve", "serving-ready", "smoke-test-request"}

ssh = node_ssh


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "host-software", prefix="pthost", subnet=231) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack's one project and state for the module: each test rolls out (with its
    own changes; `up` reverts the changes a later call leaves out) and destroys."""
    return PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("host-software"), log=print)


@pytest.fixture
def old_host(cluster):
    """Both nodes with runbook 001's "before" state: an older driver and
    firmware installed and active. Restored afterwards (files and facts)."""
    saved = {}
    for node in cluster.nodes:
        root = NodeRoot(node.holder_pid)
        paths = ["/usr/local/Ascend/driver/version.info", "/usr/local/Ascend/firmware/version.info",
                 "/run/ascemu/node.json"]
        saved[node.name] = {p: root.path(p).read_bytes() for p in paths}
        set_versions(cluster, node.name, "23.0.3", "7.1.0.11.220")
    yield
    for node in cluster.nodes:
        root = NodeRoot(node.holder_pid)
        for path, data in saved[node.name].items():
            root.write_if_changed(path, data)
        ssh(cluster, node.name, "rm -rf /root/packages /var/lib/ascend-inference /run/ascemu/installs.log")
        cluster.clear_faults(node.name)


def set_versions(cluster, node: str, driver: str, firmware: str) -> None:
    """Installed (version.info) and active (what npu-smi reports) alike."""
    root = NodeRoot(cluster.node(node).holder_pid)
    root.write_if_changed("/usr/local/Ascend/driver/version.info", driver_version_info(driver).encode())
    root.write_if_changed("/usr/local/Ascend/firmware/version.info", firmware_version_info(firmware, driver).encode())
    facts = json.loads(root.path("/run/ascemu/node.json").read_text())
    facts.update(driver_version=driver, firmware_version=firmware)
    root.write_if_changed("/run/ascemu/node.json", (json.dumps(facts, indent=2) + "\n").encode())


def installs(cluster, node: str) -> list[str]:
    """The stand-in installers' runs on a node: "<name> <args>" per run."""
    text = ssh(cluster, node, "cat /run/ascemu/installs.log 2>/dev/null || true")
    return [line.split(" ", 1)[1] for line in text.splitlines()]


def first_line(error: str | None) -> str:
    assert error is not None, "the rollout did not fail"
    return error.splitlines()[0]


def later_steps(report) -> set[str]:
    return {a.resource for a in report.actions} & LATER


def test_upgrade_needs_a_reboot_then_serves_and_a_second_up_does_nothing(cluster, old_host, rollout):
    for node in cluster.nodes:
        runpackages.place(node.holder_pid, DRIVER_RUN, runpackages.driver_package("24.1.rc3"))
        runpackages.place(node.holder_pid, FIRMWARE_RUN, runpackages.firmware_package("7.5.0.1.129"))
        runpackages.place(node.holder_pid, RUNTIME_RUN, runpackages.docker_runtime_package())
        # Runbook 001 §4.2: "owner not right /usr/bin/runc 1000".
        ssh(cluster, node.name, "chown 1000:1000 /usr/bin/runc")
    changes = [f"host.packages.driver={DRIVER_RUN}", f"host.packages.firmware={FIRMWARE_RUN}",
               f"host.packages.docker_runtime={RUNTIME_RUN}", "host.fix_runc_owner=true"]
    try:
        # 1. Installed, but not active: the preflight says so, nothing later runs.
        report = rollout.up(changes)
        assert report.error is not None
        # The first node whose facts are read stops the rollout (both have the same fact).
        assert re.fullmatch(
            r"node node[01]: reboot: driver 24\.1\.rc3, firmware 7\.5\.0\.1\.129 installed, reboot required "
            r"before they are active \(fix: set host\.allow_reboot or reboot by hand, then pulumi up\)",
            first_line(report.error)), report.error
        assert not later_steps(report), later_steps(report)
        for node in cluster.nodes:
            # Runbook 001's order and flags: the driver upgraded, then the firmware --full
            # (the docker runtime is installed alongside, in parallel).
            ran = installs(cluster, node.name)
            assert [r for r in ran if "-hdk-" in r] == [
                "Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run --upgrade --quiet",
                "Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run --full --quiet"]
            assert [r for r in ran if "-hdk-" not in r] == [
                "Ascend-docker-runtime_6.0.0_linux-aarch64.run --install --quiet"]
            assert ssh(cluster, node.name, "stat -L -c %U:%G /usr/bin/runc").strip() == "root:root"
            assert '"ascend"' in ssh(cluster, node.name, "docker info --format '{{json .Runtimes}}'")
            # Not active before the reboot: npu-smi still reports the old driver.
            assert "23.0.3" in ssh(cluster, node.name, "npu-smi info | head -n 2")

        # 2. Still not rebooted: the same line, and nothing is installed again.
        report = rollout.up(changes)
        assert re.match(r"node node[01]: reboot: driver 24\.1\.rc3, firmware 7\.5\.0\.1\.129 installed",
                        first_line(report.error)), report.error
        assert len(installs(cluster, "node1")) == 3

        # 3. Rebooted by hand: the rollout goes through to the smoke test.
        for node in cluster.nodes:
            ssh(cluster, node.name, "reboot")
            assert "24.1.rc3" in ssh(cluster, node.name, "npu-smi info | head -n 2")
        report = rollout.up(changes)
        assert report.error is None, report.error
        assert "smoke-test-request" in report.did("create")

        # 4. A second up: the host steps are unchanged, so they do not run
        # (the preflight, at every up, finds the versions in place): no
        # installer runs, nothing is created, updated or replaced.
        report = rollout.up(changes, "--expect-no-changes")
        assert report.error is None, report.output[-3000:]
        assert report.changed() == {}
        for node in cluster.nodes:
            assert len(installs(cluster, node.name)) == 3
        host_steps = {a.resource: a.kind for a in report.actions
                      if a.resource.endswith(("install-driver", "install-firmware", "install-docker-runtime",
                                              "fix-runc-owner"))}
        assert len(host_steps) == 8 and set(host_steps.values()) == {"same"}, host_steps
        assert not report.did("replace") and not report.did("create")

        # 5. node1's driver rolled back by hand since: the host steps run when
        # created or changed (not at every up: docs/design.md, "Node checks are
        # invokes"), so the next up installs nothing and the preflight, which
        # runs at every up, stops it with the node's one line, before anything
        # after the preflight.
        set_versions(cluster, "node1", "23.0.3", "7.5.0.1.129")
        report = rollout.up(changes)
        assert first_line(report.error) == (
            "node node1: driver version: 23.0.3 found, the stack expects 24.1.rc3 (ascend-inference:host.driver) "
            "(fix: install it with host.packages.driver, or change host.driver)"), report.error
        assert len(installs(cluster, "node1")) == 3
        assert not later_steps(report), later_steps(report)
    finally:
        destroyed = rollout.destroy()
    # The undo keeps what was installed (node0's: node1's was rolled back by hand in 5).
    assert destroyed.error is None, destroyed.error
    assert "Version=24.1.rc3" in ssh(cluster, "node0", "cat /usr/local/Ascend/driver/version.info")


def test_allow_reboot_reboots_the_node_and_the_next_up_goes_on(cluster, old_host, rollout):
    set_versions(cluster, "node0", "24.1.rc3", "7.5.0.1.129")  # only node1's driver is behind
    set_versions(cluster, "node1", "23.0.3", "7.5.0.1.129")
    runpackages.place(cluster.node("node1").holder_pid, DRIVER_RUN, runpackages.driver_package("24.1.rc3"))
    changes = [f"host.packages.driver={DRIVER_RUN}", "host.allow_reboot=true"]
    boot_before = ssh(cluster, "node1", "cat /proc/sys/kernel/random/boot_id")
    try:
        report = rollout.up(changes)
        assert rollout.failed_steps()[:1] == ["node1-host-reboot"], rollout.failed_steps()
        assert report.failed_step_output()[0] == (
            "node node1: driver 24.1.rc3 installed, rebooting the node now (host.allow_reboot) "
            "(fix: run pulumi up again once it is back)"), report.error
        # node1's preflight (an invoke after the reboot step) did not run.
        assert "node1-preflight" not in report.checks
        assert not later_steps(report)
        # The step left the reboot to a detached `sleep 5; reboot`: wait for it to end (bounded by that work).
        # ('[s]leep': the pattern does not match the shell that runs pgrep.)
        while ssh(cluster, "node1", "pgrep -f '[s]leep 5; reboot' || true").strip():
            time.sleep(1)
        assert ssh(cluster, "node1", "cat /proc/sys/kernel/random/boot_id") != boot_before, "not rebooted"
        report = rollout.up(changes)
        assert report.error is None, report.error
        assert installs(cluster, "node1") == ["Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run --upgrade --quiet"]
        assert installs(cluster, "node0") == [], "node0 had the driver: its step ran nothing"
    finally:
        rollout.destroy()


def test_a_package_of_another_version_is_named(cluster, old_host, rollout):
    runpackages.place(cluster.node("node1").holder_pid, DRIVER_RUN, runpackages.driver_package("24.1.0"))
    set_versions(cluster, "node0", "24.1.rc3", "7.5.0.1.129")
    set_versions(cluster, "node1", "23.0.3", "7.5.0.1.129")
    try:
        report = rollout.up([f"host.packages.driver={DRIVER_RUN}"])
        failed = rollout.failed_steps()
    finally:
        rollout.destroy()
    assert failed[:1] == ["node1-install-driver"], (failed, report.error)
    # The step printed the installer's own progress first; its line naming node,
    # found and expected is the first that names a node.
    named = [line for line in report.failed_step_output() if line.startswith("node ")]
    assert named and named[0].startswith(
        "node node1: driver " + DRIVER_RUN + " --upgrade finished, but /usr/local/Ascend/driver/version.info "
        "says 24.1.0, stack expects 24.1.rc3"), report.error
    assert not later_steps(report)


def test_a_node_without_a_driver_gets_a_full_install(cluster, old_host, rollout):
    set_versions(cluster, "node0", "24.1.rc3", "7.5.0.1.129")
    set_versions(cluster, "node1", "24.1.rc3", "7.5.0.1.129")
    NodeRoot(cluster.node("node1").holder_pid).remove("/usr/local/Ascend/driver/version.info")
    runpackages.place(cluster.node("node1").holder_pid, DRIVER_RUN, runpackages.driver_package("24.1.rc3"))
    try:
        report = rollout.up([f"host.packages.driver={DRIVER_RUN}"])
    finally:
        rollout.destroy()
    # --upgrade needs an installed driver; the step takes --full where there is none.
    assert installs(cluster, "node1") == ["Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run --full --quiet"]
    assert first_line(report.error).startswith("node node1: reboot: driver 24.1.rc3 installed"), report.error
    assert not later_steps(report)


HOST_FAULTS = [
    # (what is wrong on node1, the line the rollout stops with)
    ("driver", "node node1: driver version: 23.0.3 found, the stack expects 24.1.rc3 (ascend-inference:host.driver) "
               "(fix: install it with host.packages.driver, or change host.driver)"),
    ("firmware", "node node1: firmware version: 7.1.0.11.220 found, the stack expects 7.5.0.1.129 "
                 "(ascend-inference:host.firmware) (fix: install it with host.packages.firmware, or change "
                 "host.firmware)"),
    ("docker-missing", "node node1: docker: not installed, the stack runs its engine in docker (fix: install docker"),
    ("docker-stopped", "node node1: docker: installed, but its daemon is not running (Cannot connect to the Docker "
                       "daemon at unix:///var/run/docker.sock. Is the docker daemon running?) (fix: `systemctl "
                       "start docker`"),
]


@pytest.mark.parametrize("fault,line", HOST_FAULTS, ids=[f for f, _ in HOST_FAULTS])
def test_host_fault_stops_the_rollout_at_preflight(cluster, old_host, rollout, fault, line):
    set_versions(cluster, "node0", "24.1.rc3", "7.5.0.1.129")
    if fault == "driver":
        set_versions(cluster, "node1", "23.0.3", "7.5.0.1.129")
    elif fault == "firmware":
        set_versions(cluster, "node1", "24.1.rc3", "7.1.0.11.220")
    else:
        set_versions(cluster, "node1", "24.1.rc3", "7.5.0.1.129")
        cluster.set_fault("node1", docker=fault.split("-")[1])
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
        rollout.destroy()
    # The preflight's judgement (a NodeFactError): its one line first.
    assert first_line(report.error).startswith(line), report.error
    assert not later_steps(report), later_steps(report)
