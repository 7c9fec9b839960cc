"""Graph tier: a bad stack fails the Pulumi program with the same clear error
as `python -m ascendctl validate`, and a node fact that contradicts the
stack (read by the preflight) fails it with a NodeFactError naming the node
and the fact.

Three ways a stack reaches the checks are compared:
* `python -m ascendctl validate --stack FILE` (exit 3, one `error:` line per problem);
* `python -m ascendctl preview --stack FILE` (the same lines, exit 3);
* the program itself (`components.program.run` under the mocks, via
  `ascendctl.preview.stack.record_stack`), given the bad file's config as Pulumi's config: it
  must raise StackError with the same problems, before any resource.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ascend_inference.errors import NodeFactError, StackError
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack
from ascendctl import cli
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.facts import synthetic_preflight
from ascendctl.preview.stack import loaded_with_config, record_stack

pytestmark = pytest.mark.graph

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = PROJECT_ROOT / "stacks"
NS = f"{NAMESPACE}:"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "ascendctl", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env=env)


@functools.cache
def loaded(stack: str) -> LoadedStack:
    return load_stack(stack)


def stack_doc(stack: str) -> dict:
    return copy.deepcopy(yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8")))


# --- bad stacks: program vs validate ---------------------------------------------

def bf16_on_two_800i(doc: dict) -> None:
    """Runbook 001: BF16 DeepSeek needs 4 x 800I A2; the MindIE stack has 2."""
    doc["config"][f"{NS}model"]["quantization"] = "bf16"


def duplicate_hostnames(doc: dict) -> None:
    nodes = doc["config"][f"{NS}nodes"]
    nodes[1]["hostname"] = nodes[0]["hostname"]


def typo_in_engine(doc: dict) -> None:
    doc["config"][f"{NS}engine"]["max_num_seq"] = 128


def unknown_top_level_key(doc: dict) -> None:
    """A key `pulumi config set ascend-inference:maxNumSeqs 128` would write:
    not a section of the stack, so it does nothing; validate refuses it."""
    doc["config"][f"{NS}maxNumSeqs"] = 128


BAD = [
    ("tp16-mindie", bf16_on_two_800i),
    ("tp16-vllm-mindspore", duplicate_hostnames),
    ("tp16-vllm-mindspore", typo_in_engine),
    ("tp16-lmdeploy", unknown_top_level_key),
]


def write_bad(tmp_path: Path, stack: str, mutate: Callable[[dict], None]) -> tuple[Path, dict]:
    doc = stack_doc(stack)
    mutate(doc)
    path = tmp_path / f"Pulumi.bad-{mutate.__name__.replace('_', '-')}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, doc["config"]


def program_error_lines(stack: str, path: Path, config: dict) -> list[str]:
    """Run the program with the bad file's config as Pulumi's config and
    return the problems it raises, printed as the CLI prints them.

    `record_stack` takes a LoadedStack for the file name, the stack name and
    the mocks; a bad file has none, so the good stack's is reused with the bad
    file's name and path (the program reads the spec from `config` only)."""
    stand_in = dataclasses.replace(loaded(stack), name=path.name[len("Pulumi."):-len(".yaml")], file=str(path),
                                   raw_config=config)
    try:
        record_stack(stand_in, config)
    except StackError as error:
        return [f"error: {p}" for p in error.problems]
    pytest.fail(f"the program accepted {path.name}, which `validate` rejects")


@pytest.mark.parametrize("stack,mutate", BAD, ids=[m.__name__ for _, m in BAD])
def test_bad_stack_same_error_in_validate_preview_and_program(tmp_path, stack, mutate):
    path, config = write_bad(tmp_path, stack, mutate)
    validate = run_cli("validate", "--stack", path)
    assert validate.returncode == 3, validate.stdout + validate.stderr
    assert "Traceback" not in validate.stderr
    lines = validate.stderr.splitlines()
    assert lines and all(line.startswith(f"error: {path}: ") for line in lines), validate.stderr

    preview = run_cli("preview", "--stack", path)
    assert preview.returncode == 3 and "Traceback" not in preview.stderr
    assert preview.stderr.splitlines() == lines
    assert preview.stdout == ""

    assert program_error_lines(stack, path, config) == lines


def test_bad_stack_messages_name_the_key(tmp_path):
    """The compared messages are the clear ones: key and fix, not a pydantic dump."""
    path, _ = write_bad(tmp_path, "tp16-vllm-mindspore", duplicate_hostnames)
    err = run_cli("validate", "--stack", path).stderr
    assert f"{NS}nodes[1].hostname" in err and "fix:" in err
    path, _ = write_bad(tmp_path, "tp16-mindie", bf16_on_two_800i)
    err = run_cli("validate", "--stack", path).stderr
    assert f"{NS}model" in err and "does not fit" in err and "4 x atlas-800i-a2" in err


