"""Graph tier: the Pulumi program of every stack, run under the SDK's mocks
(`ascendctl.record_stack`), checked as a resource graph.

Every expectation is derived from the stack file (node names, engine kind,
`container.image_tar`, `network.fix_tls` / `ping_peers`, the engine files the
core renders), not copied from a preview printout:

* what exists: one inventory per stack, built here from the stack, compared
  with what the program registered (types, names, parents);
* the tree: every custom resource under a component of this program, names
  `<node>-<role>` / `<component>-<role>`, type tokens `ascend-inference:<module>:<Class>`;
* the order: the edges a rollout relies on (`Graph.depends_on`, transitive);
* secrets: the SSH key, GPUStack's token and admin password only as secrets;
* depth: the longest chain does not grow with the node count;
* the stack outputs.
"""
from __future__ import annotations

import collections
import functools
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ascend_inference.ranktable import rank_table_digest
from ascend_inference.render import declared_device_ips, rank_table, render_node
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack, stack_names
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.config import apply_change, scaled_config
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.printer import format_diff, format_tree
from ascendctl.preview.stack import changes_for, config_for, loaded_with_config, record_stack
from ascendctl.preview.values import Secret
from components.common import script_then_data
from tests.step_script import step_script

pytestmark = pytest.mark.graph

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS = stack_names()

CMD = "command:remote:Command"
DOCKER_PROVIDER = "pulumi:providers:docker"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
CONTAINER = "docker:index/container:Container"


def token(module: str, cls: str) -> str:
    return f"{NAMESPACE}:{module}:{cls}"


# The component types of this program (ascend-inference:<module>:<Class>).
DEPLOYMENT = token("deployment", "Deployment")
ASCEND_NODE = token("node", "AscendNode")
PEER_CHECK = token("cluster", "PeerCheck")
MODEL_WEIGHTS = token("model", "ModelWeights")
CONTAINER_IMAGES = token("image", "ContainerImages")
RANK_TABLE = token("ranktable", "RankTable")
INFERENCE_CONTAINER = token("container", "InferenceContainer")
RAY_CLUSTER = token("ray", "RayCluster")
SERVING = token("serving", "ServingProcess")
SMOKE = token("smoke", "SmokeTest")
GPUSTACK = token("gpustack", "GpustackModel")  # the server secrets; the token predates the split
GPUSTACK_DEPLOYMENT = token("gpustack", "GpustackDeployment")
COMPONENT_TYPES = {DEPLOYMENT, ASCEND_NODE, PEER_CHECK, MODEL_WEIGHTS, RANK_TABLE, INFERENCE_CONTAINER,
                   RAY_CLUSTER, SERVING, SMOKE, GPUSTACK, GPUSTACK_DEPLOYMENT, CONTAINER_IMAGES}

# What each engine needs (issue 4 and runbooks 000-004): an HCCL rank table
# (MindIE, LMDeploy), a Ray cluster (vLLM-MindSpore, LMDeploy), a serving process on
# every node (MindIE's daemon, vllm-ascend's `vllm serve` with --headless off the
# master) or one serve process on the head (the Ray engines), or
# GPUStack's server/workers and a model deployment through its API.
RANK_TABLE_ENGINES = {"mindie", "lmdeploy"}
RAY_ENGINES = {"vllm-mindspore", "lmdeploy"}
SERVE_ON_EVERY_NODE = {"mindie", "vllm-ascend"}
GPUSTACK_ENGINES = {"gpustack"}
# vllm-ascend's Ray form: its TP group (16) is wider than a node (8 NPUs), so a
# Ray cluster and one serve process on the head, as the Ray engines.
RAY_STACKS = {"tp16-vllm-ascend-ray"}


# --- recording (each stack once per module) ----------------------------------

@functools.cache
def loaded(stack: str) -> LoadedStack:
    return load_stack(stack)


@functools.cache
def graph(stack: str) -> Graph:
    return record_stack(loaded(stack))


def node_names(stack: str) -> list[str]:
    return [n.name for n in loaded(stack).spec.nodes]


def pings(stack: str) -> bool:
    """Whether the stack's nodes ping each other: more than one node, the
    stack's ping_peers, and a profile with a fabric (not the 300I Duo)."""
    spec = loaded(stack).spec
    return len(spec.nodes) > 1 and spec.network.ping_peers and spec.profile.network.peer_ping


