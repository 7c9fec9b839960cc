"""Graph tier: every resource option asserted on every resource that carries
it (issue 24: an option checked on some of the resources that carry it lets a
change to the others pass).

For each stack in stacks/, every resource the program registers is looked up
by its kind (type and role: its name without the node's) in OPTIONS, and its
delete-before-replace, retain-on-delete, additional secret outputs, custom
timeouts and ignore-changes are compared with that row, whole. A resource
of a kind with no row fails, so a new kind of resource needs its options
written down here.

Why the rows say what they say (components/common.py `remote_step`):
* every remote command is deleted before it is replaced (its delete undoes
  it on the node first: two copies of a process or file cannot coexist) and
  hides its `connection` (the SSH key) as a secret output;
* the steps that leave large data on the node (the weights, a loaded image)
  keep it when the stack is destroyed (`retain_on_delete`);
* the read-only node checks (preflight, peer pings, image check) are no
  resources but `local.run` invokes (`node_check`): no resource ignores a
  change (`ignore_changes` is empty everywhere), and the checks' own options
  are in the last test;
* GPUStack's token and admin password are read from stdout: secret outputs;
* timeouts bound the slow steps: the weights check 30 min,
  a loaded image 60 min, the serve wait the engine's ready_timeout_s + 60 s.
"""
from __future__ import annotations

import functools
import json

import pytest

from ascend_inference.stackfile import LoadedStack, load_stack, stack_names
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.stack import loaded_with_config, record_stack

pytestmark = pytest.mark.graph

CMD = "command:remote:Command"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER = "pulumi:providers:docker"
DYNAMIC = "pulumi-python:dynamic:Resource"
COMPONENT = "component"  # every ascend-inference:<module>:<Class> component resource

OPTION_NAMES = ("delete_before_replace", "retain_on_delete", "additional_secret_outputs", "custom_timeouts",
                "ignore_changes")


def options(*, dbr: bool = False, retain: bool = False, secret: tuple[str, ...] = (),
            timeout: str | dict | None = None, ignore: tuple[str, ...] = ()) -> dict:
    timeouts = {"create": timeout, "update": timeout} if isinstance(timeout, str) else timeout
    return {"delete_before_replace": dbr, "retain_on_delete": retain, "additional_secret_outputs": list(secret),
            "custom_timeouts": timeouts, "ignore_changes": list(ignore)}


def step(timeout: str | None = None, *, retain: bool = False, secret_stdout: bool = False) -> dict:
    """A remote_step's options (components/common.py)."""
    return options(dbr=True, retain=retain, secret=("stdout", "connection") if secret_stdout else ("connection",),
                   timeout=timeout)


SERVE_READY = "serve-ready"  # its timeout is the engine's ready_timeout_s + 60 s: filled per stack

# (type, role) -> options. Role: the resource's name without its node's name (`<node>-preflight` -> "preflight").
OPTIONS = {
    (COMPONENT, None): options(),
    (CMD, "fix-tls"): step(),
    (CMD, "weights"): step("30m", retain=True),
    (CMD, "image"): step("60m", retain=True),
    (CMD, "container-check"): step("10m"),
    (CMD, "config-edit"): step("10m"),
    (CMD, "ray-head"): step("10m"),
    (CMD, "ray-worker"): step("10m"),
    (CMD, "ray-verify"): step("10m"),
    (CMD, "serve"): step("10m"),
    (CMD, "smoke-test-request"): step("15m"),
    (CMD, "env"): step(),
    (CMD, "file-1"): step(),
    (CMD, "mounts"): step(),
    (CMD, "name-free"): step(),
    (CMD, "rank-table"): step(),
    (CMD, "gpustack-backends"): step(),
    (CMD, "cluster-verified"): step(),
    (CMD, "gpustack-admin-password"): step(secret_stdout=True),
    (CMD, "gpustack-token"): step(secret_stdout=True),
    (CMD, "serving-ready"): SERVE_READY,
    (CONTAINER, "container"): options(dbr=True, timeout={"create": "20m"}),
    (REMOTE_IMAGE, "image"): options(timeout={"create": "60m"}),
    (DYNAMIC, "gpustack-model-deploy"): options(secret=("password",)),
    (DOCKER_PROVIDER, "docker"): options(),
}


@functools.cache
def graph(stack: str) -> Graph:
    return record_stack(load_stack(stack))


def kind_of(record: ResourceRecord, loaded: LoadedStack) -> tuple[str, str | None]:
    if record.type.startswith("ascend-inference:"):
        return COMPONENT, None
    role = record.name
    for node in sorted((n.name for n in loaded.spec.nodes), key=len, reverse=True):
        if role.startswith(node + "-"):
            role = role[len(node) + 1:]
            break
    return record.type, role


