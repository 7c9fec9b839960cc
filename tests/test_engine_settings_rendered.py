"""Every engine setting rendered away from its default at least once, with
the flag, key or variable it becomes checked (issue 24: a setting only ever
rendered at its default lets a wrong flag name pass).

Each case sets one `ascend-inference:engine` key of a stack in stacks/ to a
value no stack uses, renders every node (env file, engine files, scripts,
`docker run` line, rank table) and asserts the fragments that value must
produce, each absent from the stack rendered as it is. A completeness test
holds every field of each engine's settings model to a case here or a reason
it cannot be rendered away from its default.
"""
from __future__ import annotations

import functools
import json

import pytest

from ascend_inference.engines.gpustack import GpustackSettings
from ascend_inference.engines.lmdeploy import LmdeploySettings
from ascend_inference.engines.mindie import MindieSettings
from ascend_inference.engines.vllm_mindspore import VllmMindsporeSettings
from ascend_inference.render import declared_device_ips, rank_table, render_node
from ascend_inference.stackfile import LoadedStack, load_stack
from ascendctl.preview.stack import loaded_with_config
from tests.conftest import FIXTURES

pytestmark = pytest.mark.pure

ENGINE = "ascend-inference:engine"
MASTER = "192.0.2.11"  # node0's address in every stack of stacks/

