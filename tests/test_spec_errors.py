"""Bad input: every case is a small stack file (a real stack, loaded with yaml
and mutated, or broken text) run through `python -m ascendctl validate
--stack <path>`. Each must exit 3 with a line that names the stack file, the
key and a fix, and never print a traceback.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import NS, STACKS_DIR, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure

PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
               "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
               "-----END OPENSSH PRIVATE KEY-----\n")


@dataclass
class Case:
    id: str
    key: str                       # must appear in the error line
    words: tuple[str, ...] = ()    # must appear in the same line (message or fix)
    base: str = "tp16-mindie"
    mutate: Callable[[dict], None] | None = None   # on the `config:` mapping
    document: Callable[[dict], object] | None = None  # on the whole document
    text: Callable[[str], str] | None = None         # on the file text
    args: tuple[str, ...] = ()
    stack_arg: str | None = None  # pass this as --stack instead of a written file
    file_hint: str | None = None  # the file the message must name (default: the written one)


def section(config: dict, name: str) -> dict:
    return config[NS + name]


def nodes(config: dict) -> list:
    return config[NS + "nodes"]


def rename(config: dict, old: str, new: str) -> None:
    config[new] = config.pop(old)


def set_in(name: str, key: str, value):
    return lambda c: section(c, name).__setitem__(key, value)


def without_fabric_keys(config: dict) -> None:
    """What a 300I Duo stack may not ask for (no RoCE fabric): device IPs, TLS fix."""
    for node in nodes(config):
        node.pop("device_ips", None)
    section(config, "network").pop("fix_tls", None)


def bf16_weights(config: dict) -> None:
    section(config, "model")["quantization"] = "bf16"


CASES = [
    # --- YAML and document shape ------------------------------------------
    Case("fix-tls-against-hccl-tls-enabled", NS + "network.fix_tls",
         ("switch to 0", "hccl_tls: enabled requires 1", "set network.hccl_tls: disabled"),
         mutate=lambda c: section(c, "network").update(fix_tls=True, hccl_tls="enabled")),
    Case("yaml-tab-indentation", "line 10", ("not valid YAML", "tabs"),
         text=lambda t: t.replace("    - name: node1", "\t- name: node1")),
    Case("yaml-unclosed-bracket", "line", ("not valid YAML",),
         text=lambda t: t.replace("198.51.100.8]", "198.51.100.8", 1)),
    Case("duplicate-key-in-a-section", NS + "parallel.tp", ("written twice", "lines 55 and 56", "keep one `tp:`"),
         text=lambda t: t.replace("    tp: 16\n", "    tp: 16\n    tp: 8\n")),
    Case("duplicate-key-in-a-node", NS + "nodes[1].host", ("lines 11 and 12",),
         text=lambda t: t.replace("      host: 192.0.2.12\n", "      host: 192.0.2.12\n      host: 192.0.2.13\n")),
    Case("duplicate-section", NS + "hardware", ("written twice",),
         text=lambda t: t.replace("config:\n",
                                  "config:\n  ascend-inference:hardware:\n    profile: atlas-800t-a2\n", 1)),
    Case("not-a-mapping", "(root)", ("mapping",), text=lambda t: "- node0\n- node1\n"),
    Case("empty-file", "(root)", ("mapping",), text=lambda t: ""),
    Case("no-config-key", "config", ("missing",), document=lambda d: {"encryptionsalt": "v1:abc"}),
    Case("unknown-top-level-key", "confg", ("did you mean 'config'",),
         document=lambda d: {"confg": d["config"]}),
    Case("binary-file", "(file)", ("cannot read",), text=lambda t: "\udcff"),
    # --- unknown / misspelt keys ------------------------------------------
    Case("unknown-section-key", NS + "parallel.bogus", ("unknown key", "tp"),
         mutate=set_in("parallel", "bogus", 1)),
    Case("misspelt-engine-key", NS + "engine.max_num_seq", ("did you mean 'max_num_seqs'",),
         base="tp16-vllm-mindspore",
         mutate=lambda c: section(c, "engine").__setitem__("max_num_seq", section(c, "engine").pop("max_num_seqs"))),
    Case("misspelt-section", NS + "paralel", ("did you mean 'parallel'",),
         mutate=lambda c: rename(c, NS + "parallel", NS + "paralel")),
    Case("misspelt-node-key", NS + "nodes[0].hostnme", ("did you mean 'hostname'",),
         mutate=lambda c: nodes(c)[0].__setitem__("hostnme", nodes(c)[0].pop("hostname"))),
    Case("misspelt-secret-name", NS + "sshPrivatekey", ("did you mean 'sshPrivateKey'",),
         mutate=lambda c: c.__setitem__(NS + "sshPrivatekey", {"secure": "v1:AAAA"})),
    Case("misspelt-section-beside-a-valid-one", NS + "modle", ("did you mean 'model'",),
         mutate=lambda c: c.__setitem__(NS + "modle", {"name": "DeepSeek-R1"})),
    Case("key-outside-namespace", "other-project:foo", (NS + "foo",),
         mutate=lambda c: c.__setitem__("other-project:foo", 1)),
    Case("key-without-namespace", "parallel", (NS + "parallel",),
         mutate=lambda c: rename(c, NS + "parallel", "parallel")),
    # --- types --------------------------------------------------------------
    Case("tp-quoted", NS + "parallel.tp", ('"16"', "whole number"), mutate=set_in("parallel", "tp", "16")),
    Case("tp-zero", NS + "parallel.tp", ("greater than or equal to 1",), mutate=set_in("parallel", "tp", 0)),
    Case("privileged-yes", NS + "container.privileged", ('"yes"', "true or false"),
         mutate=set_in("container", "privileged", "yes")),
    Case("nodes-not-a-list", NS + "nodes", ("list",),
         mutate=lambda c: c.__setitem__(NS + "nodes", {"name": "node0", "host": "192.0.2.11"})),
    Case("engine-not-a-mapping", NS + "engine", ("mapping",), mutate=lambda c: c.__setitem__(NS + "engine", "mindie")),
    Case("unknown-engine-kind", NS + "engine.kind", ("sglang", "vllm-mindspore, mindie, lmdeploy, gpustack"),
         mutate=set_in("engine", "kind", "sglang")),
    Case("missing-engine-kind", NS + "engine.kind", ("missing", "mindie"),
         mutate=lambda c: section(c, "engine").pop("kind")),
    Case("unknown-hardware-profile", NS + "hardware.profile", ("atlas-900", "atlas-800i-a2"),
         mutate=set_in("hardware", "profile", "atlas-900")),
    Case("unknown-quantization", NS + "model.quantization", ("fp8", "w8a8"),
         mutate=set_in("model", "quantization", "fp8")),
    Case("bad-node-name", NS + "nodes[0].name", ("Node_0",),
         mutate=lambda c: nodes(c)[0].__setitem__("name", "Node_0")),
    Case("bad-shm-size", NS + "container.shm_size", ("lots",), mutate=set_in("container", "shm_size", "lots")),
    Case("bad-mount", NS + "container.mounts[0]", ("data",), mutate=set_in("container", "mounts", ["data"])),
    Case("check-acl-not-a-bool", NS + "container.check_acl", ("true or false",),
         mutate=set_in("container", "check_acl", "sometimes")),
    Case("check-acl-on-gpustack", NS + "container.check_acl", ("GPUStack", "remove container.check_acl"),
         base="dp4-ep32-gpustack", mutate=set_in("container", "check_acl", True)),
    Case("nnrt-run-relative", NS + "container.nnrt_run", ("absolute",),
         mutate=set_in("container", "nnrt_run", "Ascend-cann-nnrt_8.0.RC1_linux-aarch64.run")),
    Case("nnrt-run-without-the-check", NS + "container.check_acl", ("nnrt_run",),
         mutate=lambda c: section(c, "container").update(
             check_acl=False, nnrt_run="/data/Ascend-cann-nnrt_8.0.RC1_linux-aarch64.run")),
    # --- nodes ---------------------------------------------------------------
    Case("duplicate-node-names", NS + "nodes[1].name", ("node0",),
         mutate=lambda c: nodes(c)[1].__setitem__("name", "node0")),
    Case("duplicate-hosts", NS + "nodes[1].host", ("192.0.2.11",),
         mutate=lambda c: nodes(c)[1].__setitem__("host", "192.0.2.11")),
    Case("duplicate-hostnames", NS + "nodes[1].hostname", ("atlas-800i-a2-0", "hostname"),
         mutate=lambda c: nodes(c)[1].__setitem__("hostname", "atlas-800i-a2-0")),
    Case("duplicate-device-ip-across-nodes", NS + "nodes[1].device_ips[3]", ("198.51.100.3", "node0 device 2"),
         mutate=lambda c: nodes(c)[1]["device_ips"].__setitem__(3, "198.51.100.3")),
    Case("duplicate-device-ip-within-a-node", NS + "nodes[0].device_ips[3]", ("198.51.100.3", "node0 device 2"),
         mutate=lambda c: nodes(c)[0]["device_ips"].__setitem__(3, "198.51.100.3")),
    Case("wrong-number-of-device-ips", NS + "nodes[0].device_ips", ("7", "8", "hccn_tool"),
         mutate=lambda c: nodes(c)[0]["device_ips"].pop()),
    Case("invalid-node-ip", NS + "nodes[0].ip", ("192.0.2.300",),
         mutate=lambda c: nodes(c)[0].__setitem__("ip", "192.0.2.300")),
    Case("invalid-device-ip", NS + "nodes[0].device_ips", ("198.51.100.x",),
         mutate=lambda c: nodes(c)[0]["device_ips"].__setitem__(0, "198.51.100.x")),
    Case("ipv6-device-ip", NS + "nodes[0].device_ips", ("2001:db8::1", "IPv6", "not supported yet", "IPv4"),
         mutate=lambda c: nodes(c)[0]["device_ips"].__setitem__(0, "2001:db8::1")),
    Case("host-name-without-ip", NS + "nodes[0].ip", ("atlas0.example", "ip:"),
         mutate=lambda c: nodes(c)[0].__setitem__("host", "atlas0.example")),
    Case("zero-nodes", NS + "nodes", ("no nodes",), mutate=lambda c: c.__setitem__(NS + "nodes", [])),
    # --- layout --------------------------------------------------------------
    Case("tp-pp-dp-not-world", NS + "parallel", ("8 x 1 x 1 = 8", "16"), base="tp16-vllm-mindspore",
         mutate=set_in("parallel", "tp", 8)),
    Case("ep-not-dividing-experts", NS + "parallel.ep", ("24", "256"), base="dp4-ep32-gpustack",
         mutate=set_in("parallel", "ep", 24)),
    Case("ep-moe-tp-not-dividing-stage", NS + "parallel.ep", ("32 x 2 = 64", "32"), base="dp4-ep32-gpustack",
         mutate=set_in("parallel", "moe_tp", 2)),
    Case("moe-tp-without-ep", NS + "parallel.moe_tp", ("16",), base="tp16-vllm-mindspore",
         mutate=set_in("parallel", "moe_tp", 8)),
    Case("pp-split-not-summing", NS + "parallel.pp_layer_split", ("62", "61"), base="tp8-pp2-300iduo",
         mutate=set_in("parallel", "pp_layer_split", [31, 31])),
    Case("pp-split-wrong-length", NS + "parallel.pp_layer_split", ("3 stages", "pp is 2"), base="tp8-pp2-300iduo",
         mutate=set_in("parallel", "pp_layer_split", [20, 20, 21])),
    Case("pp-split-zero-stage", NS + "parallel.pp_layer_split[1]", ("greater than or equal to 1",),
         base="tp8-pp2-300iduo", mutate=set_in("parallel", "pp_layer_split", [61, 0])),
    Case("pp-on-mindie", NS + "parallel.pp", ("mindie",),
         mutate=lambda c: section(c, "parallel").update(tp=8, pp=2)),
    Case("ep-on-mindie", NS + "parallel.ep", ("mindie",), mutate=set_in("parallel", "ep", 2)),
    Case("dp-on-vllm-mindspore", NS + "parallel.dp", ("vllm-mindspore",), base="tp16-vllm-mindspore",
         mutate=lambda c: section(c, "parallel").update(tp=8, dp=2)),
    Case("mindie-tp-not-world", NS + "parallel.tp", ("tp: 16",), mutate=set_in("parallel", "tp", 8)),
    # --- memory and hardware -------------------------------------------------
    Case("bf16-on-two-800i-a2", NS + "model", ("does not fit", "1342 GB", "at least 4 x atlas-800i-a2"),
         mutate=bf16_weights),
    Case("300i-duo-mindie-multinode", NS + "hardware.profile", ("atlas-300i-duo", "vllm-mindspore"),
         mutate=lambda c: (set_in("hardware", "profile", "atlas-300i-duo")(c), without_fabric_keys(c))),
    # --- model ---------------------------------------------------------------
    Case("empty-model-path", NS + "model.path", ("empty",), mutate=set_in("model", "path", "")),
    Case("relative-model-path", NS + "model.path", ("models/DeepSeek-R1", "absolute"),
         mutate=set_in("model", "path", "models/DeepSeek-R1")),
    Case("more-expert-parameters-than-parameters", NS + "model",
         ("expert_parameters_b 6540 is more than parameters_b 671", "654 of 671 for DeepSeek-R1"),
         mutate=set_in("model", "expert_parameters_b", 6540)),
    Case("relative-image-tar", NS + "container.image_tar", ("absolute",),
         mutate=set_in("container", "image_tar", "images/mindie.tar")),
    # --- secrets -------------------------------------------------------------
    Case("secret-in-clear", NS + "sshPrivateKey", ("in clear", "pulumi config set --secret"),
         mutate=lambda c: c.__setitem__(NS + "sshPrivateKey", PRIVATE_KEY)),
    Case("secret-in-clear-not-a-key", NS + "sshPrivateKey", ("in clear", "pulumi config set --secret"),
         mutate=lambda c: c.__setitem__(NS + "sshPrivateKey", "hunter2")),
    Case("private-key-in-another-key", NS + "container.image", ("private key", "pulumi config set --secret"),
         mutate=set_in("container", "image", PRIVATE_KEY)),
    Case("private-key-in-a-node", NS + "nodes[1].user", ("private key",),
         mutate=lambda c: nodes(c)[1].__setitem__("user", PRIVATE_KEY)),
    Case("require-secrets-missing", NS + "sshPrivateKey", ("secret not set", "pulumi config set --secret"),
         args=("--require-secrets",)),
    # --- stack names ---------------------------------------------------------
    Case("stack-name-does-not-exist", "(stack)", ("tp16-mindei", "did you mean 'tp16-mindie'"),
         stack_arg="tp16-mindei", file_hint=str(STACKS_DIR / "Pulumi.tp16-mindei.yaml")),
    Case("stack-file-does-not-exist", "(file)", ("no such stack file",),
         stack_arg="/nonexistent/Pulumi.nothing.yaml", file_hint="/nonexistent/Pulumi.nothing.yaml"),
    # --- engine settings -----------------------------------------------------
    Case("lmdeploy-without-eager-mode", NS + "engine.eager_mode", ("eager", "eager_mode: true"),
         base="tp16-lmdeploy", mutate=set_in("engine", "eager_mode", False)),
    Case("gpu-memory-utilization-1.5", NS + "engine.gpu_memory_utilization", ("1.5",), base="tp16-vllm-mindspore",
         mutate=set_in("engine", "gpu_memory_utilization", 1.5)),
    Case("mindie-input-longer-than-sequence", NS + "engine.max_input_token_len", ("30000", "24576"),
         mutate=set_in("engine", "max_input_token_len", 30000)),
    Case("gpustack-memory-fraction-zero", NS + "engine.npu_memory_fraction", ("0",), base="dp4-ep32-gpustack",
         mutate=set_in("engine", "npu_memory_fraction", 0.0)),
    # GPUStack: one line end to end (the program speaks the 2.x API only).
    Case("gpustack-0x-npu-image-with-2x-api", NS + "container.image",
         ("latest-npu", "0.x", "/v2/models", "gpustack/gpustack:v2.3.0"), base="dp4-ep32-gpustack",
         mutate=set_in("container", "image", "gpustack/gpustack:latest-npu")),
    Case("gpustack-0x-version-tag", NS + "container.image", ("v0.7.1", "gpustack/gpustack:v2.3.0"),
         base="dp4-ep32-gpustack", mutate=set_in("container", "image", "gpustack/gpustack:v0.7.1")),
    # A later major line is named as such (it was called "a GPUStack 0.x image").
    Case("gpustack-3x-version-tag", NS + "container.image",
         ("v3.0.0 is a GPUStack 3.x image", "later line", "gpustack/gpustack:v2.3.0"),
         base="dp4-ep32-gpustack", mutate=set_in("container", "image", "gpustack/gpustack:v3.0.0")),
    Case("gpustack-server-without-npus-too-small", NS + "engine.server_enable_worker",
         ("needs 32 NPUs", "have 24", "master's NPUs", "server_enable_worker: true"), base="dp4-ep32-gpustack",
         mutate=set_in("engine", "server_enable_worker", False)),
    Case("gpustack-visible-device-out-of-range", NS + "engine.visible_devices", ("[0, 9]", "0 to 7"),
         base="dp4-ep32-gpustack", mutate=set_in("engine", "visible_devices", [0, 9])),
    Case("gpustack-visible-devices-too-few", NS + "engine.visible_devices", ("needs 32 NPUs", "see 16"),
         base="dp4-ep32-gpustack", mutate=set_in("engine", "visible_devices", [0, 1, 2, 3])),
    Case("gpustack-docker-socket-relative", NS + "engine.docker_socket", ("docker.sock", "/var/run/docker.sock"),
         base="dp4-ep32-gpustack", mutate=set_in("engine", "docker_socket", "docker.sock")),
    # --- shared engine settings (engines/base.py) ----------------------------
    Case("env-name-not-a-shell-identifier", NS + "engine.env.1BAD NAME",
         ("not a valid environment variable", "_1BAD_NAME"),
         base="tp16-vllm-mindspore", mutate=set_in("engine", "env", {"1BAD NAME": "x"})),
    Case("env-token-in-clear", NS + "engine.env.HF_TOKEN",
         ("in clear", "secret_env: {HF_TOKEN: hfToken}", "pulumi config set --secret " + NS + "hfToken"),
         base="tp16-vllm-mindspore", mutate=set_in("engine", "env", {"HF_TOKEN": "hf_abcdefgh"})),
    Case("env-password-in-clear", NS + "engine.env.DB_PASSWORD", ("in clear", "pulumi config set --secret"),
         mutate=set_in("engine", "env", {"DB_PASSWORD": "hunter2"})),
    Case("engine-port-zero", NS + "engine.port", ("got 0", "1 to 65535"), base="tp16-vllm-mindspore",
         mutate=set_in("engine", "port", 0)),
    Case("engine-port-too-large", NS + "engine.port", ("got 70000", "1 to 65535"), base="dp4-ep32-gpustack",
         mutate=set_in("engine", "port", 70000)),
    Case("ready-timeout-zero", NS + "engine.ready_timeout_s", ("got 0",), base="tp16-lmdeploy",
         mutate=set_in("engine", "ready_timeout_s", 0)),
    Case("ray-port-equal-to-port", NS + "engine.ray_port", ("8000", "engine.port"), base="tp16-vllm-mindspore",
         mutate=set_in("engine", "ray_port", 8000)),
    Case("mindie-port-on-its-management-port", NS + "engine.port", ("1026", "managementPort"),
         mutate=set_in("engine", "port", 1026)),
    Case("engine-port-on-ssh-port", NS + "ssh.port", ("22", "engine.port"), base="tp16-lmdeploy",
         mutate=set_in("engine", "port", 22)),
    Case("node-ssh-port-on-ray-port", NS + "nodes[1].port", ("6379", "engine.ray_port"), base="tp16-lmdeploy",
         mutate=lambda c: nodes(c)[1].__setitem__("port", 6379)),
    Case("max-batch-size-negative", NS + "engine.max_batch_size", ("got -5",),
         mutate=set_in("engine", "max_batch_size", -5)),
    Case("max-num-seqs-zero", NS + "engine.max_num_seqs", ("got 0",), base="tp16-vllm-mindspore",
         mutate=set_in("engine", "max_num_seqs", 0)),
    Case("gpustack-replicas-zero", NS + "engine.replicas", ("got 0",), base="dp4-ep32-gpustack",
         mutate=set_in("engine", "replicas", 0)),
    Case("lmdeploy-device-port-out-of-range", NS + "engine.device_port", ("99999", "1 to 65535"), base="tp16-lmdeploy",
         mutate=set_in("engine", "device_port", "99999")),
    Case("lmdeploy-cache-share-above-one", NS + "engine.cache_max_entry_count", ("1.5",), base="tp16-lmdeploy",
         mutate=set_in("engine", "cache_max_entry_count", 1.5)),
    # --- nodes and SSH -------------------------------------------------------
    Case("duplicate-container-ip", NS + "nodes[1].container_ip", ("192.0.2.50", NS + "nodes[0]"),
         mutate=lambda c: [n.__setitem__("container_ip", "192.0.2.50") for n in nodes(c)]),
    Case("container-ip-is-another-nodes-ip", NS + "nodes[1].container_ip", ("192.0.2.11",),
         mutate=lambda c: nodes(c)[1].__setitem__("container_ip", nodes(c)[0]["host"])),
    Case("jump-host-garbage", NS + "ssh.jump_host", ("'@@:'", "[user@]host[:port]"),
         mutate=lambda c: c.__setitem__(NS + "ssh", {"jump_host": "@@:"})),
    Case("jump-host-port-out-of-range", NS + "ssh.jump_host", ("bastion:99999",),
         mutate=lambda c: c.__setitem__(NS + "ssh", {"jump_host": "admin@bastion:99999"})),
    Case("empty-ssh-user", NS + "ssh.user", ("empty",), mutate=lambda c: c.__setitem__(NS + "ssh", {"user": ""})),
    Case("empty-node-user", NS + "nodes[1].user", ("empty", "ssh.user"),
         mutate=lambda c: nodes(c)[1].__setitem__("user", "  ")),
    # --- network checks the hardware profile does not have (300I Duo: no fabric) ---
    Case("300i-duo-device-ips", NS + "nodes[1].device_ips", ("no RoCE fabric", "no device IPs", "remove"),
         base="tp8-pp2-300iduo",
         mutate=lambda c: nodes(c)[1].__setitem__("device_ips", [f"198.51.100.{d + 17}" for d in range(8)])),
    Case("300i-duo-ping-peers", NS + "network.ping_peers", ("atlas-300i-duo", "no device IPs to ping",
                                                             "remove network.ping_peers"),
         base="tp8-pp2-300iduo", mutate=set_in("network", "ping_peers", True)),
    Case("300i-duo-fix-tls", NS + "network.fix_tls", ("no HCCL TLS switch",), base="tp8-pp2-300iduo",
         mutate=set_in("network", "fix_tls", True)),
    Case("300i-duo-hccl-tls-enabled", NS + "network.hccl_tls", ("no HCCL TLS switch",), base="tp8-pp2-300iduo",
         mutate=set_in("network", "hccl_tls", "enabled")),
    Case("300i-duo-lldp-require", NS + "network.lldp", ("no switch port",), base="tp8-pp2-300iduo",
         mutate=set_in("network", "lldp", "require")),
    Case("300i-duo-gateway-warn", NS + "network.gateway", ("no device gateway",), base="tp8-pp2-300iduo",
         mutate=set_in("network", "gateway", "warn")),
    Case("lldp-policy-unknown", NS + "network.lldp", ("require", "warn", "ignore"),
         mutate=set_in("network", "lldp", "sometimes")),
]
assert len(CASES) >= 30
assert len({c.id for c in CASES}) == len(CASES)


def prepare(case: Case, directory: Path) -> tuple[str, str]:
    """(--stack argument, file the messages must name)."""
    if case.stack_arg is not None:
        return case.stack_arg, case.file_hint
    label = case.id
    if case.text is not None:
        original = (STACKS_DIR / f"Pulumi.{case.base}.yaml").read_text(encoding="utf-8")
        text = case.text(original)
        path = directory / f"Pulumi.{label}.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    else:
        doc = load_stack_doc(case.base)
        if case.document is not None:
            doc = case.document(doc)
        if case.mutate is not None:
            case.mutate(doc["config"])
        path = write_stack(directory, label, doc)
    return str(path), str(path)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case once (concurrently: each is its own process)."""
    directory = tmp_path_factory.mktemp("bad-stacks")
    prepared = {case.id: prepare(case, directory) for case in CASES}

    def run(case):
        stack, _ = prepared[case.id]
        return case.id, run_cli("validate", "--stack", stack, *case.args)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcome = dict(pool.map(run, CASES))
    return {cid: (prepared[cid][1], outcome[cid]) for cid in outcome}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_stack_is_refused_clearly(results, case):
    file, result = results[case.id]
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode == 3, shown
    assert ": ok" not in result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, shown
    assert all(line.startswith("error: ") for line in lines), shown
    assert file in result.stderr, f"the stack file {file} is not named\n{shown}"
    matching = [line for line in lines if file in line and case.key in line]
    assert matching, f"no error line names both {file} and the key {case.key!r}\n{shown}"
    with_fix = [line for line in matching if "(fix: " in line and line.rstrip().endswith(")")]
    assert with_fix, f"the error for {case.key} gives no fix hint\n{shown}"
    for word in case.words:
        assert any(word in line for line in with_fix), f"{word!r} not in the error for {case.key}\n{shown}"


