"""Pure tier: `validate` refuses what an engine of the declared release
refuses at start, one problem per rule, in the engine's own words where it
has them (docs/formats.md §4d cites each rule's source), and knows which
release each stack is rendered for (docs/engine-versions.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ascend_inference.engines.base import VersionWindow
from ascend_inference.errors import Problem, StackError
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from tests.conftest import NS, STACKS, load_stack_doc, write_stack

pytestmark = pytest.mark.pure


def problems_of(tmp_path: Path, stack: str, *, container: dict | None = None, engine: dict | None = None,
                drop: tuple[str, ...] = ()) -> list[Problem]:
    doc = load_stack_doc(stack)
    config = doc["config"]
    config[NS + "container"].update(container or {})
    config[NS + "engine"].update(engine or {})
    for key in drop:
        section, name = key.split(".")
        config[NS + section].pop(name)
    try:
        load_stack(str(write_stack(tmp_path, "case", doc)))
    except StackError as error:
        return error.problems
    return []


def one(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    assert "Traceback" not in str(problems[0]) and problems[0].fix
    return problems[0]


@pytest.mark.parametrize("stack", STACKS)
def test_the_shipped_stacks_pass(stack, tmp_path):
    assert problems_of(tmp_path, stack) == []


# --- item 1: the engine version ----------------------------------------------------

@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp8-pp2-300iduo"])
def test_vllm_mindspore_needs_its_version(stack, tmp_path):
    problem = one(problems_of(tmp_path, stack, drop=("container.engine_version",)))
    assert problem.key == f"{NS}container.engine_version"
    assert "names no vllm-mindspore version" in problem.message and "0.4.0 renamed its env" in problem.message


def test_multi_node_lmdeploy_needs_its_version_and_latest_names_none(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-lmdeploy", drop=("container.engine_version",), container={
        "image": "crpi-4crprmm5baj1v8iv.cn-hangzhou.personal.cr.aliyuncs.com/lmdeploy_dlinfer/ascend:a2-latest"}))
    assert problem.key == f"{NS}container.engine_version"
    assert "only from 0.8.0 up to 0.14.x" in problem.message


def test_the_image_tag_gives_the_version_when_it_names_one(tmp_path):
    assert problems_of(tmp_path, "tp16-lmdeploy", drop=("container.engine_version",)) == []


@pytest.mark.parametrize("version", ["0.15.0", "0.16.0", "0.7.2"])
def test_multi_node_lmdeploy_outside_its_window_is_refused_with_the_fix(version, tmp_path):
    problem = one(problems_of(tmp_path, "tp16-lmdeploy", container={"engine_version": version,
                                                                    "image": "lmdeploy_dlinfer:a2"}))
    assert problem.key == f"{NS}container.engine_version"
    assert problem.message.startswith(f"lmdeploy {version} is outside 0.8.0 to 0.14.x, the releases multi-node "
                                      "LMDeploy on Ascend over the HCCL rank table needs")
    assert "e1b73cd1" in problem.message
    assert problem.fix.startswith("use an image with lmdeploy 0.8.0 to 0.14.x")


def test_a_window_broken_by_the_image_tag_is_reported_on_the_image(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-lmdeploy", drop=("container.engine_version",),
                              container={"image": "lmdeploy_dlinfer:a2-v0.15.0"}))
    assert problem.key == f"{NS}container.image" and "lmdeploy 0.15.0 is outside" in problem.message


def test_a_single_node_lmdeploy_needs_no_rank_table_window():
    # (one 800T A2 cannot hold R1's weights, so the rule is asked of the engine directly)
    spec = load_stack("tp16-lmdeploy").spec
    single = spec.model_copy(update={"nodes": spec.nodes[:1]})
    plugin = spec.engine_plugin
    assert plugin.version_refusal(single, "0.16.0") is None and plugin.version_matters(single) == ""
    assert plugin.version_refusal(spec, "0.16.0") is not None and plugin.version_matters(spec)


def test_a_declared_version_must_agree_with_the_image_tag(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-lmdeploy", container={"engine_version": "0.13.0"}))
    assert problem.message == "0.13.0, but the image tag 'a2-v0.14.0' names lmdeploy 0.14.0"


@pytest.mark.parametrize("image,expected", [
    ("mindie:latest", "is not set and the image tag 'latest' names no MindIE version"),
    ("mindie:1.0.RC3-800I-A2-py311", "MindIE 1.0.RC3 is outside 2.0 or later"),
])
def test_mindie_needs_a_2_x_release(image, expected, tmp_path):
    problem = one(problems_of(tmp_path, "tp16-mindie", container={"image": image},
                              drop=("container.image_tar",)))
    assert expected in problem.message, problem


def test_the_shipped_mindie_stacks_take_their_version_from_the_tag():
    assert load_stack("tp16-mindie").spec.engine_plugin.engine_version(load_stack("tp16-mindie").spec) == \
        "2.0.T9.B020"
    a3 = load_stack("tp32-a3-mindie").spec
    assert a3.engine_plugin.engine_version(a3) == "2.1.RC1"


def test_runbook_003s_stack_carries_the_0_4_env_and_no_yaml():
    loaded = load_stack("tp8-pp2-300iduo")
    node = render_node(loaded, 0)
    env = node.env.as_dict()
    assert env["VLLM_MS_MODEL_BACKEND"] == "MindFormers"
    assert "vLLM_MODEL_BACKEND" not in env and "MINDFORMERS_MODEL_CONFIG" not in env
    assert not any("mindformers" in path for path in node.files)


# --- item 2: each engine's own rules --------------------------------------------------

@pytest.mark.parametrize("dtype", ["fp16", "FP16", "bf16", "int8"])
def test_vllm_refuses_a_dtype_outside_its_choices(dtype, tmp_path):
    problem = one(problems_of(tmp_path, "tp8-pp2-300iduo", engine={"dtype": dtype}))
    assert problem.key == f"{NS}engine.dtype"
    assert f"argument --dtype: invalid choice: '{dtype}' (choose from 'auto', 'half', 'float16', 'bfloat16', " \
           "'float', 'float32')" in problem.message


@pytest.mark.parametrize("dtype", ["auto", "half", "float16", "bfloat16", "float", "float32"])
def test_vllm_takes_its_dtypes(dtype, tmp_path):
    assert problems_of(tmp_path, "tp8-pp2-300iduo", engine={"dtype": dtype}) == []


@pytest.mark.parametrize("version,size,refused", [
    ("0.3.0", 100, "(choose from 8, 16, 32, 64, 128)"),
    ("0.3.0", 1, "(choose from 8, 16, 32, 64, 128)"),
    ("0.4.0", 100, "(choose from 1, 8, 16, 32, 64, 128)"),
    ("0.4.0", 1, None),
    ("0.3.0", 64, None),
])
def test_vllm_block_size_choices_follow_the_release(version, size, refused, tmp_path):
    problems = problems_of(tmp_path, "tp16-vllm-mindspore", container={"engine_version": version},
                           engine={"block_size": size, "max_num_batched_tokens": 4096})
    if refused is None:
        assert problems == []
        return
    problem = one(problems)
    assert problem.key == f"{NS}engine.block_size"
    assert f"\"argument --block-size: invalid choice: {size} {refused}\"" in problem.message
    vllm = {"0.3.0": "0.8.3", "0.4.0": "0.9.1"}[version]
    assert problem.message.startswith(f"vLLM {vllm} (under vllm-mindspore {version}) refuses it at start")


def test_vllm_refuses_fewer_batched_tokens_than_sequences(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-vllm-mindspore",
                              engine={"max_num_seqs": 512, "max_num_batched_tokens": 256}))
    assert problem.key == f"{NS}engine.max_num_batched_tokens"
    assert "max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512)" in problem.message


@pytest.mark.parametrize("stack,flag", [("tp16-vllm-mindspore", "--enable-prefix-caching"),
                                        ("tp8-pp2-300iduo", "--no-enable-prefix-caching")])
def test_prefix_caching_is_said_either_way(stack, flag):
    """vLLM's V0 engine (vLLM 0.7, vllm-mindspore 0.2) has prefix caching
    off by default: `enable_prefix_caching: true` must say so on the line."""
    loaded = load_stack(stack)
    argv = loaded.spec.engine_plugin.serve_argv(loaded.spec, loaded.plan)  # type: ignore[attr-defined]
    assert flag in argv
    assert {"--enable-prefix-caching", "--no-enable-prefix-caching"} - {flag} & set(argv) == set()


def test_mindie_refuses_fewer_prefill_tokens_than_input_tokens(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-mindie", engine={"max_prefill_tokens": 8192}))
    assert problem.key == f"{NS}engine.max_prefill_tokens"
    assert "\"The value of maxPrefillTokens should not be less than maxInputTokenLen.\"" in problem.message
    assert problem.fix == "set max_prefill_tokens to at least 16384 (runbook 001 uses 16384 for both)"


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1])
def test_lmdeploy_refuses_a_cache_share_outside_0_1(share, tmp_path):
    problem = one(problems_of(tmp_path, "tp16-lmdeploy", engine={"cache_max_entry_count": share}))
    assert problem.key == f"{NS}engine.cache_max_entry_count"
    assert "\"invalid cache_max_entry_count\"" in problem.message


# --- the unknown-key suggestion ---------------------------------------------------

def test_another_engines_setting_is_named_as_such_not_matched_to_a_look_alike(tmp_path):
    """The README's day-2 example set `engine.max_num_seqs` on tp16-mindie; the
    suggestion offered was `max_seq_len`, another setting entirely."""
    problem = one(problems_of(tmp_path, "tp16-mindie", engine={"max_num_seqs": 128}))
    assert problem.key == f"{NS}engine.max_num_seqs"
    assert "max_seq_len" not in problem.message and "did you mean" not in problem.fix
    assert problem.message == "unknown key: max_num_seqs is a setting of engine kinds vllm-mindspore, " \
                              "vllm-ascend, not of this stack's engine"
    assert problem.fix.startswith("remove it; this engine's keys: ") and "max_batch_size" in problem.fix


def test_a_misspelling_still_gets_its_suggestion(tmp_path):
    problem = one(problems_of(tmp_path, "tp16-mindie", engine={"max_batch_sise": 100}))
    assert problem.fix == "did you mean 'max_batch_size'?"


@pytest.mark.parametrize("low, below, said", [
    ((0, 8, 0), (0, 15, 0), "0.8.0 to 0.14.x"),                        # the usual form: the last line before
    ((0, 8, 0), (0, 15), "0.8.0 to 0.14.x"),
    ((0, 8, 0), (0, 15, 1), "0.8.0 up to (not including) 0.15.1"),      # a patch release: no "x" line
    ((0, 9, 0), (1, 0, 0), "0.9.0 up to (not including) 1.0.0"),        # minor 0: no line "1.-1.x"
    ((2, 0), (2, 4), "2.0 to 2.3.x"),                                   # an even minor: 4 - 1, not 4 ^ 1
    ((2, 0), (2, 1), "2.0 to 2.0.x"),                                   # minor 1, the smallest with a line before
    ((1,), (2,), "1 up to (not including) 2"),                          # a bare major: no minor to count down
    ((2, 0), None, "2.0 or later"),
    (None, (2, 0), "before 2.0"),
])
def test_a_version_window_is_described_in_release_lines_only_where_that_is_exact(low, below, said):
    # Found by mutation testing: the "x" form's `and` -> `or`, `minor > 0` -> `> 1`, `>= 0`,
    # `minor - 1` -> `^ 1`, the padding `(0, 0)` -> `(1, 0)` and more passed every test (each
    # window ended on an odd minor release of three numbers).
    assert VersionWindow("a feature", low, below, "why").describe() == said
