"""Graph tier: the program's resources as the real providers treat them.

Read from pulumi-command 1.2.1 and pulumi-docker 4.11.2: a command is
replaced only when its `triggers` change, any other change is an in-place
update that keeps its id and re-runs `update` (or `create`); a command whose
inputs did not change is not run again; stdout is logged unless `logging`
says otherwise; a container is updated in place for `restart` and recreated
for everything else. These tests pin what the program does about each."""
from __future__ import annotations

import functools

import pytest

from ascend_inference.stackfile import load_stack, stack_names
from ascendctl.preview.diff import diff_graphs
from ascendctl.preview.graph import Graph
from ascendctl.preview.providers import replace_keys
from ascendctl.preview.stack import changes_for, record_stack

pytestmark = pytest.mark.graph

COMMAND = "command:remote:Command"
STACKS = stack_names()


@functools.cache
def graph(stack: str) -> Graph:
    return record_stack(load_stack(stack))


def commands(stack: str):
    return [r for r in graph(stack).resources if r.type == COMMAND]


@pytest.mark.parametrize("stack", STACKS)
def test_no_command_asks_for_the_previous_output_in_its_environment(stack):
    # The provider sends it with SSH setenv, which sshd refuses without AcceptEnv (a warning on every update).
    for record in commands(stack):
        assert record.inputs.get("addPreviousOutputInEnv") is False, record.name


@pytest.mark.parametrize("stack", STACKS)
def test_triggers_carry_where_and_what_each_step_runs(stack):
    loaded = load_stack(stack)
    hosts = {n.host for n in loaded.spec.nodes}
    for record in commands(stack):
        triggers = record.inputs["triggers"]
        assert triggers[0].startswith("ssh://") and triggers[0].split("@")[1].rsplit(":", 1)[0] in hosts, record.name
        assert isinstance(triggers[1], str) and len(triggers[1]) == 16, record.name   # digest of create + delete


def test_secret_stdout_is_never_logged():
    secret_steps = [r for r in commands("dp4-ep32-gpustack") if r.name in ("gpustack-token", "gpustack-admin-password")]
    assert len(secret_steps) == 2
    for record in secret_steps:
        assert record.inputs.get("logging") == "stderr", record.name
        assert "stdout" in record.options.get("additional_secret_outputs", []), record.name
    others = [r for r in commands("dp4-ep32-gpustack") if r not in secret_steps]
    assert all("logging" not in r.inputs for r in others)


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-lmdeploy"])
def test_node_checks_run_at_every_up_and_previews_stay_quiet(stack):
    """The node checks are pulumi-command `local.run` invokes, which the
    provider runs at every preview and every up and which are never a change;
    no resource carries a per-run value or ignore_changes, so an unchanged
    stack recorded again (a new run of the program) differs in nothing."""
    g = graph(stack)
    nodes = {n.name: n for n in load_stack(stack).spec.nodes}
    check_names = {c.name for c in g.checks}
    # The engine's liveness check where the engine starts: MindIE on every node, LMDeploy on the head.
    serving = list(nodes) if stack == "tp16-mindie" else ["node0"]
    assert {f"{n}-{kind}" for n in nodes for kind in ("preflight", "peer-ping", "image-check")} | {
        f"{n}-serve-alive" for n in serving} == check_names
    assert not check_names & {r.name for r in g.resources}, "a node check is a resource"
    for check in g.checks:
        assert check.ran, check.name
        # The script on stdin to `bash -s` over the system ssh to the check's own node.
        assert check.args["command"] == "bash -s" and check.args["stdin"].strip(), check.name
        argv = check.args["interpreter"]
        node = nodes[check.node]
        assert argv[0] == "ssh" and argv[-1].endswith(f"@{node.host}"), (check.name, argv)
        assert check.args["environment"]["ASCEND_INFERENCE_CHECK"] == check.name
        assert check.args["addPreviousOutputInEnv"] is False, check.name
    for record in commands(stack):
        # No per-run `update` and no ignore_changes: a step runs when it is created or changed.
        assert "update" not in record.inputs, record.name
        assert not record.options.get("ignore_changes"), record.name
    assert diff_graphs(g, record_stack(load_stack(stack)), replace_keys=replace_keys) == []


def test_nothing_downstream_holds_a_node_check_id():
    # Checks have no ids at all (no resources); nothing downstream names one in its triggers.
    for stack in STACKS:
        g = graph(stack)
        checks = {c.name for c in g.checks}
        assert checks and not checks & {r.name for r in g.resources}, stack
        for record in g.resources:
            for trigger in record.inputs.get("triggers") or []:
                assert not any(isinstance(trigger, str) and trigger.startswith(f"{c}-") for c in checks), \
                    record.name


def names(changes, kind):
    return sorted(c.name for c in changes if c.action == kind)


def test_ray_port_redoes_ray_and_everything_on_it():
    changes = changes_for("tp16-vllm-mindspore", ["engine.ray_port=6380"])
    assert names(changes, "replace") == sorted(["node0-ray-head", "node1-ray-worker", "ray-verify", "node0-serve",
                                                "serving-ready", "smoke-test-request"])
    assert names(changes, "update") == []


def test_ssh_port_replaces_every_step_so_its_undo_runs_on_the_old_address():
    changes = changes_for("tp16-vllm-mindspore", ["ssh.port=2222"])
    replaced = set(names(changes, "replace"))
    assert {r.name for r in commands("tp16-vllm-mindspore")} <= replaced


def test_restart_policy_updates_the_containers_in_place_only():
    changes = changes_for("tp16-vllm-mindspore", ["container.restart=always"])
    assert names(changes, "update") == ["node0-container", "node1-container"]
    assert names(changes, "replace") == [] and names(changes, "create") == []