def expected_options(kind: tuple[str, str | None], loaded: LoadedStack) -> dict:
    want = OPTIONS[kind]
    if want == SERVE_READY:
        return step(f"{loaded.spec.engine.ready_timeout_s + 60}s")
    return want


def checked_options(record: ResourceRecord) -> dict:
    got = {name: record.options.get(name) for name in OPTION_NAMES}
    got["additional_secret_outputs"] = sorted(got["additional_secret_outputs"] or [])
    got["ignore_changes"] = list(got["ignore_changes"] or [])
    return got


def mismatches(g: Graph, loaded: LoadedStack) -> list[str]:
    problems = []
    for record in g.resources:
        kind = kind_of(record, loaded)
        if kind not in OPTIONS:
            problems.append(f"{record.name} ({record.type}): a kind of resource with no row in OPTIONS")
            continue
        want = expected_options(kind, loaded)
        want = {**want, "additional_secret_outputs": sorted(want["additional_secret_outputs"])}
        got = checked_options(record)
        for name in OPTION_NAMES:
            if got[name] != want[name]:
                problems.append(f"{record.name}: {name} is {got[name]!r}, its kind {kind} has {want[name]!r}")
    return problems


@pytest.mark.parametrize("stack", stack_names())
def test_every_resource_carries_its_kinds_options(stack):
    loaded, g = load_stack(stack), graph(stack)
    assert len(g.resources) > 20
    assert mismatches(g, loaded) == []


def test_every_row_is_used_by_some_stack():
    used = {kind_of(r, load_stack(s)) for s in stack_names() for r in graph(s).resources}
    assert set(OPTIONS) - used == set()


def test_a_changed_option_is_caught_on_any_one_instance():
    # The check compares every instance: one container of one node without delete_before_replace is named.
    stack = "tp16-mindie"
    loaded, g = load_stack(stack), graph(stack)
    container = g.by_name("node1-container")
    original = dict(container.options)
    try:
        container.options["delete_before_replace"] = False
        assert mismatches(g, loaded) == [
            f"node1-container: delete_before_replace is False, its kind {(CONTAINER, 'container')} has True"]
    finally:
        container.options.clear()
        container.options.update(original)


def test_the_serve_wait_timeout_follows_ready_timeout_s():
    loaded = load_stack("tp16-vllm-mindspore")
    config = json.loads(json.dumps(loaded.raw_config))
    config["ascend-inference:engine"] = {**config["ascend-inference:engine"], "ready_timeout_s": 1234}
    changed = loaded_with_config(loaded, config)
    g = record_stack(changed, config)
    assert g.by_name("serving-ready").options["custom_timeouts"] == {"create": "1294s", "update": "1294s"}
    assert mismatches(g, changed) == []


def test_gpustacks_waits_are_the_model_resources_inputs():
    # engine.ready_timeout_s and worker_ready_timeout_s away from their defaults reach the deployment's inputs.
    loaded = load_stack("dp4-ep32-gpustack")
    assert (loaded.spec.engine.ready_timeout_s, loaded.spec.engine.worker_ready_timeout_s) == (5400, 60)
    config = json.loads(json.dumps(loaded.raw_config))
    config["ascend-inference:engine"] = {**config["ascend-inference:engine"], "ready_timeout_s": 1234,
                                         "worker_ready_timeout_s": 321}
    deploy = record_stack(loaded_with_config(loaded, config), config).by_name("gpustack-model-deploy")
    assert (deploy.inputs["ready_timeout_s"], deploy.inputs["worker_timeout_s"]) == (1234, 321)
    default = graph("dp4-ep32-gpustack").by_name("gpustack-model-deploy")
    assert (default.inputs["ready_timeout_s"], default.inputs["worker_timeout_s"]) == (5400, 60)


@pytest.mark.parametrize("stack", stack_names())
def test_every_node_check_is_an_invoke_on_its_own_node(stack):
    """The checks carry no resource options at all (they are invokes): each is
    pulumi-command's local.run of `bash -s` over the system ssh to its node,
    with no previous output sent, recorded once per node (pings where the
    stack pings)."""
    loaded, g = load_stack(stack), graph(stack)
    nodes = {n.name: n for n in loaded.spec.nodes}
    assert {c.name for c in g.checks} >= {f"{n}-preflight" for n in nodes}
    for check in g.checks:
        assert check.node in nodes, check.name
        argv = check.args["interpreter"]
        assert argv[0] == "ssh" and argv[-1].endswith("@" + nodes[check.node].host), argv
        assert check.args["command"] == "bash -s" and check.args["addPreviousOutputInEnv"] is False
    assert not any(r.name.endswith(("-preflight", "-peer-ping", "-image-check")) for r in g.resources)
