"""Graph tier: the program's resources as the real providers treat them.

Read from pulumi-command 1.2.1 and pulumi-docker 4.11.2: a command is
replaced only when its `triggers` change, any other change is an in-place
update that keeps its id and re-runs `update` (or `create`); a command whose
inputs did not change is not run again; stdout is logged unless `logging`
says otherwise; a container is updated in place for `restart` and recreated
for everything else. These tests pin what the program does about each."""
from __future__ import annotations

import functools
import re

import pytest

from ascend_inference.stackfile import load_stack, stack_names
from ascendctl.preview.graph import Graph
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
    every_up = [r for r in commands(stack) if r.name.endswith(("-preflight", "-peer-ping", "-fix-tls", "-image-check"))]
    assert every_up
    for record in every_up:
        # `update` is the check itself plus this run's id: a new run is an update, which re-runs it.
        assert record.inputs["update"].startswith(record.inputs["create"]), record.name
        assert re.search(r"\n# ascend-inference run [0-9a-f]{32}\n$", record.inputs["update"]), record.name
        # offline preview is a dry run: the per-run change is ignored there, as in `pulumi preview`.
        assert record.options.get("ignore_changes") == ["update"], record.name
    others = [r for r in commands(stack) if r not in every_up]
    assert all("update" not in r.inputs for r in others)


def test_nothing_downstream_holds_a_node_check_id():
    # A check is updated (same id) at every up; what follows it must read its output, not its id.
    for stack in STACKS:
        records = graph(stack).resources
        check_ids = [f"{r.name}-" for r in records
                     if r.type == COMMAND and r.name.endswith(("-preflight", "-peer-ping", "-image-check"))]
        for record in records:
            for trigger in record.inputs.get("triggers") or []:
                assert not any(isinstance(trigger, str) and trigger.startswith(c) for c in check_ids), record.name


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
