"""Pure tier: engine rules and rendered defaults checked in process, where
the CLI tests (test_golden.py, test_spec_errors.py) check them through a
`python -m ascendctl` subprocess. Each test here was written for a mutant
that survived `tools/mutation.py` on an engine module (docs/testing.md,
"Mutation testing"): the mutation run selects only tests that run the
module in their own process."""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import subprocess
from pathlib import Path

import pytest

from ascend_inference.engines.lmdeploy import s_dir
from ascend_inference.engines.mindie import MindieSettings
from ascend_inference.errors import Problem, StackError
from ascend_inference.render import render_node, render_stack
from ascend_inference.stackfile import load_stack
from ascendctl.cli import main as cli_main
from tests import (
    test_endpoint_auth,
    test_golden,
    test_mindie_tls,
    test_ray_auth,
    test_render,
    test_spec_errors,
    test_vllm_ascend,
    test_vllm_ascend_ray,
)
from tests.conftest import NS, STACKS_DIR, load_stack_doc, write_stack

pytestmark = pytest.mark.pure


def loaded_case(tmp_path: Path, stack: str, *, engine: dict | None = None, drop: tuple[str, ...] = (),
                nodes: int | None = None, parallel: dict | None = None, model: dict | None = None):
    """stacks/`stack` with `engine` keys set, `drop`'s engine keys removed, `nodes` nodes (its
    first ones, or more made like its second), and `parallel` and `model` keys set."""
    doc = load_stack_doc(stack)
    config = doc["config"]
    config[NS + "engine"].update(engine or {})
    for key in drop:
        config[NS + "engine"].pop(key)
    if nodes is not None:
        listed = config[NS + "nodes"]
        config[NS + "nodes"] = listed[:nodes] + [
            {**listed[1], "name": f"node{k}", "host": f"192.0.2.{11 + k}", "hostname": f"case-node-{k}",
             "device_ips": [f"198.51.{100 + k // 15}.{16 * (k % 15) + d + 1}"
                            for d in range(len(listed[1]["device_ips"]))]}
            for k in range(len(listed), nodes)]
    config[NS + "parallel"].update(parallel or {})
    config[NS + "model"].update(model or {})
    return load_stack(str(write_stack(tmp_path, "case", doc)))


def problems_of(tmp_path: Path, stack: str, **changes) -> list[Problem]:
    try:
        loaded_case(tmp_path, stack, **changes)
    except StackError as error:
        return error.problems
    return []


def config_edits(loaded, index: int = 0) -> dict[str, object]:
    """MindIE's config.json edits of node `index`, {key path: value}."""
    files = render_node(loaded, index).files
    [text] = [t for name, t in files.items() if name.endswith("config-edits.json")]
    return {path: value for path, value in json.loads(text)["edits"]}


SMALL_MODEL = {"parameters_b": 100, "expert_parameters_b": 90}


# --- MindIE ------------------------------------------------------------------------