# (stack, setting, value, fragments the value renders). The stack is the one of stacks/ running that engine.
CASES = [
    # vLLM-MindSpore (runbooks 000/003): `vllm-mindspore serve` flags, Ray's port, the env file.
    ("tp16-vllm-mindspore", "port", 8123, ["--port=8123", f"http://{MASTER}:8123/v1/models"]),
    ("tp16-vllm-mindspore", "ray_port", 6390, ["ray start --head --port=6390", f"--address={MASTER}:6390"]),
    ("tp16-vllm-mindspore", "max_num_seqs", 77, ["--max-num-seqs=77"]),
    ("tp16-vllm-mindspore", "max_model_len", 16001, ["--max-model-len=16001"]),
    ("tp16-vllm-mindspore", "max_num_batched_tokens", 2049, ["--max-num-batched-tokens=2049"]),
    ("tp16-vllm-mindspore", "block_size", 64, ["--block-size=64"]),
    ("tp16-vllm-mindspore", "gpu_memory_utilization", 0.85, ["--gpu-memory-utilization=0.85"]),
    ("tp16-vllm-mindspore", "enable_prefix_caching", False, ["--no-enable-prefix-caching"]),
    ("tp16-vllm-mindspore", "dtype", "float16", ["--dtype float16"]),
    ("tp16-vllm-mindspore", "distributed_executor_backend", "ray", ["--distributed-executor-backend=ray"]),
    ("tp16-vllm-mindspore", "distributed_executor_backend", "mp", ["--distributed-executor-backend=mp"]),
    ("tp16-vllm-mindspore", "model_backend", "vLLM", ["export vLLM_MODEL_BACKEND=vLLM"]),
    ("tp16-vllm-mindspore", "mindformers_model_config", "/models/predict.yaml",
     ["export MINDFORMERS_MODEL_CONFIG=/models/predict.yaml"]),
    ("tp16-vllm-mindspore", "write_mindformers_yaml", True, ["run_mode: 'predict'"]),
    ("tp16-vllm-mindspore", "log_file", "serve-0.log", ['log_file="$run_dir/serve-0.log"']),
    ("tp16-vllm-mindspore", "smoke_prompt", "Mindspore is", ['"prompt": "Mindspore is"']),
    ("tp16-vllm-mindspore", "ready_timeout_s", 1234, ["deadline=$((SECONDS + 1234))"]),
    ("tp16-vllm-mindspore", "env", {"MY_SETTING_VAR": "on"}, ["export MY_SETTING_VAR=on"]),
    # MindIE (runbook 001): config.json edits, env variables, the daemon's directory.
    ("tp16-mindie", "port", 1099, ['["ServerConfig.port", 1099]', f"http://{MASTER}:1099/v1/models"]),
    ("tp16-mindie", "install_path", "/opt/mindie-svc", ['"file": "/opt/mindie-svc/conf/config.json"',
                                                         "cd /opt/mindie-svc"]),
    # (with engine.tls, which a switch turned on needs: WITH below)
    ("tp16-mindie", "https_enabled", True, ['["ServerConfig.httpsEnabled", true]',
                                            f"--cacert /etc/mindie-tls/ca.pem https://{MASTER}:1025/v1/models"]),
    ("tp16-mindie", "inter_comm_tls_enabled", True, ['["ServerConfig.interCommTLSEnabled", true]',
                                                     '"ServerConfig.interCommTlsCert", "security/grpc/certs/']),
    ("tp16-mindie", "inter_node_tls_enabled", True, ['["BackendConfig.interNodeTLSEnabled", true]',
                                                     '"BackendConfig.interNodeTlsPk", "security/grpc/keys/']),
    ("tp16-mindie", "max_seq_len", 32769, ['["BackendConfig.ModelDeployConfig.maxSeqLen", 32769]']),
    ("tp16-mindie", "max_input_token_len", 8193, ['["BackendConfig.ModelDeployConfig.maxInputTokenLen", 8193]']),
    # At least max_input_token_len (16384): MindIE refuses less at start (test_engine_rules.py).
    ("tp16-mindie", "max_prefill_tokens", 20000, ['["BackendConfig.ScheduleConfig.maxPrefillTokens", 20000]']),
    ("tp16-mindie", "max_prefill_batch_size", 7, ['["BackendConfig.ScheduleConfig.maxPrefillBatchSize", 7]']),
    ("tp16-mindie", "max_batch_size", 111, ['["BackendConfig.ScheduleConfig.maxBatchSize", 111]']),
    ("tp16-mindie", "max_iter_times", 4097, ['["BackendConfig.ScheduleConfig.maxIterTimes", 4097]']),
    ("tp16-mindie", "npu_memory_fraction", 0.88, ["export NPU_MEMORY_FRACTION=0.88"]),
    ("tp16-mindie", "rank_table_path", "/data/rt.json", ["export RANKTABLEFILE=/data/rt.json",
                                                         "export RANK_TABLE_FILE=/data/rt.json"]),
    ("tp16-mindie", "log_level", "INFO", ["export MINDIE_LOG_LEVEL=INFO", "export ATB_LOG_LEVEL=INFO",
                                          "export ASDOPS_LOG_LEVEL=INFO"]),
    ("tp16-mindie", "ready_timeout_s", 1234, ["deadline=$((SECONDS + 1234))"]),
    ("tp16-mindie", "env", {"MY_SETTING_VAR": "on"}, ["export MY_SETTING_VAR=on"]),
    # LMDeploy (runbook 004): `lmdeploy serve api_server` flags, the rank table, Ray.
    ("tp16-lmdeploy", "port", 23400, ["--server-port 23400", f"http://{MASTER}:23400/v1/models"]),
    ("tp16-lmdeploy", "ray_port", 6390, ["ray start --head --port=6390", f"--address={MASTER}:6390"]),
    ("tp16-lmdeploy", "rank_table_path", "/data/rt.json", ["export ASCEND_RANK_TABLE_FILE_PATH=/data/rt.json"]),
    ("tp16-lmdeploy", "device_port", "16999", ['"device_port": "16999"']),
    ("tp16-lmdeploy", "cache_max_entry_count", 0.5, ["--cache-max-entry-count 0.5"]),
    ("tp16-lmdeploy", "log_file", "serve-0.log", ['log_file="$run_dir/serve-0.log"']),
    ("tp16-lmdeploy", "ready_timeout_s", 1234, ["deadline=$((SECONDS + 1234))"]),
    ("tp16-lmdeploy", "env", {"MY_SETTING_VAR": "on"}, ["export MY_SETTING_VAR=on"]),
    # GPUStack (runbook 002): the model request, the server/worker containers.
    ("dp4-ep32-gpustack", "port", 8080, [f"server=http://{MASTER}:8080"]),
    ("dp4-ep32-gpustack", "npu_memory_fraction", 0.9, ['"--npu-memory-fraction=0.9"']),
    ("dp4-ep32-gpustack", "replicas", 2, ['"replicas": 2']),
    ("dp4-ep32-gpustack", "env", {"MY_SETTING_VAR": "on"}, ["-e MY_SETTING_VAR=on"]),
    ("dp4-ep32-gpustack", "extra_backend_parameters", ["--max-seq-len=8192"], ['"--max-seq-len=8192"']),
    ("dp4-ep32-gpustack", "backend_version", "2.1.0", ['"backend_version": "2.1.0"']),
    ("dp4-ep32-gpustack", "data_volume", "gs-data-2", ["-v gs-data-2:/var/lib/gpustack"]),
    ("dp4-ep32-gpustack", "server_args", ["--debug"], [" --debug"]),
    ("dp4-ep32-gpustack", "docker_socket", "/run/docker-alt.sock",
     # the host's socket, at the path the server looks for inside its container
     ["-v /run/docker-alt.sock:/var/run/docker.sock", "[ -e /run/docker-alt.sock ]"]),
    ("dp4-ep32-gpustack", "ascend_runtime", True, ["--runtime=ascend"]),
    ("dp4-ep32-gpustack", "visible_devices", [7, 6, 5, 4, 3, 2, 1, 0], ["VISIBLE_DEVICES=7,6,5,4,3,2,1,0"]),
    # (with engine.tls and https_enabled: GPUSTACK_HTTPS below)
    ("dp4-ep32-gpustack", "https_enabled", True, ["--ssl-certfile /etc/gpustack-tls/server.pem",
                                                  "-e SSL_CERT_FILE=/etc/gpustack-tls/ca.pem",
                                                  f"server=https://{MASTER}\n"]),
    ("dp4-ep32-gpustack", "tls_port", 8443, ["--tls-port 8443", f"server=https://{MASTER}:8443"]),
]