def kind(stack: str) -> str:
    return loaded(stack).spec.engine.kind


def over_ray(stack: str) -> bool:
    return kind(stack) in RAY_ENGINES or stack in RAY_STACKS


def serves_on_every_node(stack: str) -> bool:
    return kind(stack) in SERVE_ON_EVERY_NODE and not over_ray(stack)


def named(g: Graph, name: str, type_: str | None = None) -> ResourceRecord:
    found = [r for r in g.resources if r.name == name and (type_ is None or r.type == type_)]
    assert len(found) == 1, f"expected one resource named {name!r} ({type_ or 'any type'}), found {len(found)}"
    return found[0]


def parent_of(g: Graph, rec: ResourceRecord) -> ResourceRecord | None:
    return g.by_urn.get(rec.parent_urn) if rec.parent_urn else None


def customs(g: Graph) -> list[ResourceRecord]:
    return [r for r in g.resources if r.custom]


# --- 1. inventory ------------------------------------------------------------

def expected_inventory(stack: str) -> collections.Counter:
    """(type, name, parent name) of every resource the program should
    register, from the stack alone. Engine files are `<node>-file-*` (their
    index is an ordering detail), one per file the core renders for the node."""
    ld = loaded(stack)
    spec = ld.spec
    nodes = node_names(stack)
    master = nodes[0]
    engine = spec.engine.kind
    top = ld.name  # the Deployment is named after the stack
    inv: list[tuple[str, str, str | None]] = [(DEPLOYMENT, top, None)]
    for n in nodes:
        inv.append((ASCEND_NODE, n, top))
        if spec.network.fix_tls:
            inv.append((CMD, f"{n}-fix-tls", n))
    inv.append((PEER_CHECK, "peer-check", top))
    inv.append((CMD, "cluster-verified", "peer-check"))
    inv.append((MODEL_WEIGHTS, "model-weights", top))
    inv += [(CMD, f"{n}-weights", "model-weights") for n in nodes]
    inv.append((CONTAINER_IMAGES, "images", top))
    for n in nodes:
        inv.append((DOCKER_PROVIDER, f"{n}-docker", "images"))
        inv.append((CMD if spec.container.image_tar else REMOTE_IMAGE, f"{n}-image", "images"))
    if engine in RANK_TABLE_ENGINES:
        inv.append((RANK_TABLE, "rank-table", top))
        inv += [(CMD, f"{n}-rank-table", "rank-table") for n in nodes]
    for i, n in enumerate(nodes):
        inv.append((INFERENCE_CONTAINER, n, top))
        inv.append((CMD, f"{n}-env", n))
        inv += [(CMD, f"{n}-file-*", n)] * len(render_node(ld, i).files)
        inv.append((CMD, f"{n}-name-free", n))
        inv.append((CMD, f"{n}-mounts", n))
        inv.append((CONTAINER, f"{n}-container", n))
        # In the started container: `import acl` where the cluster forms over
        # Ray (runbook 000), MindIE's config.json edited in place.
        if over_ray(stack):
            inv.append((CMD, f"{n}-container-check", n))
        if engine == "mindie":
            inv.append((CMD, f"{n}-config-edit", n))
    if over_ray(stack):
        inv.append((RAY_CLUSTER, "ray", top))
        inv.append((CMD, f"{master}-ray-head", "ray"))
        inv += [(CMD, f"{n}-ray-worker", "ray") for n in nodes[1:]]
        inv.append((CMD, "ray-verify", "ray"))
    if engine in GPUSTACK_ENGINES:
        inv.append((GPUSTACK, "gpustack", top))
        inv += [(CMD, f"gpustack-{role}", "gpustack") for role in ("token", "admin-password")]
        inv.append((GPUSTACK_DEPLOYMENT, "gpustack-model", top))
        inv += [(CMD, f"{n}-gpustack-backends", "gpustack-model") for n in nodes]
        inv.append(("pulumi-python:dynamic:Resource", "gpustack-model-deploy", "gpustack-model"))
    else:
        inv.append((SERVING, "serving", top))
        serve_nodes = nodes if serves_on_every_node(stack) else [master]
        inv += [(CMD, f"{n}-serve", "serving") for n in serve_nodes]
        inv.append((CMD, "serving-ready", "serving"))
    inv.append((SMOKE, "smoke-test", top))
    inv.append((CMD, "smoke-test-request", "smoke-test"))
    return collections.Counter(inv)