def test_mindie_without_a_port_serves_on_runbook_001s_1025(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-mindie", drop=("port",))
    assert config_edits(loaded)["ServerConfig.port"] == 1025
    assert loaded.spec.engine_plugin.endpoint(loaded.spec).endswith(":1025")


# The runbook-001 values tp16-mindie spells out, which are MindIE's settings' defaults too.
MINDIE_RUNBOOK_VALUES = ("port", "max_seq_len", "max_input_token_len", "max_prefill_tokens", "max_prefill_batch_size",
                         "max_batch_size", "max_iter_times", "npu_memory_fraction")


def test_mindies_defaults_are_runbook_001s_values(tmp_path):
    (tmp_path / "spelled").mkdir()
    (tmp_path / "defaults").mkdir()
    spelled_out = loaded_case(tmp_path / "spelled", "tp16-mindie")
    defaults = loaded_case(tmp_path / "defaults", "tp16-mindie", drop=MINDIE_RUNBOOK_VALUES)
    assert rendered_text(defaults) == rendered_text(spelled_out)
    assert config_edits(defaults) == config_edits(spelled_out)
    # Those the stack leaves to the defaults: runbook 001's install path and log level.
    text = rendered_text(defaults)
    assert '"file": "/usr/local/Ascend/mindie/latest/mindie-service/conf/config.json"' in text
    assert "export MINDIE_LOG_LEVEL=ERROR" in text and "export ATB_LOG_LEVEL=ERROR" in text


@pytest.mark.parametrize(("nodes", "multi_node"), [(2, True), (1, False)])
def test_mindie_turns_multi_node_inference_on_for_more_than_one_node_only(nodes, multi_node, tmp_path):
    # A 100 B model: one node holds it.
    loaded = loaded_case(tmp_path, "tp16-mindie", nodes=nodes, parallel={"tp": 8 * nodes}, model=SMALL_MODEL)
    assert config_edits(loaded)["BackendConfig.multiNodesInferEnabled"] is multi_node


def test_mindie_names_each_tls_switch_left_unset(tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", drop=("https_enabled", "inter_node_tls_enabled"))
    assert [p.key for p in problems] == [f"{NS}engine.https_enabled", f"{NS}engine.inter_node_tls_enabled"]
    assert "is not set: MindIE ships ServerConfig.httpsEnabled on" in problems[0].message


MINDIE_TLS = {"ca": "/etc/mindie-tls/ca.pem", "cert": "/etc/mindie-tls/server.pem",
              "key": "/etc/mindie-tls/server.key.pem", "key_unlock_file": "/etc/mindie-tls/key_pwd.txt",
              "kmc_master": "/etc/mindie-tls/ksfa", "kmc_standby": "/etc/mindie-tls/ksfb"}


@pytest.mark.parametrize("given", ["client_cert", "client_key"])
def test_mindie_refuses_either_client_file_without_the_other(given, tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", engine={
        "https_enabled": True, "tls": {**MINDIE_TLS, given: "/etc/mindie-tls/client.pem"}})
    assert [(p.key, p.message) for p in problems] == [
        (f"{NS}engine.tls", "has only one of client_cert and client_key")]


def test_mindie_refuses_a_rank_table_path_in_a_system_directory(tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", engine={"rank_table_path": "/etc/rank_table.json"})
    assert [p.key for p in problems] == [f"{NS}engine.rank_table_path"]
    assert "is in the system directory /etc" in problems[0].message


def test_mindie_refuses_a_tls_file_that_is_no_absolute_path(tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", engine={
        "https_enabled": True, "tls": {**MINDIE_TLS, "cert": "certs/server.pem"}})
    assert [p.key for p in problems] == [f"{NS}engine.tls.cert"]
    assert "is not an absolute path" in problems[0].message


@pytest.mark.parametrize(("nodes", "refused"), [(4, False), (5, True)])
def test_mindie_multi_node_takes_at_most_four_servers(nodes, refused, tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", nodes=nodes, parallel={"tp": 8 * nodes})
    assert [p.key for p in problems] == ([f"{NS}nodes"] if refused else [])
    if refused:
        assert "5 nodes: MindIE multi-node inference supports at most 4 servers" in problems[0].message


@pytest.mark.parametrize(("engine", "refused"), [
    ({"max_input_token_len": 24576, "max_prefill_tokens": 24576}, None),     # as long as max_seq_len
    ({"max_input_token_len": 24577, "max_prefill_tokens": 24577}, "max_input_token_len"),
    ({"max_prefill_tokens": 16384}, None),                                   # as many as max_input_token_len
    ({"max_prefill_tokens": 16383}, "max_prefill_tokens"),
    ({"npu_memory_fraction": 1.0}, None),
    ({"npu_memory_fraction": 1.01}, "npu_memory_fraction"),
    ({"npu_memory_fraction": 0.0}, "npu_memory_fraction"),
    ({"npu_memory_fraction": -0.5}, "npu_memory_fraction"),
])
def test_mindies_length_and_memory_rules_at_their_bounds(engine, refused, tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", engine=engine)
    assert [p.key for p in problems] == ([f"{NS}engine.{refused}"] if refused else [])


@pytest.mark.parametrize("parallel", [{"tp": 8, "dp": 2}, {"tp": 32}])
def test_mindie_runs_one_tp_group_over_all_npus(parallel, tmp_path):
    # (dp 2 is refused too: MindIE here runs no data parallelism; tp 32 is also no layout of 16 NPUs)
    problems = [p for p in problems_of(tmp_path, "tp16-mindie", parallel=parallel) if p.key == f"{NS}parallel.tp"]
    assert [p.fix for p in problems] == ["set tp: 16"]
    assert (f"over all 16 NPUs (WORLD_SIZE=16, worldSize 8 per node), but tp is {parallel['tp']}"
            in problems[0].message)


def test_mindie_compares_tp_with_the_world_by_value_above_256_npus_too(tmp_path):
    # 33 nodes x 8 NPUs: refused for the node count only, tp 264 being the world.
    problems = problems_of(tmp_path, "tp16-mindie", nodes=33, parallel={"tp": 264})
    assert [p.key for p in problems] == [f"{NS}nodes"]


def test_mindies_smoke_request_is_runbook_001s_chat_completion(tmp_path):
    # Runbook 001 §6.4 (docs/runbooks.md): one user message, max_tokens 512, stream false.
    loaded = loaded_case(tmp_path, "tp16-mindie")
    check = loaded.spec.engine_plugin.smoke_request(loaded.spec)
    assert check.url == "http://192.0.2.11:1025/v1/chat/completions"
    assert json.loads(check.body) == {"model": loaded.spec.model.name,
                                      "messages": [{"role": "user", "content": "介绍下杭州西湖"}],
                                      "max_tokens": 512, "stream": False}
    assert "介绍下杭州西湖" in check.body  # as the runbook's curl sends it, UTF-8 rather than \u escapes


def test_mindie_mounts_the_rank_tables_own_directory(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-mindie", engine={"rank_table_path": "/data/hm/tables/rt.json"})
    line = render_node(loaded, 0).container.docker_run_line()
    assert " -v /data/hm/tables:/data/hm/tables " in line and " -v /data/hm:/data/hm " not in line


def test_mindie_names_only_the_switches_set_false_as_insecure_choices():
    settings = MindieSettings(kind="mindie", https_enabled=None, inter_comm_tls_enabled=False,
                              inter_node_tls_enabled=None)
    assert [key for key, _ in settings.insecure_choices()] == ["engine.inter_comm_tls_enabled"]


# --- LMDeploy ----------------------------------------------------------------------

def rendered_text(loaded) -> str:
    """Every node's env file, engine files, scripts and `docker run` line, as one text."""
    parts = []
    for index in range(len(loaded.spec.nodes)):
        node = render_node(loaded, index)
        parts += [node.env_text, *node.files.values(), *(s.text for s in node.scripts.present()),
                  node.container.docker_run_line()]
    return "\n".join(parts)


def test_lmdeploy_without_a_ray_port_starts_ray_on_6379(tmp_path):
    text = rendered_text(loaded_case(tmp_path, "tp16-lmdeploy", drop=("ray_port",)))
    assert "ray start --head --port=6379" in text and "--address=192.0.2.11:6379" in text


def test_lmdeploy_mounts_the_rank_tables_own_directory(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy", engine={"rank_table_path": "/data/hm/tables/rt.json"})
    assert " -v /data/hm/tables:/data/hm/tables " in render_node(loaded, 0).container.docker_run_line()
    assert s_dir("/data/hm/rank_table.json") == "/data/hm" and s_dir("/rank_table.json") == "/"


@pytest.mark.parametrize("nodes", [2, 3, 4])
def test_lmdeploys_version_matters_on_every_multi_node_cluster(nodes, tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy", nodes=nodes, parallel={"tp": 8 * nodes})
    assert "0.15.0 removed the reader" in loaded.spec.engine_plugin.version_matters(loaded.spec)


def test_lmdeploys_eager_mode_rule_comes_before_the_memory_fit(tmp_path):
    # Checked before the plan exists: a model too large for the nodes does not hide it.
    problems = problems_of(tmp_path, "tp16-lmdeploy", engine={"eager_mode": False}, model={"parameters_b": 5000})
    assert [p.key for p in problems] == [f"{NS}engine.eager_mode"]


def test_lmdeploys_smoke_request_is_runbook_004s_completion(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy")
    check = loaded.spec.engine_plugin.smoke_request(loaded.spec)
    assert json.loads(check.body) == {"model": loaded.spec.model.path, "prompt": "Hakuna Matata", "max_tokens": 64,
                                      "temperature": 0}


def test_lmdeploy_defaults_serve_on_23333_in_eager_mode(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy", drop=("eager_mode",))  # (it sets no port)
    argv = loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan)
    assert "--eager-mode" in argv and "--server-port" not in argv
    # LMDeploy's own default cache share (0.8) is left to it, not passed.
    assert "--cache-max-entry-count" not in argv
    assert loaded.spec.engine_plugin.endpoint(loaded.spec) == "http://192.0.2.11:23333"


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_lmdeploy_passes_a_cache_share_above_or_below_its_default(share, tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy", engine={"cache_max_entry_count": share})
    argv = loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan)
    assert argv[argv.index("--cache-max-entry-count") + 1] == str(share)


@pytest.mark.parametrize(("port", "taken"), [("1", True), ("65535", True), ("0", False), ("65536", False),
                                              ("16667x", False)])
def test_lmdeploys_device_port_is_a_port_from_1_to_65535(port, taken, tmp_path):
    problems = problems_of(tmp_path, "tp16-lmdeploy", engine={"device_port": port})
    if taken:
        assert problems == []
    else:
        assert [p.key for p in problems] == [f"{NS}engine.device_port"]
        assert f"'{port}' is not a port" in problems[0].message


@pytest.mark.parametrize("port", [8123, 30000])
def test_lmdeploy_passes_a_port_below_or_above_its_default(port, tmp_path):
    loaded = loaded_case(tmp_path, "tp16-lmdeploy", engine={"port": port})
    argv = loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan)
    assert argv[argv.index("--server-port") + 1] == str(port)


def test_single_node_lmdeploy_may_leave_eager_mode(tmp_path):
    assert problems_of(tmp_path, "tp16-lmdeploy", nodes=1, parallel={"tp": 8}, model=SMALL_MODEL,
                       engine={"eager_mode": False}) == []


def profile_problems_on_300i_duo(tmp_path, stack: str, nodes: int, parallel: dict) -> list[Problem]:
    """The `hardware.profile` problems of `stack` on `nodes` 300I Duo servers: a 300I Duo has no
    RoCE fabric, so no device IPs and no HCCL TLS switch."""
    doc = load_stack_doc(stack)
    config = doc["config"]
    config[NS + "hardware"]["profile"] = "atlas-300i-duo"
    config[NS + "nodes"] = [{k: v for k, v in n.items() if k != "device_ips"} for n in config[NS + "nodes"][:nodes]]
    if NS + "network" in config:
        config[NS + "network"] = {k: v for k, v in config[NS + "network"].items() if k not in ("fix_tls", "hccl_tls")}
    config[NS + "parallel"].update(parallel)
    try:
        load_stack(str(write_stack(tmp_path, "case", doc)))
        return []
    except StackError as error:
        return [p for p in error.problems if p.key == f"{NS}hardware.profile"]


@pytest.mark.parametrize(("nodes", "refused"), [(2, True), (1, False)])
def test_mindie_multi_node_is_refused_on_300i_duo_servers(nodes, refused, tmp_path):
    named = profile_problems_on_300i_duo(tmp_path, "tp16-mindie", nodes, {"tp": 8 * nodes})
    assert len(named) == refused, [str(p) for p in named]
    if refused:
        assert "MindIE multi-node service does not run on atlas-300i-duo" in named[0].message


# --- GPUStack ----------------------------------------------------------------------
# Found by mutation testing: the stack file (dp4-ep32-gpustack) sets every key these
# defaults are for, so no test read a default.

def test_gpustack_without_server_enable_worker_runs_the_servers_built_in_worker(tmp_path):
    # Found by mutation testing: `server_enable_worker: bool = True` -> `False` passed every test.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack", drop=("server_enable_worker",))
    assert render_node(loaded, 0).container.command == ("--enable-worker", "--worker-name", "node0")
    assert [w["name"] for w in loaded.spec.engine_plugin.expected_workers(loaded.spec)] == [
        "node0", "node1", "node2", "node3"]


def test_gpustack_without_npu_memory_fraction_asks_mindie_for_runbook_002s_095(tmp_path):
    # Found by mutation testing: `npu_memory_fraction: float = 0.95` -> `1.95` passed every test.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack", drop=("npu_memory_fraction",))
    assert "--npu-memory-fraction=0.95" in loaded.spec.engine_plugin.backend_parameters(loaded.spec, loaded.plan)


def test_gpustack_without_replicas_deploys_one():
    # Found by mutation testing: `replicas: Count = 1` -> `0` passed every test (pydantic
    # does not check a default against `ge=1`; the model resource waits for no instance of 0).
    assert "replicas" not in load_stack_doc("dp4-ep32-gpustack")["config"][NS + "engine"]
    loaded = load_stack("dp4-ep32-gpustack")
    assert loaded.spec.engine_plugin.deployment_request(loaded.spec, loaded.plan)["replicas"] == 1


def test_gpustack_without_ascend_runtime_lists_the_npu_devices_as_runbook_002(tmp_path):
    # Found by mutation testing: `ascend_runtime: bool = False` -> `True` passed every test.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack", drop=("ascend_runtime",))
    server = render_node(loaded, 0).container
    assert server.runtime is None
    assert {f"/dev/davinci{d}" for d in range(8)} <= set(server.devices)


@pytest.mark.parametrize(("fraction", "refused"), [(1.0, False), (1.01, True), (0.0, True), (-0.5, True)])
def test_gpustacks_npu_memory_fraction_takes_1_and_nothing_above_or_at_0(fraction, refused, tmp_path):
    # Found by mutation testing: `0 < npu_memory_fraction <= 1` -> `< 1` and `0 !=` passed every test.
    problems = problems_of(tmp_path, "dp4-ep32-gpustack", engine={"npu_memory_fraction": fraction})
    assert [(p.key, p.message) for p in problems] == (
        [(f"{NS}engine.npu_memory_fraction", f"{fraction} is not in (0, 1]")] if refused else [])


@pytest.mark.parametrize(("nodes", "refused"), [(1, False), (2, True)])
def test_gpustack_on_300i_duo_servers_is_refused_across_nodes_only(nodes, refused, tmp_path):
    # Found by mutation testing: `len(spec.nodes) > 1` -> `> 0` passed every test (the one
    # fast test of the rule has four nodes).
    named = profile_problems_on_300i_duo(tmp_path, "dp4-ep32-gpustack", nodes, {"tp": 8, "dp": nodes, "ep": 8 * nodes})
    assert len(named) == refused, [str(p) for p in named]
    if refused:
        assert "GPUStack's distributed MindIE backend does not run on atlas-300i-duo" in named[0].message


@pytest.mark.parametrize("port", [8080, 79])
def test_gpustack_on_another_port_tells_the_server_and_the_workers(tmp_path, port):
    # Found by mutation testing: the server's `--port` only `if s.port != 80` -> `< 80`, `> 80`,
    # and the URL's `port == 80` -> `<= 80`, passed every test: no test rendered a GPUStack
    # server off runbook 002's port 80 in process.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack", engine={"port": port})
    server, worker = render_node(loaded, 0).container, render_node(loaded, 1).container
    assert server.command[:2] == ("--port", str(port))
    assert worker.command[:2] == ("--server-url", f"http://192.0.2.11:{port}")


def test_gpustacks_containers_run_detached_without_a_terminal_nor_the_stack_directory(tmp_path):
    # Found by mutation testing: `interactive=False` -> `True` and `stack_dir=False` -> `True`
    # passed every test. GPUStack's containers run no scripts of ours and read no env file.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack")
    for index in (0, 1):
        container = render_node(loaded, index).container
        assert container.interactive is False
        assert "-it" not in container.docker_run_argv()
        assert not [m.host for m in container.mounts if m.host.startswith("/etc/ascend-inference/")
                    or m.host.startswith("/var/run/ascend-inference/")], container.mounts


def test_gpustacks_smoke_request_is_the_one_docs_runbooks_md_names(tmp_path):
    # Found by mutation testing: `"max_tokens": 64` -> 65 passed every test. docs/runbooks.md,
    # runbook 002 step 6: `POST /v1/completions`, `"prompt": "I am"`, `max_tokens 64`.
    loaded = loaded_case(tmp_path, "dp4-ep32-gpustack")
    check = loaded.spec.engine_plugin.smoke_request(loaded.spec)
    assert (check.method, check.url) == ("POST", "http://192.0.2.11/v1/completions")
    assert json.loads(check.body) == {"model": "DeepSeek-R1", "prompt": "I am", "max_tokens": 64, "temperature": 0}


def test_gpustacks_model_deployment_file_is_the_text_docs_formats_md_shows():
    # Found by mutation testing: the file's `json.dumps(..., indent=2)` -> `indent=1`, `3`
    # passed every test (test_golden.py compares the parsed request, not its text).
    # docs/formats.md "5c. The create request" shows the file of this stack.
    formats = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")
    section = formats[formats.index("### 5c. The create request"):]
    shown = section[section.index("```json\n") + len("```json\n"):section.index("```\n", section.index("```json"))]
    files = render_node(load_stack("dp4-ep32-gpustack"), 0).files
    assert files["/etc/ascend-inference/dp4-ep32-gpustack/gpustack/model-deployment.json"] == shown


@pytest.mark.parametrize("image", ["gpustack/gpustack:latest", "gpustack/gpustack",
                                   "gpustack/gpustack@sha256:" + "0123456789abcdef" * 4])
def test_gpustack_takes_an_image_whose_tag_names_no_line(tmp_path, image):
    # Found by mutation testing: `image_line(...) == "0.x"` -> `<= "0.x"` passed every test
    # (it fails on the None of a tag that names no line).
    doc = load_stack_doc("dp4-ep32-gpustack")
    doc["config"][NS + "container"]["image"] = image
    assert load_stack(str(write_stack(tmp_path, "case", doc))).spec.container.image == image


@pytest.mark.parametrize("dp", [2, 3])
def test_gpustack_without_the_servers_worker_names_it_only_when_the_workers_have_too_few_npus(tmp_path, dp):
    # Found by mutation testing: `have < world and not server_enable_worker` -> `!=`, `<=`,
    # `is not` passed every test. tp 8 x dp 2 or 3 on four 8-NPU nodes is refused by the
    # parallel rule; the three workers' 24 NPUs are enough for it, so no line names the server.
    problems = problems_of(tmp_path, "dp4-ep32-gpustack", engine={"server_enable_worker": False},
                           parallel={"tp": 8, "dp": dp, "ep": 8 * dp})
    assert problems and not [p for p in problems if p.key == f"{NS}engine.server_enable_worker"], problems


def visible_devices_problems(tmp_path, **changes) -> list[str]:
    return [p.message for p in problems_of(tmp_path, "dp4-ep32-gpustack", **changes)
            if p.key == f"{NS}engine.visible_devices"]


@pytest.mark.parametrize("devices", [[0, 1, 2, 3, 4, 5, 6, 7, 7], [-1, 0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8]])
def test_gpustack_refuses_an_npu_listed_twice_or_below_0_in_visible_devices(tmp_path, devices):
    # Found by mutation testing: `bad or not visible or len(set(visible)) != len(visible)` ->
    # `... not visible and len(set(...)) ...` (nine devices, one twice), `0 <= d` -> `-1 <= d`
    # and `d < devices` -> `<=` passed every test.
    assert visible_devices_problems(tmp_path, engine={"visible_devices": devices}) == [
        f"{devices} is not a list of distinct NPU indices of atlas-800t-a2"]


def test_gpustacks_visible_devices_rule_counts_pipeline_stages_and_names_only_a_shortfall(tmp_path):
    # Found by mutation testing: `world = tp * dp * pp` -> `tp * dp // pp` and `have < world`
    # -> `have != world` passed every test. A pp of 2 is refused for GPUStack on its own
    # (topology.py), but the NPUs it needs are still counted; a tp x dp below the nodes' NPUs
    # is refused by the parallel rule alone, with no line on visible_devices.
    assert visible_devices_problems(tmp_path, engine={"visible_devices": [0, 1, 2, 3]},
                                    parallel={"tp": 4, "dp": 4, "pp": 2, "ep": 16}) == [
        "the deployment needs 32 NPUs but GPUStack's workers see 16"]
    assert visible_devices_problems(tmp_path, parallel={"tp": 8, "dp": 2, "ep": 16}) == []


# --- The rendered-file comparisons, rendered in process -------------------------------
# tests/test_golden.py holds every stack's rendered files against its runbook's verbatim
# text, test_vllm_ascend.py and test_vllm_ascend_ray.py against vllm-ascend's tutorial,
# test_render.py against the rules every rendered tree keeps; all read the `rendered`
# fixture, which renders through a `python -m ascendctl render` subprocess that the
# mutation run does not select. Each of their comparisons runs here again on the same
# files rendered in this process, each stack rendered when the comparison first asks for
# it (so each case runs only the engine code of the stacks it reads).

class RenderedHere(dict):
    """{stack: DIR}, as the `rendered` fixture, each stack rendered in process on first use."""

    def __init__(self, base: Path):
        super().__init__()
        self.base = base

    def __missing__(self, stack: str) -> Path:
        target = self.base / stack
        render_stack(load_stack(str(STACKS_DIR / f"Pulumi.{stack}.yaml")), target)
        self[stack] = target
        return target


# Those that check the CLI's own `render` (its subprocess is the point) are not repeated.
CLI_RENDER_TESTS = {"test_render_replaces_an_existing_directory_whole", "test_render_is_deterministic"}


def parameter_sets(function) -> list[dict]:
    """The argument sets a test's `parametrize` marks give it (one empty set without any)."""
    sets: list[dict] = [{}]
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize":
            argname, values = mark.args
            sets = [{**given, argname: value} for given in sets for value in values]
    return sets


def rendered_cases() -> list:
    """Each test of those modules that reads the `rendered` fixture, once per parameter set."""
    cases = []
    for module in (test_golden, test_render, test_vllm_ascend, test_vllm_ascend_ray):
        for name, function in sorted(vars(module).items()):
            if (not name.startswith("test_") or name in CLI_RENDER_TESTS
                    or "rendered" not in inspect.signature(function).parameters):
                continue
            sets = parameter_sets(function)
            label = module.__name__.rsplit(".", 1)[1]
            cases += [pytest.param(function, given, id=f"{label}.{name}[{'-'.join(map(str, given.values()))}]")
                      for given in sets]
    return cases


@pytest.mark.parametrize(("comparison", "given"), rendered_cases())
def test_rendered_file_comparison_on_files_rendered_in_process(comparison, given, tmp_path):
    (tmp_path / "rendered").mkdir()
    if "tmp_path" in inspect.signature(comparison).parameters:
        given = {**given, "tmp_path": tmp_path / "own"}
        given["tmp_path"].mkdir()
    comparison(RenderedHere(tmp_path / "rendered"), **given)


# --- The CLI's refusals and renders, run in process ----------------------------------
# test_spec_errors.py (one bad stack per rule), test_vllm_ascend.py, test_vllm_ascend_ray.py,
# test_mindie_tls.py, test_endpoint_auth.py and test_ray_auth.py run `python -m ascendctl` in
# a subprocess, which the mutation run does not select. Their tests run here again with the
# same command line given to the CLI's `main` in this process (what `python -m ascendctl`
# runs), so an engine rule they hold is held in a selected test too.

def run_cli_here(*args, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """run_cli's result, from `ascendctl.cli.main` in this process (`env`: none of these tests pass one)."""
    assert env is None, "an environment for the CLI is run_cli's subprocess only"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's usage error
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(["python3", "-m", "ascendctl", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())


@pytest.mark.parametrize("case", test_spec_errors.CASES, ids=[c.id for c in test_spec_errors.CASES])
def test_bad_stack_is_refused_clearly_in_process(case, tmp_path):
    stack, file = test_spec_errors.prepare(case, tmp_path)
    result = run_cli_here("validate", "--stack", stack, *case.args)
    test_spec_errors.test_bad_stack_is_refused_clearly({case.id: (file, result)}, case)


def runs_the_cli(module, function) -> bool:
    """Whether `function` calls run_cli, itself or through a function of its module, and not
    for `preview` (which runs the Pulumi program: the graph tier's, not repeated here)."""
    if '"preview"' in inspect.getsource(function):
        return False
    named = [getattr(module, name, None) for name in function.__code__.co_names]
    return "run_cli" in function.__code__.co_names or any(
        inspect.isfunction(f) and f.__module__ == module.__name__ and "run_cli" in f.__code__.co_names for f in named)


def cli_cases() -> list:
    """Each test of those modules that runs the CLI and needs no fixture but tmp_path, once per parameter set."""
    cases = []
    for module in (test_vllm_ascend, test_vllm_ascend_ray, test_mindie_tls, test_endpoint_auth, test_ray_auth):
        for name, function in sorted(vars(module).items()):
            if not name.startswith("test_") or not callable(function):
                continue
            sets = parameter_sets(function)
            wanted = set(inspect.signature(function).parameters) - set(sets[0])
            if wanted - {"tmp_path"} or not runs_the_cli(module, function):
                continue
            label = module.__name__.rsplit(".", 1)[1]
            cases += [pytest.param(module, function, given, id=f"{label}.{name}[{'-'.join(map(str, given.values()))}]")
                      for given in sets]
    return cases


@pytest.mark.parametrize(("module", "test", "given"), cli_cases())
def test_cli_test_run_in_process(module, test, given, tmp_path, monkeypatch):
    monkeypatch.setattr(module, "run_cli", run_cli_here)
    if "tmp_path" in inspect.signature(test).parameters:
        given = {**given, "tmp_path": tmp_path}
    test(**given)


# --- vllm-ascend and vLLM-MindSpore -------------------------------------------------

# The values the committed stacks spell out that are also the settings' defaults: the
# tutorial's (vllm-ascend 0.23.0.post1 DeepSeek-R1.md §5.2; ray.md's Ray port) and runbook 000's.
VLLM_ASCEND_TUTORIAL_VALUES = ("data_parallel_rpc_port", "quantization", "seed", "max_num_seqs", "max_model_len",
                               "max_num_batched_tokens", "gpu_memory_utilization")
VLLM_MINDSPORE_RUNBOOK_VALUES = ("ray_port", "max_num_seqs", "max_model_len", "max_num_batched_tokens",
                                 "block_size", "gpu_memory_utilization", "mindformers_model_config")


@pytest.mark.parametrize(("stack", "values"), [("dp2-tp8-ep16-vllm-ascend", VLLM_ASCEND_TUTORIAL_VALUES),
                                               ("tp16-vllm-ascend-ray", ("ray_port",)),
                                               ("tp16-vllm-mindspore", VLLM_MINDSPORE_RUNBOOK_VALUES)])
def test_vllm_engines_defaults_are_the_values_their_stacks_spell_out(stack, values, tmp_path):
    (tmp_path / "spelled").mkdir()
    (tmp_path / "defaults").mkdir()
    spelled_out = loaded_case(tmp_path / "spelled", stack)
    defaults = loaded_case(tmp_path / "defaults", stack, drop=values)
    assert rendered_text(defaults) == rendered_text(spelled_out)


@pytest.mark.parametrize("port", [7999, 8001])
def test_vllm_mindspore_passes_a_port_below_or_above_vllms_8000(port, tmp_path):
    loaded = loaded_case(tmp_path, "tp16-vllm-mindspore", engine={"port": port})
    assert f"--port={port}" in loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan)


@pytest.mark.parametrize("stack", ["dp2-tp8-ep16-vllm-ascend", "tp16-vllm-mindspore"])
@pytest.mark.parametrize(("share", "refused"), [(1.0, False), (1.01, True), (0.0, True), (-0.5, True)])
def test_vllm_engines_take_a_memory_share_in_0_to_1(stack, share, refused, tmp_path):
    problems = problems_of(tmp_path, stack, engine={"gpu_memory_utilization": share})
    assert [p.key for p in problems] == ([f"{NS}engine.gpu_memory_utilization"] if refused else [])


@pytest.mark.parametrize(("engine", "refused"), [
    ({"max_num_seqs": 256, "max_num_batched_tokens": 256}, False),   # vLLM: at least max_num_seqs
    ({"max_num_seqs": 256, "max_num_batched_tokens": 255}, True),
    ({"max_num_seqs": 16, "max_num_batched_tokens": 128}, False),    # at least block_size (128)
    ({"max_num_seqs": 16, "max_num_batched_tokens": 127}, True),
])
def test_vllm_mindspore_batched_tokens_rules_at_their_bounds(engine, refused, tmp_path):
    problems = problems_of(tmp_path, "tp16-vllm-mindspore", engine=engine)
    assert [p.key for p in problems] == ([f"{NS}engine.max_num_batched_tokens"] if refused else [])


def test_vllm_ascend_names_dp_ranks_that_do_not_divide_over_the_nodes_even_when_a_share_fills_a_node(tmp_path):
    # 3 nodes, dp 4 x tp 8: dp // nodes x tp is 8 NPUs, but 4 DP ranks do not split over 3 nodes.
    problems = problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", nodes=3, parallel={"tp": 8, "dp": 4, "ep": 1})
    assert [p.key for p in problems] == [f"{NS}parallel", f"{NS}parallel.dp"]
    assert "dp 4 x tp 8 does not put the same whole DP ranks on each of the 3 nodes' 8 NPUs" in problems[1].message


def problems_of_container(tmp_path: Path, stack: str, container: dict) -> list[Problem]:
    doc = load_stack_doc(stack)
    doc["config"][NS + "container"].update(container)
    try:
        load_stack(str(write_stack(tmp_path, "case", doc)))
    except StackError as error:
        return error.problems
    return []


@pytest.mark.parametrize("declared", ["0.18.0", "0.24.0"])
def test_vllm_ascend_refuses_a_release_either_side_of_its_pinned_one(declared, tmp_path):
    problems = problems_of_container(tmp_path, "dp2-tp8-ep16-vllm-ascend", {"engine_version": declared})
    assert [p.key for p in problems] == [f"{NS}container.engine_version"]
    assert f"vllm-ascend {declared} is outside this program's window" in problems[0].message


def test_vllm_ascend_quotes_dp_times_tp_as_the_expert_parallel_size(tmp_path):
    problems = problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", parallel={"ep": 8})
    assert [p.key for p in problems] == [f"{NS}parallel.ep"]
    assert "vLLM spreads experts over all DP x TP = 16 ranks" in problems[0].message


def test_vllm_ascend_starts_each_nodes_dp_ranks_after_the_previous_nodes(tmp_path):
    # The tutorial's DP4 x TP4 on two nodes: two local ranks each, node 1 starting at rank 2.
    loaded = loaded_case(tmp_path, "dp2-tp8-ep16-vllm-ascend", parallel={"tp": 4, "dp": 4, "ep": 16})
    argv = loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan, 1)
    assert argv[argv.index("--data-parallel-size-local") + 1] == "2"
    assert argv[argv.index("--data-parallel-start-rank") + 1] == "2"


@pytest.mark.parametrize(("tp", "dp"), [(8, 4), (4, 2)])
def test_vllm_ascend_names_dp_ranks_that_fill_more_or_less_than_each_node(tp, dp, tmp_path):
    # Two nodes: dp 4 x tp 8 puts 16 NPUs' ranks on each 8-NPU node, dp 2 x tp 4 only 4.
    problems = problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", parallel={"tp": tp, "dp": dp, "ep": 1})
    assert [p.key for p in problems] == [f"{NS}parallel", f"{NS}parallel.dp"]


@pytest.mark.parametrize("ep", [2, 32])
def test_vllm_ascend_refuses_an_expert_parallel_below_or_above_its_16_ranks(ep, tmp_path):
    # (ep 32 is also beyond the world, which the topology names under the same key)
    problems = problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", parallel={"ep": ep})
    engines = [p for p in problems if p.message.startswith(f"ep {ep}: with --enable-expert-parallel vLLM")]
    assert [p.key for p in engines] == [f"{NS}parallel.ep"]


def test_vllm_ascend_compares_ep_with_dp_times_tp_by_value_above_256_too(tmp_path):
    # 33 nodes, dp 33 x tp 8 = ep 264 (a model of 528 experts, so that ep divides them).
    assert problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", nodes=33, parallel={"tp": 8, "dp": 33, "ep": 264},
                       model={"experts": 528}) == []


def test_vllm_ascend_takes_an_option_value_as_its_own_argument_and_any_non_vllm_variable(tmp_path):
    # Only `-`-led arguments are option names, only VLLM_* variables are vLLM's to read.
    assert problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend",
                       engine={"extra_args": ["--max-num-seqs", "8"], "env": {"HCCL_BUFFSIZE": "300"}}) == []


def test_vllm_ascend_refuses_an_empty_served_model_name(tmp_path):
    problems = problems_of(tmp_path, "dp2-tp8-ep16-vllm-ascend", engine={"served_model_name": ""})
    assert [p.key for p in problems] == [f"{NS}engine.served_model_name"]


def test_vllm_mindspores_smoke_request_is_runbook_000s_completion(tmp_path):
    # Runbook 000 (docs/runbooks.md): "I am", max_tokens 120, greedy sampling.
    loaded = loaded_case(tmp_path, "tp16-vllm-mindspore")
    check = loaded.spec.engine_plugin.smoke_request(loaded.spec)
    assert check.url.endswith(":8000/v1/completions")
    assert json.loads(check.body) == {"model": loaded.spec.model.path, "prompt": "I am", "max_tokens": 120,
                                      "temperature": 0, "top_p": 1.0, "top_k": 1, "repetition_penalty": 1.0}


def test_vllm_ascends_smoke_request_is_the_tutorials_completion(tmp_path):
    # vllm-ascend's DeepSeek-R1 tutorial, §6 "Functional Verification".
    loaded = loaded_case(tmp_path, "dp2-tp8-ep16-vllm-ascend")
    check = loaded.spec.engine_plugin.smoke_request(loaded.spec)
    assert check.url.endswith(":8000/v1/completions")
    assert json.loads(check.body) == {"model": "deepseek_r1", "prompt": "The future of AI is",
                                      "max_completion_tokens": 50, "temperature": 0}


@pytest.mark.parametrize(("prompt", "refused"), [("", True), ("I", False)])
def test_vllm_mindspore_refuses_an_empty_smoke_prompt_only(prompt, refused, tmp_path):
    problems = problems_of(tmp_path, "tp16-vllm-mindspore", engine={"smoke_prompt": prompt})
    assert [p.key for p in problems] == ([f"{NS}engine.smoke_prompt"] if refused else [])


@pytest.mark.parametrize(("release", "era"), [("0.4.0", "vllm-mindspore 0.4.0 or later"),
                                              ("0.3.9", "vllm-mindspore before 0.4.0"),
                                              (None, "vllm-mindspore before 0.4.0")])
def test_vllm_mindspores_env_names_change_at_0_4_0_itself(release, era, tmp_path):
    # The image check compares an image's era with the rendered env's (images.py, check_images).
    plugin = loaded_case(tmp_path, "tp16-vllm-mindspore").spec.engine_plugin
    assert plugin.env_era(release) == era


@pytest.mark.parametrize(("engine", "key"), [
    ({"block_size": 100}, "block_size"),                                           # not one of vLLM's choices
    ({"max_num_seqs": 16, "max_num_batched_tokens": 64}, "max_num_batched_tokens"),  # below block_size 128
    ({"max_num_seqs": 512, "max_num_batched_tokens": 256}, "max_num_batched_tokens"),  # below max_num_seqs
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
])
def test_vllm_mindspores_settings_rules_come_before_the_memory_fit(engine, key, tmp_path):
    # Checked before the plan exists: a model too large for the nodes does not hide them.
    problems = problems_of(tmp_path, "tp16-vllm-mindspore", engine=engine, model={"parameters_b": 5000})
    assert [p.key for p in problems] == [f"{NS}engine.{key}"]


def test_vllm_mindspore_writes_the_predict_yaml_under_its_own_name_and_mounts_it_read_only(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-vllm-mindspore", engine={"write_mindformers_yaml": True})
    node = render_node(loaded, 0)
    on_host = "/etc/ascend-inference/case/mindformers/predict_deepseek_r1_671b_w8a8.yaml"
    assert on_host in node.files
    [mount] = [m for m in node.container.mounts if m.host == on_host]
    assert (mount.container, mount.read_only) == (
        "/path/to/research/deepseek3/deepseek_r1_671b/predict_deepseek_r1_671b_w8a8.yaml", True)


@pytest.mark.parametrize(("backend", "checked"), [
    ("MindFormers", True),
    # vllm-mindspore's other backend before 0.4.0 (`vLLM_MODEL_BACKEND=MindOne`, its
    # run_vllm_mindone.sh), and the later docs' name for MindFormers (`MINDFORMER_MODELS`,
    # mindspore-ai/docs vllm_mindspore models_list.md), which a release before 0.4.0 does not
    # take for it: neither reads the predict yaml. (One sorts above "MindFormers", one below.)
    ("MindOne", False), ("MINDFORMER_MODELS", False)])
def test_vllm_mindspore_looks_for_the_predict_yaml_under_the_mindformers_backend_only(backend, checked, tmp_path):
    loaded = loaded_case(tmp_path, "tp16-vllm-mindspore", engine={"model_backend": backend})
    script = render_node(loaded, 0).scripts.container_check
    assert script is not None
    assert ("python3 - 1 MINDFORMERS_MODEL_CONFIG <<" in script.text) is checked
    assert ("python3 - 1 <<" in script.text) is not checked