# What a case's setting needs beside it: a MindIE TLS switch turned on needs the TLS files.
MINDIE_TLS = {"ca": "/etc/mindie-tls/ca.pem", "cert": "/etc/mindie-tls/server.pem",
              "key": "/etc/mindie-tls/server.key.pem", "key_unlock_file": "/etc/mindie-tls/key_pwd.txt",
              "kmc_master": "/etc/mindie-tls/ksfa", "kmc_standby": "/etc/mindie-tls/ksfb"}
WITH = {("tp16-mindie", switch): {"tls": MINDIE_TLS}
        for switch in ("https_enabled", "inter_comm_tls_enabled", "inter_node_tls_enabled")}
# GPUStack's HTTPS: the nodes' files, and a CA on the control host (a test fixture).
GPUSTACK_TLS = {"ca": "/etc/gpustack-tls/ca.pem", "cert": "/etc/gpustack-tls/server.pem",
                "key": "/etc/gpustack-tls/server.key", "control_ca": str(FIXTURES / "gpustack-tls" / "ca.pem")}
WITH.update({("dp4-ep32-gpustack", setting): {"https_enabled": True, "tls": GPUSTACK_TLS}
             for setting in ("https_enabled", "tls_port")})

# Settings no case above renders away from their default, and why.
NOT_RENDERED = {
    "kind": "selects the engine; each engine's stack renders its own kind",
    "secret_env": "a Pulumi secret: never rendered (tests/test_secret_env.py checks it is absent from every file)",
    "trust_remote_code": "false drops a flag instead of adding one: test_trust_remote_code_false_drops_the_flag",
    "backend": "one allowed value (lmdeploy: pytorch, gpustack: MindIE), rendered at it by every stack",
    "device": "one allowed value (ascend), rendered at it by the lmdeploy stack",
    "eager_mode": "multi-node LMDeploy on Ascend runs in eager mode only: false is refused (test_spec_errors.py)",
    "server_enable_worker": "false is refused on every stack: the world counts the master's NPUs, which only the "
                            "server's built-in worker serves (tests/test_spec_errors.py, gpustack-server-without-npus)",
    "ready_timeout_s@gpustack": "the GPUStack model resource's input (graph tier): tests/test_graph_options.py",
    "worker_ready_timeout_s": "the GPUStack model resource's input (graph tier): tests/test_graph_options.py",
    "api_key_secret": "names the Pulumi secret of the serving API key, never rendered: the container env and the "
                      "probes' header carry it (tests/test_endpoint_auth.py)",
    "insecure_no_api_key": "true drops the API key instead of adding a flag: tests/test_endpoint_auth.py "
                           "test_the_opt_out_is_explicit_and_named",
    "tls": "MindIE's and GPUStack's TLS files, rendered with a TLS switch on (the cases above, WITH) and in "
           "full by tests/test_mindie_tls.py and tests/test_gpustack_tls.py",
}