def expected_checks(stack: str) -> collections.Counter:
    """(name, node, parent name) of every node check (an invoke, no resource)
    the program should run, from the stack alone."""
    nodes = node_names(stack)
    checks = [(f"{n}-preflight", n, n) for n in nodes]
    if pings(stack):
        checks += [(f"{n}-peer-ping", n, "peer-check") for n in nodes]
    checks += [(f"{n}-image-check", n, "images") for n in nodes]
    if kind(stack) != "gpustack":
        # Every node that starts the engine checks, at each preview and up, that it still runs.
        serve_nodes = nodes if serves_on_every_node(stack) else nodes[:1]
        checks += [(f"{n}-serve-alive", n, "serving") for n in serve_nodes]
    return collections.Counter(checks)


def actual_checks(g: Graph) -> collections.Counter:
    return collections.Counter((c.name, c.node, g.by_urn[c.parent_urn].name if c.parent_urn else None)
                               for c in g.checks)


def actual_inventory(g: Graph) -> collections.Counter:
    out = []
    for r in g.resources:
        parent = parent_of(g, r)
        name = re.sub(r"-file-\d+$", "-file-*", r.name)
        out.append((r.type, name, parent.name if parent else None))
    return collections.Counter(out)


@pytest.mark.parametrize("stack", STACKS)
def test_inventory_matches_the_stack(stack):
    """Exactly the resources and node checks the stack calls for: nothing
    missing, nothing extra; every check ran (the preview's mocks answered it)."""
    g = graph(stack)
    expected, actual = expected_inventory(stack), actual_inventory(g)
    missing, extra = expected - actual, actual - expected
    assert not missing and not extra, f"missing: {sorted(missing)}\nextra: {sorted(extra)}"
    expected, actual = expected_checks(stack), actual_checks(g)
    missing, extra = expected - actual, actual - expected
    assert not missing and not extra, f"missing checks: {sorted(missing)}\nextra checks: {sorted(extra)}"
    assert all(c.ran for c in g.checks), [c.name for c in g.checks if not c.ran]


@pytest.mark.parametrize("stack", STACKS)
def test_counts_per_type(stack):
    """The same inventory read as counts, so a failure says "2 nodes, 3 X"."""
    g, nodes, engine = graph(stack), node_names(stack), kind(stack)
    n = len(nodes)
    spec = loaded(stack).spec
    count = collections.Counter(r.type for r in g.resources)
    assert count[DEPLOYMENT] == 1
    assert count[ASCEND_NODE] == n
    assert count[INFERENCE_CONTAINER] == n
    assert count[DOCKER_PROVIDER] == n
    assert count[CONTAINER] == n
    assert count[REMOTE_IMAGE] == (0 if spec.container.image_tar else n)
    assert count[RANK_TABLE] == (1 if engine in RANK_TABLE_ENGINES else 0)
    assert count[RAY_CLUSTER] == (1 if over_ray(stack) else 0)
    assert count[SERVING] == (0 if engine in GPUSTACK_ENGINES else 1)
    assert count[GPUSTACK] == (1 if engine in GPUSTACK_ENGINES else 0)
    assert count[SMOKE] == 1
    assert count[PEER_CHECK] == 1 and count[MODEL_WEIGHTS] == 1

    names = [r.name for r in customs(g)]
    ends = lambda suffix: sum(1 for x in names if x.endswith(suffix))  # noqa: E731
    # The node checks are invokes, never resources.
    assert ends("-preflight") == ends("-peer-ping") == ends("-image-check") == 0
    checks = [c.name for c in g.checks]
    assert sum(1 for x in checks if x.endswith("-preflight")) == n
    assert sum(1 for x in checks if x.endswith("-peer-ping")) == (n if pings(stack) else 0)
    assert sum(1 for x in checks if x.endswith("-image-check")) == n
    assert ends("-weights") == n
    assert ends("-rank-table") == (n if engine in RANK_TABLE_ENGINES else 0)
    assert ends("-ray-head") == (1 if over_ray(stack) else 0)
    assert ends("-ray-worker") == (n - 1 if over_ray(stack) else 0)
    assert ends("-serve") == (n if serves_on_every_node(stack) else 0 if engine in GPUSTACK_ENGINES else 1)
    if spec.container.image_tar:
        # Runbook 001: `docker load -i <tar>` as a remote command, not a pull.
        assert all(named(g, f"{x}-image").type == CMD for x in nodes)
    if over_ray(stack):
        assert named(g, f"{nodes[0]}-ray-head").parent_urn == named(g, "ray", RAY_CLUSTER).urn


