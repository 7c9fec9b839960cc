"""ascend-inference:host, pure tier: the keys and their defaults, bad values
refused by `validate` (file, key, fix), the preflight's host-software
sections parsed from the rendered script's own output format, and each rule
of `check_host_software` with the line it prints. The scripts are run on the
emulated cluster (tests/emulated/test_host_software.py)."""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.facts import check_host_software, parse_preflight, raise_first
from ascend_inference.render import render_node
from ascend_inference.spec import Host
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.facts import synthetic_preflight
from ascendctl.preview.stack import loaded_with_config
from tests.conftest import NS, run_cli
from tests.test_spec_errors import Case, prepare

pytestmark = pytest.mark.pure

DRIVER_RUN = "/root/Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run"
FIRMWARE_RUN = "/root/Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run"
RUNTIME_RUN = "/root/Ascend-docker-runtime_6.0.0_linux-aarch64.run"


def with_changes(stack: str, *changes: str):
    base = load_stack(stack)
    config = base.raw_config
    for change in changes:
        config = apply_change(config, change, base.file)
    return loaded_with_config(base, config)


# --- keys and defaults ---------------------------------------------------------

def test_host_defaults_check_and_install_nothing():
    host = Host()
    assert (host.driver, host.firmware, host.cann) == (None, None, None)
    assert (host.packages.driver, host.packages.firmware, host.packages.docker_runtime) == (None, None, None)
    assert host.fix_runc_owner is False and host.allow_reboot is False
    for stack in ("tp16-vllm-mindspore", "tp16-lmdeploy", "dp4-ep32-gpustack", "tp8-pp2-300iduo"):
        assert load_stack(stack).spec.host == Host(), stack


def test_runbook_001_stack_expects_the_runbooks_driver_and_firmware():
    # 001 §2.1: "如果驱动版本是24.1.rc3, 以下安装更新驱动步骤可省略", firmware 7.5.0.1.129.
    host = load_stack("tp16-mindie").spec.host
    assert (host.driver, host.firmware) == ("24.1.rc3", "7.5.0.1.129")
    # Its CANN 8.0.T63 is the image's (容器内 /usr/local/Ascend), not the host's.
    assert host.cann is None
    # Checking is not installing: no package, so no provisioning step.
    scripts = render_node(load_stack("tp16-mindie"), 0).scripts
    assert scripts.install_driver is None and scripts.install_firmware is None and scripts.host_reboot is None


def test_steps_are_rendered_only_when_asked_for():
    loaded = with_changes("tp16-mindie", f"host.packages.driver={DRIVER_RUN}",
                          f"host.packages.firmware={FIRMWARE_RUN}", f"host.packages.docker_runtime={RUNTIME_RUN}",
                          "host.fix_runc_owner=true")
    scripts = render_node(loaded, 1).scripts
    driver, firmware = scripts.install_driver, scripts.install_firmware
    assert driver is not None and firmware is not None
    assert scripts.install_docker_runtime is not None and scripts.fix_runc_owner is not None
    assert scripts.host_reboot is None, "host.allow_reboot is false"
    # The package, the version gate and the runbook's flags.
    assert DRIVER_RUN in driver.text and '[ "$have" = 24.1.rc3 ]' in driver.text and "mode=--upgrade" in driver.text
    assert FIRMWARE_RUN in firmware.text and '[ "$have" = 7.5.0.1.129 ]' in firmware.text
    assert "mode=--full" in firmware.text
    assert "/usr/local/Ascend/driver/version.info" in driver.text
    assert "/usr/local/Ascend/firmware/version.info" in firmware.text
    # Host scripts, and listed before the preflight (the order they run in).
    names = [s.name for s in scripts.present()]
    assert names.index("install-driver") < names.index("install-firmware") < names.index("preflight")
    assert {s.place for s in scripts.present() if s.name.startswith(("install-", "fix-runc"))} == {"host"}
    rebooting = with_changes("tp16-mindie", f"host.packages.driver={DRIVER_RUN}", "host.allow_reboot=true")
    assert render_node(rebooting, 0).scripts.host_reboot is not None
    # allow_reboot without a package has nothing to reboot for.
    assert render_node(with_changes("tp16-mindie", "host.allow_reboot=true"), 0).scripts.host_reboot is None