def test_every_problem_is_reported_at_once(tmp_path):
    """Several independent mistakes: one line each, not just the first."""
    doc = load_stack_doc("tp16-mindie")
    config = doc["config"]
    config[NS + "nodes"][1]["name"] = "node0"
    config[NS + "nodes"][1]["hostname"] = "atlas-800i-a2-0"
    config[NS + "nodes"][0]["device_ips"].pop()
    path = write_stack(tmp_path, "many", doc)
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    for key in (NS + "nodes[1].name", NS + "nodes[1].hostname", NS + "nodes[0].device_ips"):
        assert key in result.stderr, result.stderr


def test_unknown_keys_in_several_sections_are_all_reported(tmp_path):
    doc = load_stack_doc("tp16-vllm-mindspore")
    config = doc["config"]
    config[NS + "engine"]["max_num_seq"] = 1
    config[NS + "container"]["shm"] = "1g"
    path = write_stack(tmp_path, "keys", doc)
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 3
    assert "engine.max_num_seq" in result.stderr and "container.shm" in result.stderr, result.stderr


def test_render_refuses_a_bad_stack_the_same_way(tmp_path):
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "parallel"]["tp"] = "16"
    path = write_stack(tmp_path, "bad-render", doc)
    result = run_cli("render", "--stack", path, "--out", tmp_path / "out")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert f"{path}: {NS}parallel.tp" in result.stderr
    assert not (tmp_path / "out").exists()