@pytest.mark.parametrize("stack", STACKS)
def test_component_type_tokens(stack):
    g = graph(stack)
    for r in g.resources:
        if r.custom:
            assert not r.type.startswith(f"{NAMESPACE}:"), f"{r.name}: a custom resource with a component token"
        else:
            assert re.fullmatch(rf"{NAMESPACE}:[a-z]+:[A-Z][A-Za-z]+", r.type), f"{r.name}: token {r.type}"
            assert r.type in COMPONENT_TYPES, f"{r.name}: unexpected component type {r.type}"


# --- 2. tree and names --------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_every_custom_resource_has_a_component_parent(stack):
    g = graph(stack)
    assert g.stack_urn
    for r in customs(g):
        parent = parent_of(g, r)
        assert parent is not None, f"{r.name}: parent {r.parent_urn} is not a resource of this program"
        assert r.parent_urn != g.stack_urn, f"{r.name} hangs directly off the stack"
        assert not parent.custom and parent.type in COMPONENT_TYPES, f"{r.name}: parent {parent.type} {parent.name}"
    # Components: the Deployment under the stack, every other component under the Deployment.
    deployment = named(g, loaded(stack).name, DEPLOYMENT)
    assert deployment.parent_urn == g.stack_urn
    for r in g.resources:
        if not r.custom and r is not deployment:
            assert r.parent_urn == deployment.urn, f"{r.type} {r.name} is not under the Deployment"


@pytest.mark.parametrize("stack", STACKS)
def test_child_names_are_node_or_component_prefixed(stack):
    """`<node>-<role>` or `<component>-<role>`. One documented exception:
    PeerCheck's gate is named after the file it writes on the master,
    `cluster-verified.json` (one per stack, so its URN cannot collide)."""
    g, nodes = graph(stack), node_names(stack)
    for r in customs(g):
        if r.name == "cluster-verified":
            assert parent_of(g, r).type == PEER_CHECK
            continue
        parent = parent_of(g, r)
        prefixes = [*nodes, parent.name]
        assert any(re.fullmatch(re.escape(p) + r"-[a-z0-9]+(-[a-z0-9]+)*", r.name) for p in prefixes), \
            f"{r.name} (under {parent.name}) is neither <node>-<role> nor <component>-<role>"
    urns = [r.urn for r in g.resources]
    assert len(urns) == len(set(urns)), "duplicate URNs"


# --- 3. ordering ----------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_nodes_start_independently(stack):
    """Preflight is per node: it waits for nothing but the node's own TLS fix."""
    g, nodes = graph(stack), node_names(stack)
    for n in nodes:
        pre = g.check(f"{n}-preflight")
        allowed = {named(g, f"{n}-fix-tls").urn} if loaded(stack).spec.network.fix_tls else set()
        waits = {u for u in pre.dependencies if u in g.by_urn and g.by_urn[u].custom}
        assert waits == allowed, f"{n}-preflight waits for {[g.by_urn[u].name for u in waits]}"
        assert pre.after_checks == [], f"{n}-preflight waits for the checks {pre.after_checks}"
        for u in allowed:
            assert not g.checks_before(u), f"{g.by_urn[u].name} waits for a check"


@pytest.mark.parametrize("stack", STACKS)
def test_rank_table_after_every_preflight(stack):
    g, nodes = graph(stack), node_names(stack)
    if kind(stack) not in RANK_TABLE_ENGINES:
        assert not [r for r in g.resources if r.name.endswith("-rank-table")]
        return
    gate = named(g, "cluster-verified")
    for n in nodes:
        copy = named(g, f"{n}-rank-table")
        for m in nodes:
            assert f"{m}-preflight" in g.checks_before(copy), f"{n}-rank-table before {m}-preflight"
        # The table holds discovered device IPs, so it waits for the peer check too.
        assert g.depends_on(copy, gate)