# --- node facts contradicting the stack, injected through the mocks ------------------

def patched_preflight(monkeypatch, node: str, edit: Callable[[str], str]) -> None:
    """Make `node`'s preflight print `edit(healthy output)`."""
    original = preview_stack.mock_outputs

    def mock_outputs(ld):
        inner = original(ld)

        def outputs_for(args):
            out = inner(args)
            if args.name == f"{node}-preflight":
                edited = edit(out["stdout"])
                assert edited != out["stdout"], "the injected fault did not change the preflight output"
                out = {**out, "stdout": edited}
            return out

        return outputs_for

    monkeypatch.setattr(preview_stack, "mock_outputs", mock_outputs)


def in_section(section: str, old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        head, marker, tail = text.partition(f"### {section}\n")
        assert marker, section
        return head + marker + tail.replace(old, new, 1)
    return edit


def test_tls_switch_against_the_policy(monkeypatch):
    stack = "tp16-vllm-mindspore"
    spec = loaded(stack).spec
    assert spec.network.hccl_tls == "disabled"
    node = spec.nodes[1].name
    patched_preflight(monkeypatch, node, in_section("device 0 tls", "tls switch[0]", "tls switch[1]"))
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert info.value.node == node and info.value.fact == "device 0 tls"
    assert f"node {node}: device 0 tls: switch is 1" in str(info.value)
    assert "disabled" in str(info.value) and info.value.fix


def test_link_down(monkeypatch):
    stack = "tp16-lmdeploy"
    node = loaded(stack).spec.nodes[1].name
    patched_preflight(monkeypatch, node, in_section("device 3 link", "link status: UP", "link status: DOWN"))
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert (info.value.node, info.value.fact) == (node, "device 3 link")
    assert "DOWN" in str(info.value)


def test_hostname_other_than_declared(monkeypatch):
    stack = "tp16-mindie"
    spec = loaded(stack).spec
    node, other = spec.nodes[1], spec.nodes[0]
    patched_preflight(monkeypatch, node.name, in_section("hostname", node.hostname, other.hostname))
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert (info.value.node, info.value.fact) == (node.name, "hostname")
    assert other.hostname in str(info.value) and node.hostname in str(info.value)


def test_duplicate_hostname_across_nodes(monkeypatch):
    """Without declared hostnames, only the cross-node check can see that two
    nodes answer with the same hostname (Ray needs distinct ones)."""
    stack = "tp16-vllm-mindspore"
    ld = loaded(stack)
    config = copy.deepcopy(ld.raw_config)
    for n in config[f"{NS}nodes"]:
        n.pop("hostname")
    undeclared = loaded_with_config(ld, config)
    first, second = (n.name for n in undeclared.spec.nodes[:2])
    # What the first node answers, so the second can answer the same.
    first_hostname = synthetic_preflight(undeclared, first).split("### hostname\n", 1)[1].splitlines()[0]
    second_hostname = synthetic_preflight(undeclared, second).split("### hostname\n", 1)[1].splitlines()[0]
    patched_preflight(monkeypatch, second, in_section("hostname", second_hostname, first_hostname))
    with pytest.raises(NodeFactError) as info:
        record_stack(undeclared, config)
    assert (info.value.node, info.value.fact) == (second, "hostname")
    assert f"'{first_hostname}' is also the hostname of {first}" in str(info.value)


def test_unhealthy_npu(monkeypatch):
    stack = "tp16-vllm-mindspore"
    spec = loaded(stack).spec
    node = spec.nodes[0].name
    patched_preflight(monkeypatch, node, lambda text: text.replace("| OK            |", "| Critical      |", 1))
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert (info.value.node, info.value.fact) == (node, "npu-smi info")
    assert f"{spec.profile.devices_per_node - 1} healthy NPUs, the stack needs {spec.profile.devices_per_node}" \
        in str(info.value)


def test_node_fact_error_through_the_cli(monkeypatch, capsys):
    """`preview` prints a node fact contradiction as one `error:` line, exit 4, no traceback."""
    stack = "tp16-lmdeploy"
    node = loaded(stack).spec.nodes[1].name
    patched_preflight(monkeypatch, node, in_section("device 3 link", "link status: UP", "link status: DOWN"))
    assert cli.main(["preview", "--stack", stack]) == 4
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: node {node}: device 3 link: is DOWN")
    assert "Traceback" not in captured.err