def test_rendered_scripts_are_valid_bash():
    loaded = with_changes("tp16-mindie", f"host.packages.driver={DRIVER_RUN}", f"host.packages.firmware={FIRMWARE_RUN}",
                          f"host.packages.docker_runtime={RUNTIME_RUN}", "host.fix_runc_owner=true",
                          "host.allow_reboot=true")
    for script in render_node(loaded, 0).scripts.present():
        done = subprocess.run(["bash", "-n"], input=script.text, capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


# --- bad values: validate refuses them with file, key and fix -----------------------

def host(**values):
    return lambda c: c.__setitem__(NS + "host", values)


HOST_CASES = [
    Case("host-unknown-key", NS + "host", ("drivr", "did you mean 'driver'"), mutate=host(drivr="24.1.rc3")),
    Case("host-driver-not-a-version", NS + "host.driver", ("24.1 rc3",), mutate=host(driver="24.1 rc3")),
    Case("host-package-relative-path", NS + "host.packages.driver", ("not an absolute path",),
         mutate=host(driver="24.1.rc3", packages={"driver": "driver.run"})),
    Case("host-driver-package-without-version", NS + "host.packages.driver", ("host.driver", "24.1.rc3"),
         mutate=host(packages={"driver": DRIVER_RUN})),
    Case("host-firmware-package-without-version", NS + "host.packages.firmware", ("host.firmware", "7.5.0.1.129"),
         mutate=host(driver="24.1.rc3", packages={"firmware": FIRMWARE_RUN})),
    Case("host-allow-reboot-not-a-bool", NS + "host.allow_reboot", ("bool",), mutate=host(allow_reboot="sometimes")),
    Case("host-unknown-package", NS + "host.packages", ("cann",),
         mutate=host(packages={"cann": "/root/Ascend-cann-toolkit.run"})),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-host")
    prepared = {case.id: prepare(case, directory) for case in HOST_CASES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(prepared, pool.map(lambda c: run_cli("validate", "--stack", prepared[c.id][0]), HOST_CASES),
                        strict=True))
    return {cid: (prepared[cid][1], runs[cid]) for cid in prepared}


@pytest.mark.parametrize("case", HOST_CASES, ids=[c.id for c in HOST_CASES])
def test_bad_host_key_is_refused_clearly(refused, case):
    file, result = refused[case.id]
    shown = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 3 and "Traceback" not in result.stdout + result.stderr, shown
    lines = [line for line in result.stderr.splitlines() if file in line and case.key in line and "(fix: " in line]
    assert lines, shown
    for word in case.words:
        assert any(word in line for line in lines), f"{word!r} missing\n{shown}"


def test_a_host_section_typed_as_pulumi_config_set_types_it():
    # `pulumi config set --path 'ascend-inference:host.allow_reboot' true` stores a boolean.
    assert with_changes("tp16-mindie", "host.allow_reboot=true").spec.host.allow_reboot is True
    assert with_changes("tp16-mindie", "host.cann=8.0.RC3").spec.host.cann == "8.0.RC3"


# --- preflight facts and their rules ----------------------------------------------

def preflight_output(stack: str = "tp16-mindie", node: str = "node1", **replace: str) -> str:
    """A healthy node's preflight output (the real tools' formats), with
    sections replaced: {"docker": "missing", "driver-version": "Version=23.0.3"}."""
    text = synthetic_preflight(load_stack(stack), node)
    for name, body in replace.items():
        head, marker, tail = text.partition(f"### {name.replace('_', '-')}\n")
        assert marker, name
        rest = tail.split("### ", 1)[1]
        text = f"{head}{marker}{body}\n### {rest}"
    return text


def check(text: str, **expected: str | None) -> list[str]:
    facts = parse_preflight("node1", text, 8)
    return [str(e) for e in check_host_software(facts, expected=expected)]


def test_the_preflight_script_prints_every_section_the_parser_reads():
    text = render_node(load_stack("tp16-mindie"), 0).scripts.preflight.text
    for name in ("driver-version", "firmware-version", "cann-version", "docker", "reboot-pending"):
        assert f"section {name}" in text, name
    assert "/proc/sys/kernel/random/boot_id" in text


def test_healthy_node_matches_the_runbook_versions():
    assert check(preflight_output(), driver="24.1.rc3", firmware="7.5.0.1.129", cann=None) == []
    facts = parse_preflight("node1", preflight_output(), 8)
    assert facts.docker is not None and facts.docker.startswith("running") and facts.reboot_pending == []


@pytest.mark.parametrize("version_file,found", [("Version=23.0.3\npackage_version=23.0.3", "23.0.3"),
                                                ("Version=25.0.rc1", "25.0.rc1")], ids=["older", "newer"])
def test_another_driver_names_node_found_expected_and_key(version_file, found):
    # An older version and a newer one than the stack expects are named alike.
    lines = check(preflight_output(driver_version=version_file), driver="24.1.rc3")
    assert lines == [f"node node1: driver version: {found} found, the stack expects 24.1.rc3 "
                     "(ascend-inference:host.driver) (fix: install it with host.packages.driver, or change "
                     "host.driver)"]


def test_firmware_and_cann_mismatch_and_missing_file():
    lines = check(preflight_output(firmware_version="Version=7.1.0.11.220", cann_version="missing"),
                  firmware="7.5.0.1.129", cann="8.0.RC3")
    assert lines[0].startswith("node node1: firmware version: 7.1.0.11.220 found, the stack expects 7.5.0.1.129")
    assert lines[1].startswith("node node1: CANN version: cannot be read (")
    assert "the stack expects 8.0.RC3 (ascend-inference:host.cann)" in lines[1]
    # Not declared: not checked against the stack.
    assert check(preflight_output(firmware_version="Version=7.1.0.11.220")) == []


def test_a_version_not_checked_does_not_stop_the_check_of_the_next():
    lines = check(preflight_output(firmware_version="Version=7.1.0.11.220"), driver=None, firmware="7.5.0.1.129")
    assert [line.split(" (")[0] for line in lines] == [
        "node node1: firmware version: 7.1.0.11.220 found, the stack expects 7.5.0.1.129"]


def test_docker_missing_and_not_running_are_one_line_each_with_the_fix():
    [missing] = check(preflight_output(docker="missing"))
    assert missing.startswith("node node1: docker: not installed")
    assert "yum install docker-ce" in missing and "systemctl start docker" in missing
    stopped = ("not running: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
               "Is the docker daemon running?")
    [line] = check(preflight_output(docker=stopped))
    assert line.startswith("node node1: docker: installed, but its daemon is not running (Cannot connect")
    assert "(fix: `systemctl start docker`" in line
    # An older preflight output without the section is not judged.
    assert parse_preflight("node1", "### hostname\nx\n### end\n", 8).docker is None


def test_one_install_waiting_for_a_reboot_is_named_in_the_singular():
    text = preflight_output(reboot_pending="driver 24.1.rc3", driver_version="Version=24.1.rc3")
    assert check(text, driver="24.1.rc3") == [
        "node node1: reboot: driver 24.1.rc3 installed, reboot required before it is active "
        "(fix: set host.allow_reboot or reboot by hand, then pulumi up)"]


def test_an_install_waiting_for_a_reboot_is_named_not_its_versions():
    text = preflight_output(reboot_pending="driver 24.1.rc3\nfirmware 7.5.0.1.129",
                            driver_version="Version=24.1.rc3")
    lines = check(text, driver="24.1.rc3", firmware="9.9.9")
    assert lines == ["node node1: reboot: driver 24.1.rc3, firmware 7.5.0.1.129 installed, reboot required before "
                     "they are active (fix: set host.allow_reboot or reboot by hand, then pulumi up)"]
    with pytest.raises(NodeFactError) as info:
        raise_first(check_host_software(parse_preflight("node1", text, 8), expected={}))
    assert (info.value.node, info.value.fact) == ("node1", "reboot")