SETTINGS = {"tp16-vllm-mindspore": VllmMindsporeSettings, "tp16-mindie": MindieSettings,
            "tp16-lmdeploy": LmdeploySettings, "dp4-ep32-gpustack": GpustackSettings}


def rendered_text(loaded: LoadedStack) -> str:
    """Everything the core renders for the stack's nodes, as one text."""
    parts = []
    for index in range(len(loaded.spec.nodes)):
        node = render_node(loaded, index)
        parts += [node.env_text, *node.files.values(), *(s.text for s in node.scripts.present()),
                  node.container.docker_run_line()]
    table = rank_table(loaded, declared_device_ips(loaded))
    if table is not None:
        parts.append(json.dumps(table, indent=2))
    return "\n".join(parts)


@functools.cache
def default_text(stack: str) -> str:
    return rendered_text(load_stack(stack))


def rendered_with(stack: str, setting: str, value) -> str:
    loaded = load_stack(stack)
    config = json.loads(json.dumps(loaded.raw_config))
    config[ENGINE] = {**config[ENGINE], setting: value, **WITH.get((stack, setting), {})}
    changed = loaded_with_config(loaded, config)
    assert getattr(changed.spec.engine, setting) == value != getattr(loaded.spec.engine, setting)
    return rendered_text(changed)


@pytest.mark.parametrize(("stack", "setting", "value", "fragments"), CASES,
                         ids=[f"{c[0]}-{c[1]}={c[2]}" for c in CASES])
def test_a_setting_away_from_its_default_renders_its_flag(stack, setting, value, fragments):
    text = rendered_with(stack, setting, value)
    for fragment in fragments:
        assert fragment not in default_text(stack), f"{fragment!r} is already in the default render"
        assert fragment in text, f"{setting}={value!r}: {fragment!r} not rendered"


def test_trust_remote_code_false_drops_the_flag():
    assert "--trust-remote-code" in default_text("tp16-vllm-mindspore")
    assert "--trust-remote-code" not in rendered_with("tp16-vllm-mindspore", "trust_remote_code", False)


def test_lmdeploys_single_valued_settings_render_at_their_value():
    assert "--backend pytorch --device ascend --eager-mode" in default_text("tp16-lmdeploy")


@pytest.mark.parametrize("stack", sorted(SETTINGS))
def test_every_setting_has_a_case_or_a_reason(stack):
    model = SETTINGS[stack]
    cased = {setting for s, setting, _, _ in CASES if s == stack}
    kind = model.model_fields["kind"].annotation.__args__[0]
    reasons = {key.split("@")[0] for key in NOT_RENDERED if "@" not in key or key.endswith("@" + kind)}
    missing = set(model.model_fields) - cased - reasons
    assert not missing, f"{stack}: settings never rendered away from their default here: {sorted(missing)}"