@pytest.mark.parametrize("stack", STACKS)
def test_containers_after_the_cluster_checks(stack):
    """Every container waits for every node's weights check and peer pings
    (through the one `cluster-verified` gate) and for its own node's
    rank-table copy; every serving process waits for every copy."""
    g, nodes = graph(stack), node_names(stack)
    gate = named(g, "cluster-verified")
    for m in nodes:
        assert g.depends_on(gate, named(g, f"{m}-weights"))
        if pings(stack):
            assert f"{m}-peer-ping" in g.checks_before(gate)
    for n in nodes:
        container = named(g, f"{n}-container", CONTAINER)
        assert gate.urn in container.dependencies, f"{n}-container does not wait for the gate itself"
        for m in nodes:
            assert g.depends_on(container, named(g, f"{m}-weights")), f"{n}-container before {m}-weights"
            assert f"{m}-preflight" in g.checks_before(container)
            if pings(stack):
                assert f"{m}-peer-ping" in g.checks_before(container), f"{n}-container before {m}-peer-ping"
        if kind(stack) in RANK_TABLE_ENGINES:
            assert g.depends_on(container, named(g, f"{n}-rank-table")), f"{n}-container before its rank table"
        # The node's own files and image, through its own provider.
        assert g.depends_on(container, named(g, f"{n}-env"))
        assert g.depends_on(container, named(g, f"{n}-image"))
        assert container.provider_urn == named(g, f"{n}-docker", DOCKER_PROVIDER).urn
    if kind(stack) in RANK_TABLE_ENGINES:
        for serve in [r for r in g.resources if r.name.endswith("-serve")]:
            for m in nodes:
                assert g.depends_on(serve, named(g, f"{m}-rank-table")), f"{serve.name} before {m}-rank-table"


@pytest.mark.parametrize("stack", [s for s in STACKS if over_ray(s)])
def test_ray_order(stack):
    g, nodes = graph(stack), node_names(stack)
    head = named(g, f"{nodes[0]}-ray-head")
    verify = named(g, "ray-verify")
    assert g.depends_on(head, named(g, f"{nodes[0]}-container", CONTAINER))
    assert g.depends_on(verify, head)
    for n in nodes[1:]:
        worker = named(g, f"{n}-ray-worker")
        assert g.depends_on(worker, head), f"{n}-ray-worker before the head"
        assert g.depends_on(worker, named(g, f"{n}-container", CONTAINER))
        assert g.depends_on(verify, worker), f"ray-verify before {n}-ray-worker"
    for serve in [r for r in g.resources if r.name.endswith("-serve")]:
        assert g.depends_on(serve, verify), f"{serve.name} before ray-verify"


@pytest.mark.parametrize("stack", [s for s in STACKS if load_stack(s).spec.engine.kind == "mindie"])
def test_mindie_order(stack):
    """MindIE: every daemon after every rank-table copy; workers after the master's daemon."""
    g, nodes = graph(stack), node_names(stack)
    master = named(g, f"{nodes[0]}-serve")
    for n in nodes:
        serve = named(g, f"{n}-serve")
        for m in nodes:
            assert g.depends_on(serve, named(g, f"{m}-rank-table")), f"{n}-serve before {m}-rank-table"
        assert g.depends_on(serve, named(g, f"{n}-container", CONTAINER))
        if n != nodes[0]:
            assert g.depends_on(serve, master), f"{n}-serve before the master's daemon"
    assert not g.depends_on(master, named(g, f"{nodes[-1]}-serve"))


@pytest.mark.parametrize("stack", [s for s in STACKS if load_stack(s).spec.engine.kind not in GPUSTACK_ENGINES])
def test_ready_after_every_serve(stack):
    g = graph(stack)
    ready = named(g, "serving-ready")
    serves = [r for r in g.resources if r.name.endswith("-serve")]
    assert serves
    for s in serves:
        assert g.depends_on(ready, s)


@pytest.mark.parametrize("stack", [s for s in STACKS if load_stack(s).spec.engine.kind in GPUSTACK_ENGINES])
def test_gpustack_order(stack):
    """Runbook 002: server container, then its token and password, then the
    workers (they register with the token), then the model deployment."""
    g, nodes = graph(stack), node_names(stack)
    server = named(g, f"{nodes[0]}-container", CONTAINER)
    token_reader, password_reader = named(g, "gpustack-token"), named(g, "gpustack-admin-password")
    model = named(g, "gpustack-model-deploy")
    assert g.depends_on(token_reader, server) and g.depends_on(password_reader, server)
    for n in nodes[1:]:
        worker = named(g, f"{n}-container", CONTAINER)
        assert g.depends_on(worker, token_reader), f"{n}-container before the token is read"
        assert g.depends_on(model, worker), f"gpustack-model-deploy before {n}-container"
    assert g.depends_on(model, token_reader) and g.depends_on(model, password_reader)
    assert g.depends_on(named(g, "smoke-test-request"), model)
    # Destroy runs the other way: the model, then each node's backend removal, then its container.
    for n in nodes:
        backends = named(g, f"{n}-gpustack-backends")
        assert g.depends_on(backends, named(g, f"{n}-container", CONTAINER)), f"{n}-gpustack-backends"
        assert g.depends_on(model, backends), f"gpustack-model-deploy before {n}-gpustack-backends"


