"""Pure tier: engines are closed plugins.

Every engine-specific choice is a hook of the engine's plugin class, so the
renderer and the program never compare engine kinds, and an engine that sets
a hook differently gets different scripts without any other module knowing
its name. (The emulator's stand-ins are left out of the scan: they imitate
the engines' own binaries, not the plugins.)
"""
from __future__ import annotations

import ast
import json
import textwrap
import typing
from pathlib import Path

import pydantic
import pytest

from ascend_inference import engines
from ascend_inference.engines import ENGINES
from ascend_inference.engines.base import (
    CONFIG_KEY,
    ClusterStyle,
    Count,
    EnginePlugin,
    Port,
    RankTableOptions,
    Seconds,
    apply_env_overrides,
    config_key_for,
)
from ascend_inference.render import check_rank_table, declared_device_ips, plan_document, rank_table, render_node
from ascend_inference.spec import EngineSettings
from ascend_inference.stackfile import load_stack

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("ascend_inference", "components", "ascendctl")
ENGINES_DIR = ROOT / "ascend_inference" / "engines"


def _names_a_kind(node: ast.AST, kinds) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in kinds
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_kind(element, kinds) for element in node.elts)
    return False


def kind_branches(source: str, kinds) -> list[int]:
    """Lines that compare something to an engine kind (`==`, `!=`, `in`,
    `match`/`case`) or dispatch on one through a dict keyed by kinds."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_a_kind(o, kinds) for o in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_a_kind(node.value, kinds):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and _names_a_kind(k, kinds) for k in node.keys):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_engine_kind_is_compared_outside_the_engine_modules():
    files = [p for package in SCANNED for p in sorted((ROOT / package).rglob("*.py"))
             if ENGINES_DIR not in p.parents]
    assert any(p.name == "render.py" for p in files) and any(p.name == "deployment.py" for p in files)
    found = [f"{p.relative_to(ROOT)}:{line}" for p in files
             for line in kind_branches(p.read_text(encoding="utf-8"), set(ENGINES))]
    assert not found, ("engine kinds compared outside ascend_inference/engines/ (make it a hook of the plugin "
                       "class instead): " + ", ".join(found))


def test_the_scan_finds_each_form_of_kind_branch():
    source = textwrap.dedent('''
        if engine.kind == "mindie":
            pass
        flag = kind in ("lmdeploy", "other")
        match kind:
            case "gpustack":
                pass
        table = {"vllm-mindspore": 1}
        fine = error.kind == "missing"
    ''')
    assert kind_branches(source, set(ENGINES)) == [2, 4, 6, 8]


def test_every_registered_engine_is_a_complete_plugin():
    assert set(ENGINES) == {"vllm-mindspore", "mindie", "lmdeploy", "gpustack", "vllm-ascend"}
    for kind, plugin in ENGINES.items():
        assert isinstance(plugin, EnginePlugin) and plugin.kind == kind
        assert isinstance(plugin.cluster_style, ClusterStyle), f"{kind} declares no cluster_style"
    assert not hasattr(EnginePlugin, "cluster_style"), "no default: every engine chooses its cluster style"
    # Every engine module in the directory is registered (engines/__init__.py)
    # under its plugin's kind, and nothing else is.
    modules = {p.stem for p in ENGINES_DIR.glob("*.py")} - {"__init__", "base"}
    assert {m: getattr(engines, m).PLUGIN for m in modules} == {
        type(plugin).__module__.rsplit(".", 1)[-1]: plugin for plugin in ENGINES.values()}


def test_the_spec_accepts_exactly_the_registered_engines_settings():
    """spec.EngineSettings names the settings models one by one (so type
    checkers see each engine's fields); it must list ENGINES' models, in order."""
    union, discriminator = typing.get_args(EngineSettings)
    assert typing.get_args(union) == tuple(plugin.settings_model for plugin in ENGINES.values())
    assert discriminator.discriminator == "kind"


# --- each hook, as the five stacks use it ----------------------------------

@pytest.fixture(scope="module")
def stacks():
    return {name: load_stack(name) for name in
            ("tp16-vllm-mindspore", "tp16-mindie", "dp4-ep32-gpustack", "tp16-lmdeploy", "dp2-tp8-ep16-vllm-ascend")}


def test_rank_table_options_per_engine(stacks):
    mindie, lmdeploy = stacks["tp16-mindie"], stacks["tp16-lmdeploy"]
    # MindIE-LLM's ranktable_config.cpp and LMDeploy's ray_executor.py (docs/formats.md §3e).
    assert mindie.spec.engine_plugin.rank_table_options(mindie.spec) == RankTableOptions(
        engine="mindie", container_ip=True, server_count_range=(2, 60), max_devices_per_server=32,
        server_count_required=True, same_devices_per_server=True, single_device_ip=True, max_rank_id=511,
        rank_zero_as_text=True, container_ip_finds_the_server=True)
    assert lmdeploy.spec.engine_plugin.rank_table_options(lmdeploy.spec) == RankTableOptions(
        engine="lmdeploy", device_port=lmdeploy.spec.engine.device_port, first_server_is_master=True,
        ranks_follow_the_listing=True)
    mindie_table = rank_table(mindie, declared_device_ips(mindie))
    lmdeploy_table = rank_table(lmdeploy, declared_device_ips(lmdeploy))
    assert all("container_ip" in s for s in mindie_table["server_list"])
    assert not any("device_port" in d for s in mindie_table["server_list"] for d in s["device"])
    assert not any("container_ip" in s for s in lmdeploy_table["server_list"])
    assert {d["device_port"] for s in lmdeploy_table["server_list"] for d in s["device"]} == {"16667"}
    # Validation follows the same option: MindIE refuses a table without container_ip.
    stripped = json.loads(json.dumps(mindie_table))
    for server in stripped["server_list"]:
        del server["container_ip"]
    assert check_rank_table(mindie, mindie_table, "t") == []
    assert any("container_ip" in str(p) for p in check_rank_table(mindie, stripped, "t"))
    assert check_rank_table(lmdeploy, lmdeploy_table, "t") == []


def test_cluster_style_per_engine(stacks):
    styles = {name: loaded.spec.engine_plugin.cluster_style for name, loaded in stacks.items()}
    assert styles == {"tp16-vllm-mindspore": ClusterStyle.RAY, "tp16-mindie": ClusterStyle.RANK_TABLE,
                      "dp4-ep32-gpustack": ClusterStyle.GPUSTACK, "tp16-lmdeploy": ClusterStyle.RAY,
                      "dp2-tp8-ep16-vllm-ascend": ClusterStyle.ENGINE_PEERS}
    for loaded in stacks.values():
        assert plan_document(loaded)["cluster"] == loaded.spec.engine_plugin.cluster_style.value


# --- a new engine is only a module: the renderer follows its hooks --------------

class _Variant(type(ENGINES["vllm-mindspore"])):
    """vLLM-MindSpore with every hook set the other way."""

    weights_mode = "700"
    smoke_template = "gpustack-smoke.sh.j2"

    def pre_start(self, ctx):
        return [f"echo prepared {ctx.node.name}"]

    def smoke_context(self, spec):
        return {"server_url": "http://variant.example"}


def test_render_follows_the_hooks_not_the_kind(stacks, monkeypatch):
    loaded = stacks["tp16-vllm-mindspore"]
    before = [render_node(loaded, i) for i in range(2)]
    monkeypatch.setitem(ENGINES, "vllm-mindspore", _Variant())
    after = [render_node(loaded, i) for i in range(2)]

    assert "chmod -R" not in before[0].scripts.weights.text
    assert "chmod -R 700 \"$MODEL\"" in after[0].scripts.weights.text
    assert "echo prepared node0" in after[0].scripts.serve_start.text
    assert "server=http://variant.example" in after[0].scripts.smoke.text
    assert "gs_login" in after[0].scripts.smoke.text and "gs_login" not in before[0].scripts.smoke.text
    # Nothing else moved: the other scripts are the same text.
    changed = {"weights", "serve-start", "smoke"}
    assert ([s for s in after[0].scripts.present() if s.name not in changed]
            == [s for s in before[0].scripts.present() if s.name not in changed])


def test_engine_env_overrides_replace_in_place_add_at_the_end_and_null_drops():
    """`engine.env`: a variable the engine sets is replaced where it stands (once), a new one is
    added at the end, null drops one the engine sets and adds nothing for one it does not.
    Found by mutation testing: the added ones' `and` -> `or` (a replaced variable written twice,
    a null one added) passed every test."""
    variables = [("HCCL_IF_IP", "10.0.0.1"), ("OMP_NUM_THREADS", "1"), ("HCCL_BUFFSIZE", "200")]
    overrides = {"OMP_NUM_THREADS": "4", "HCCL_BUFFSIZE": None, "HCCL_CONNECT_TIMEOUT": "7200", "UNSET_ONE": None}
    assert apply_env_overrides(variables, overrides) == [
        ("HCCL_IF_IP", "10.0.0.1"), ("OMP_NUM_THREADS", "4"), ("HCCL_CONNECT_TIMEOUT", "7200")]


@pytest.mark.parametrize("name, key", [("HF_TOKEN", "hfToken"), ("hf-token", "hfToken"),
                                       ("_2FA_TOKEN", "env2faToken"), ("__", "secret")])
def test_the_suggested_secret_key_is_a_config_key_named_after_the_variable(name, key):
    """The key a credential's fix suggests (`secret_env: {HF_TOKEN: hfToken}`). Found by mutation
    testing: the digit-first case's `"env" + ...` -> `%`, `^` passed every test (no test gave a
    variable whose first word starts with a digit); its suggestion was `env2fatoken` then, the
    words' capitals lost."""
    assert config_key_for(name) == key and CONFIG_KEY.match(key)


@pytest.mark.parametrize("kind, top", [(Count, 2**31 - 1), (Seconds, 7 * 24 * 3600), (Port, 65535)])
def test_the_settings_number_types_take_their_top_and_refuse_one_more(kind, top):
    """A count fits the engines' 32-bit ints; a wait is at most a week; a port at most 65535.
    Found by mutation testing: `2**31 - 1` -> `2**31 / 1`, `| 1` and `7 * 24 * 3600` -> `7 * 24 **
    3600` passed every test (no test gave a value at a bound)."""
    adapter = pydantic.TypeAdapter(kind)
    assert adapter.validate_python(top) == top and adapter.validate_python(1) == 1
    for refused in (top + 1, 0):
        with pytest.raises(pydantic.ValidationError):
            adapter.validate_python(refused)