@pytest.mark.parametrize("stack", STACKS)
def test_smoke_test_is_last(stack):
    """The smoke request waits, transitively, for every other custom resource.

    Exceptions: none. The program has no resource that exists only for its
    delete hook (`ray stop`, the serve stop, GPUStack's undeploy and the file
    removals are the deletes of the same resources that do the work at
    create), and the docker Providers are reached through their containers'
    provider edge. Nothing waits for the smoke request. A resource only a
    node check waits for (the TLS fix, before its preflight) counts as before."""
    g = graph(stack)
    smoke = named(g, "smoke-test-request")
    # Through the node checks too: the TLS fix is before the preflight it feeds.
    not_before = [r.name for r in customs(g) if r is not smoke and not g.runs_after(smoke, r)]
    assert not_before == []
    after = [r.name for r in customs(g) if r is not smoke and g.runs_after(r, smoke)]
    assert after == []
    # And every node check is before it.
    assert g.checks_before(smoke) == {c.name for c in g.checks}


# --- 4. secrets --------------------------------------------------------------

TEST_KEY_MARK = "TEST-ONLY-ed25519-5f0c3a9e71d24b86"
TEST_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{TEST_KEY_MARK}\n-----END OPENSSH PRIVATE KEY-----\n"


def clear_strings(value, path="") -> list[tuple[str, str]]:
    """Every string leaf not under a Secret, with its path."""
    if isinstance(value, Secret):
        return []
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in clear_strings(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [x for i, v in enumerate(value) for x in clear_strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def secret_values(value) -> list:
    if isinstance(value, Secret):
        return [value.value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in secret_values(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in secret_values(v)]
    return []


def leaks(g: Graph, needle: str) -> list[str]:
    found = []
    for r in g.resources:
        for part in ("inputs", "options", "outputs"):
            for path, text in clear_strings(getattr(r, part)):
                if needle in text:
                    found.append(f"{r.name}.{part}{path}")
    for path, text in clear_strings(g.outputs):
        if needle in text:
            found.append(f"stack outputs{path}")
    return found


@pytest.fixture
def distinct_key(monkeypatch):
    """The stack's SSH key secret set to a recognisable test key (still a
    Secret, as `pulumi config set --secret` would give the program)."""
    original = preview_stack.config_for

    def config_for(ld, config):
        values = original(ld, config)
        full = f"{NAMESPACE}:{ld.spec.ssh.private_key_secret}"
        assert isinstance(values[full], Secret)
        values[full] = Secret(TEST_KEY)
        return values

    monkeypatch.setattr(preview_stack, "config_for", config_for)
    return TEST_KEY


@pytest.mark.parametrize("stack", STACKS)
def test_ssh_key_only_as_a_secret(stack, distinct_key):
    ld = loaded(stack)
    g = record_stack(ld)
    commands = g.of_type(CMD)
    assert commands
    for cmd in commands:
        conn = cmd.inputs.get("connection")
        assert isinstance(conn, Secret), f"{cmd.name}: connection is not a secret"
        # The key did reach every command, inside the secret.
        assert conn.value["privateKey"] == distinct_key, f"{cmd.name}: connection without the stack's key"
        assert "connection" in cmd.options["additional_secret_outputs"]
    assert leaks(g, TEST_KEY_MARK) == []
    assert TEST_KEY_MARK not in g.to_json()
    assert TEST_KEY_MARK not in format_tree(g)
    assert "[secret]" in format_tree(g)


@pytest.mark.parametrize("stack", STACKS)
def test_placeholder_key_never_printed(stack):
    ld = loaded(stack)
    full = f"{NAMESPACE}:{ld.spec.ssh.private_key_secret}"
    placeholder = config_for(ld, ld.raw_config)[full]
    assert isinstance(placeholder, Secret) and placeholder.value
    g = graph(stack)
    assert leaks(g, placeholder.value) == []
    assert placeholder.value not in g.to_json()
    assert placeholder.value not in format_tree(g)


def test_ssh_key_through_a_jump_host_stays_secret(distinct_key):
    """The jump host (`proxy`) gets the same key; it must stay inside the secret."""
    ld = loaded("tp16-vllm-mindspore")
    config = apply_change(ld.raw_config, "ssh.jump_host=ops@203.0.113.5:2222", ld.file)
    g = record_stack(loaded_with_config(ld, config), config)
    node0 = node_names("tp16-vllm-mindspore")[0]
    step = named(g, f"{node0}-weights")
    proxy = step.inputs["connection"].value["proxy"]
    assert proxy["host"] == "203.0.113.5" and proxy["port"] == 2222 and proxy["privateKey"] == distinct_key
    # The node check runs the system ssh through the same jump host (a
    # ProxyCommand, as docker's ssh://, so the jump host's key is checked
    # against the same known_hosts), the key from the user's agent: none in
    # its arguments.
    argv = g.check(f"{node0}-preflight").args["interpreter"]
    [proxy_command] = [a for a in argv if a.startswith("ProxyCommand=")]
    assert proxy_command.endswith("-p 2222 -W %h:%p ops@203.0.113.5"), proxy_command
    assert leaks(g, TEST_KEY_MARK) == []
    assert TEST_KEY_MARK not in g.to_json() + format_tree(g)


def test_ssh_key_not_in_a_diff_printout(distinct_key):
    """A change of a node's address changes the (secret) connection; the diff
    says so without printing the key."""
    stack = "tp16-vllm-mindspore"
    node1 = node_names(stack)[1]
    changes = changes_for(stack, ["nodes[1].host=192.0.2.99"])
    touched = {c.name for c in changes}
    assert f"{node1}-weights" in touched
    text = format_diff(changes)
    assert "[secret]" in text
    assert TEST_KEY_MARK not in text
    assert TEST_KEY_MARK not in json.dumps([c.to_dict() for c in changes])


GPUSTACK_STACKS = [s for s in STACKS if load_stack(s).spec.engine.kind in GPUSTACK_ENGINES]
# What ascendctl.preview.facts.mock_outputs answers for the two reads (stdout of the commands).
MOCK_TOKEN = "mock-registration-token"
MOCK_PASSWORD = "mock-admin-password"


@pytest.mark.parametrize("stack", GPUSTACK_STACKS)
def test_gpustack_secrets(stack):
    g, nodes = graph(stack), node_names(stack)
    for reader in ("gpustack-token", "gpustack-admin-password"):
        assert "stdout" in named(g, reader).options["additional_secret_outputs"], f"{reader}: stdout not secret"
    # Workers get the token as a secret entry of their env (GPUSTACK_TOKEN=<token>),
    # never in clear and never in their command (docs/security.md#endpoints).
    for n in nodes[1:]:
        inputs = named(g, f"{n}-container", CONTAINER).inputs
        assert f"GPUSTACK_TOKEN={MOCK_TOKEN}" in [str(v).strip() for v in secret_values(inputs["envs"])], (
            f"{n}-container: token not passed as secret env")
        assert not [t for _, t in clear_strings(inputs["envs"]) if MOCK_TOKEN in t]
        assert MOCK_TOKEN not in json.dumps(inputs.get("command") or [], default=str)
    # The smoke request gets the admin password on stdin after its script, the whole a secret.
    smoke = named(g, "smoke-test-request").inputs
    stdin = smoke.get("stdin")
    assert isinstance(stdin, Secret) and stdin.value == script_then_data(step_script(smoke), MOCK_PASSWORD + "\n"), \
        "smoke-test-request: stdin"
    # The model resource (run on the control host) gets it as a secret input, and keeps it
    # as a secret output (its read and delete log in with it).
    model = named(g, "gpustack-model-deploy")
    password = model.inputs.get("password")
    assert isinstance(password, Secret) and password.value == MOCK_PASSWORD, "gpustack-model-deploy: password"
    assert model.options["additional_secret_outputs"] == ["password"]
    assert isinstance(g.outputs.get("gpustack_admin_password"), Secret)
    for needle in (MOCK_TOKEN, MOCK_PASSWORD):
        assert leaks(g, needle) == []
        assert needle not in g.to_json()
        assert needle not in format_tree(g)


@pytest.mark.parametrize("stack", GPUSTACK_STACKS)
def test_gpustack_secrets_not_in_a_diff(stack):
    """A new image recreates the server and the workers; their (secret) token
    must not show in the diff."""
    changes = changes_for(stack, ["container.image=example/x:2.1.RC1"])
    workers = {f"{n}-container" for n in node_names(stack)[1:]}
    assert workers <= {c.name for c in changes}
    text = format_diff(changes) + json.dumps([c.to_dict() for c in changes])
    assert MOCK_TOKEN not in text and MOCK_PASSWORD not in text


@pytest.mark.parametrize("stack", GPUSTACK_STACKS)
def test_gpustack_preview_cli_masks_secrets(stack):
    """`python -m ascendctl preview --stack dp4-ep32-gpustack` (issue 4's
    "done when"): the whole tree, secrets masked."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-m", "ascendctl", "preview", "--stack", stack],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for n in node_names(stack):
        assert f"{n}-container" in out
    assert "gpustack-model-deploy" in out and "[secret]" in out
    ld = loaded(stack)
    placeholder = config_for(ld, ld.raw_config)[f"{NAMESPACE}:{ld.spec.ssh.private_key_secret}"].value
    for needle in (MOCK_TOKEN, MOCK_PASSWORD, placeholder):
        assert needle not in out


# --- 6. depth -----------------------------------------------------------------

# A Ray stack and a rank-table stack (MindIE refuses more than 4 nodes).
@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-lmdeploy"])
def test_longest_chain_does_not_grow_with_nodes(stack):
    ld = loaded(stack)
    chains = {}
    for size in (2, 8, 32):
        config = scaled_config(ld, size)
        g = record_stack(loaded_with_config(ld, config), config)
        assert len(g.of_type(ASCEND_NODE)) == size
        chains[size] = g.longest_chain()
    assert len(set(chains.values())) == 1, f"longest chain by node count: {chains}"
    assert chains[2] == graph(stack).longest_chain()


# --- 8. stack outputs --------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_stack_outputs(stack):
    g, ld = graph(stack), loaded(stack)
    spec = ld.spec
    for key in ("endpoint", "world_size", "rank_table_digest", "node_facts", "smoke_reply"):
        assert key in g.outputs, f"stack output {key} not exported"
    # The endpoint is the master's.
    master = spec.nodes[0]
    assert urlparse(g.outputs["endpoint"]).hostname == (master.address or master.host)
    # World size: every NPU of every node, and tp x pp x dp of the stack.
    p = spec.parallel
    assert g.outputs["world_size"] == len(spec.nodes) * spec.profile.devices_per_node == p.tp * p.pp * p.dp
    # Node facts as the (mocked) preflight read them: the declared hostnames and device IPs.
    facts = g.outputs["node_facts"]
    assert sorted(facts) == sorted(node_names(stack))
    for n in spec.nodes:
        assert facts[n.name]["hostname"] == n.hostname
        # None declared and none found on a profile without a fabric (300I Duo).
        assert facts[n.name]["device_ips"] == (n.device_ips if spec.profile.network.device_ips else [])
        for ip in facts[n.name]["device_ips"]:
            ipaddress.ip_address(ip)
    # The rank table's digest: the core's table for the declared IPs, or "" without one.
    if spec.engine.kind in RANK_TABLE_ENGINES:
        pods = None
        if spec.profile.rank_table_version == "1.2":
            # Atlas A3: the SDIDs and super pod the mocked preflight prints.
            from ascend_inference.facts import parse_preflight, super_pods_of
            from ascendctl.preview.facts import synthetic_preflight
            pods = super_pods_of([parse_preflight(n.name, synthetic_preflight(ld, n.name),
                                                  spec.profile.devices_per_node) for n in spec.nodes])
            assert pods is not None
        assert g.outputs["rank_table_digest"] == rank_table_digest(rank_table(ld, declared_device_ips(ld), pods))
        component = named(g, "rank-table", RANK_TABLE)
        assert component.outputs["digest"] == g.outputs["rank_table_digest"]
    else:
        assert g.outputs["rank_table_digest"] == ""
    assert isinstance(g.outputs["smoke_reply"], (str, Secret))
