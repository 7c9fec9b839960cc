"""Tests for ascendctl/preview/: the offline preview/diff recorder.

A toy program (one ComponentResource with two pulumi-command remote Commands, a
pulumi-docker Provider + Container and a smoke-test Command) is run under the
SDK's mocks; the tests check what the recorder sees, how it prints and how two
recordings diff.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import json
import threading
import types
from typing import Any

import pulumi
import pulumi.runtime
import pulumi_command.remote as remote
import pulumi_docker as docker
import pytest
from pulumi.runtime import settings as pulumi_settings

from ascendctl.preview import sdk
from ascendctl.preview.diff import diff_graphs
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.paths import format_path, parse_path, path_matches
from ascendctl.preview.printer import format_diff, format_tree
from ascendctl.preview.recorder import _unwrap_sdk_error, record_graph
from ascendctl.preview.values import UNKNOWN, Secret

pytestmark = pytest.mark.graph

PROJECT = "ascend-inference"
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
           "b3BlbnNzaC1rZXktdjEAAAAA-TOPSECRET-9f8e7d\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
API_TOKEN = "tok-CLEARTEXT-5a4b3c2d1e"
PREFLIGHT_SCRIPT = "#!/bin/bash\nset -euo pipefail\nnpu-smi info\nhccn_tool -i 0 -ip -g\n"

STACK_URN = f"urn:pulumi:dev::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-dev"
TOY = "test:toy:Node"


class ToyNode(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        host: str,
        key: pulumi.Output[str],
        token: pulumi.Output[str],
        max_num_seqs: int,
        image: str,
        serve_trigger: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOY, name, None, opts)
        conn = remote.ConnectionArgs(host=host, user="root", private_key=key)
        child = pulumi.ResourceOptions(parent=self)

        self.preflight = remote.Command(
            f"{name}-preflight",
            connection=conn,
            create=PREFLIGHT_SCRIPT,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        facts = self.preflight.stdout.apply(json.loads)
        self.serve = remote.Command(
            f"{name}-serve",
            connection=conn,
            create=facts.apply(lambda f: f"start-server --host {f['hostname']} --npus {f['npus']}"),
            environment={"MAX_NUM_SEQS": str(max_num_seqs), "HCCL_CONNECT_TIMEOUT": "7200"},
            triggers=[serve_trigger],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.preflight],
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
            ),
        )
        self.provider = docker.Provider(f"{name}-docker", host=f"ssh://root@{host}", opts=child)
        self.container = docker.Container(
            f"{name}-container",
            name="mindie",
            image=image,
            envs=[token.apply(lambda t: f"API_TOKEN={t}"), "ASCEND_VISIBLE_DEVICES=0-7"],
            network_mode="host",
            devices=[docker.ContainerDeviceArgs(host_path="/dev/davinci0")],
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=self.provider,
                depends_on=[self.serve],
                delete_before_replace=True,
                ignore_changes=["labels"],
            ),
        )
        self.register_outputs({"endpoint": f"http://{host}:1025"})


def toy_program() -> None:
    cfg = pulumi.Config()
    key = cfg.require_secret("sshPrivateKey")
    token = cfg.require_secret("apiToken")
    serve = cfg.require_object("serve")
    node = ToyNode(
        "node0",
        host=cfg.require("host"),
        key=key,
        token=token,
        max_num_seqs=int(serve["max_num_seqs"]),
        image=cfg.get("image") or "mindie:1.0",
        serve_trigger=cfg.get("serveTrigger") or "v1",
    )
    smoke = remote.Command(
        "smoke",
        connection=remote.ConnectionArgs(host=cfg.require("host"), user="root", private_key=key),
        create=node.container.image.apply(lambda img: f"curl -sf http://127.0.0.1:1025/health # {img}"),
        opts=pulumi.ResourceOptions(depends_on=[node]),
    )
    for i in range(int(cfg.get("extraNodes") or 0)):
        remote.Command(
            f"extra{i}",
            connection=remote.ConnectionArgs(host=f"10.0.0.{10 + i}", user="root", private_key=key),
            create="true",
        )
    pulumi.export("endpoint", "http://10.0.0.1:1025")
    pulumi.export("sshKey", key)
    pulumi.export("smokeReply", smoke.stdout)
    pulumi.export("maxNumSeqs", serve["max_num_seqs"])


def base_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "host": "10.0.0.1",
        "sshPrivateKey": Secret(SSH_KEY),
        "apiToken": Secret(API_TOKEN),
        "serve": {"max_num_seqs": 256},
    }
    cfg.update(overrides)
    return cfg


def preflight_outputs(args) -> dict:
    if args.typ == "command:remote:Command" and args.name.endswith("-preflight"):
        return {"stdout": json.dumps({"hostname": "ascend-a", "npus": 8})}
    return {}


def record(**overrides: Any) -> Graph:
    return record_graph(toy_program, base_config(**overrides), outputs_for=preflight_outputs)


def provider_replace_keys(rec: ResourceRecord) -> set[str]:
    """What the real providers force-replace (not visible in the request)."""
    if rec.type == "docker:index/container:Container":
        return {"image", "envs", "networkMode", "devices", "name", "command"}
    if rec.type == "command:remote:Command":
        return {"connection"}  # `create` changes are updates
    if rec.type == "pulumi:providers:docker":
        return {"host"}
    return set()


@pytest.fixture(scope="module")
def graph() -> Graph:
    return record()


def urn(graph: Graph, name: str) -> str:
    return graph.by_name(name).urn


# --------------------------------------------------------------------------------------
# Types, parents, dependencies, options
# --------------------------------------------------------------------------------------


def test_types_and_registration(graph: Graph) -> None:
    names = [(r.type, r.name) for r in graph.resources]
    assert sorted(names) == sorted(
        [
            (TOY, "node0"),
            ("command:remote:Command", "node0-preflight"),
            ("command:remote:Command", "node0-serve"),
            ("pulumi:providers:docker", "node0-docker"),
            ("docker:index/container:Container", "node0-container"),
            ("command:remote:Command", "smoke"),
        ]
    )
    assert graph.stack_urn == STACK_URN
    assert graph.by_name("node0").custom is False
    assert all(r.custom for r in graph.resources if r.type != TOY)
    assert len(graph.of_type("command:remote:Command")) == 3
    # registration order is topological: nobody is registered before what it waits for
    pos = {r.urn: i for i, r in enumerate(graph.resources)}
    for r in graph.resources:
        for w in graph.waits_for(r):
            assert pos[w] < pos[r.urn], (r.name, w)


def test_urns_and_parents(graph: Graph) -> None:
    node = graph.by_name("node0")
    assert node.urn == f"urn:pulumi:dev::{PROJECT}::{TOY}::node0"
    assert node.parent_urn == STACK_URN
    serve = graph.by_name("node0-serve")
    assert serve.urn == f"urn:pulumi:dev::{PROJECT}::{TOY}$command:remote:Command::node0-serve"
    children = {r.name for r in graph.children_of(node.urn)}
    assert children == {"node0-preflight", "node0-serve", "node0-docker", "node0-container"}
    assert {r.name for r in graph.children_of(None)} == {"node0", "smoke"}
    assert {r.name for r in graph.descendants_of(node)} == children


def test_dependencies(graph: Graph) -> None:
    pre, serve = graph.by_name("node0-preflight"), graph.by_name("node0-serve")
    container, provider = graph.by_name("node0-container"), graph.by_name("node0-docker")
    smoke = graph.by_name("smoke")

    assert pre.dependencies == []
    # depends_on + data flow (create is computed from the preflight's stdout)
    assert serve.dependencies == [pre.urn]
    assert serve.property_dependencies["create"] == [pre.urn]
    assert serve.property_dependencies["environment"] == []
    # a pure depends_on edge is not behind any input
    assert container.dependencies == [serve.urn]
    assert container.explicit_dependencies == [serve.urn]
    assert container.provider_urn == provider.urn
    assert container.provider == f"{provider.urn}::node0-docker-id"
    # depends_on=[component] is expanded by the SDK to the component's custom children
    assert set(smoke.dependencies) == {pre.urn, serve.urn, provider.urn, container.urn}
    assert smoke.property_dependencies["create"] == [container.urn]

    assert graph.depends_on(smoke.urn, pre.urn)
    assert graph.depends_on(container.urn, pre.urn)  # via serve
    assert not graph.depends_on(container.urn, pre.urn, transitive=False)
    assert graph.depends_on(container, provider)  # provider edge
    assert not graph.depends_on(pre.urn, serve.urn)
    assert not graph.depends_on(serve.urn, container.urn)
    # parent edges: a child waits for its component
    assert graph.depends_on(pre.urn, graph.by_name("node0").urn)
    assert not graph.depends_on(pre.urn, graph.by_name("node0").urn, via_parent=False)


def test_longest_chain(graph: Graph) -> None:
    # preflight -> serve -> container -> smoke (provider is parallel to preflight)
    assert graph.longest_chain() == 4
    assert [r.name for r in graph.critical_path()] == ["node0-preflight", "node0-serve", "node0-container", "smoke"]
    # more independent resources do not lengthen the chain
    assert record(extraNodes=5).longest_chain() == 4


def test_options(graph: Graph) -> None:
    serve = graph.by_name("node0-serve")
    assert serve.options["delete_before_replace"] is True
    assert serve.options["custom_timeouts"] == {"create": "20m"}
    # merged in by pulumi-command's Command._internal_init, not by our program
    assert serve.options["replace_on_changes"] == ["triggers[*]"]
    assert serve.options["additional_secret_outputs"] == ["connection"]
    assert serve.options["retain_on_delete"] is False
    assert graph.by_name("node0-preflight").options["retain_on_delete"] is True
    container = graph.by_name("node0-container")
    assert container.options["ignore_changes"] == ["labels"]
    assert container.options["replace_on_changes"] == []
    assert container.options["protect"] is False
    assert graph.by_name("node0-docker").options["version"] == importlib.metadata.version("pulumi_docker")


def test_inputs_wire_names_and_config(graph: Graph) -> None:
    serve = graph.by_name("node0-serve")
    assert serve.inputs["environment"] == {"HCCL_CONNECT_TIMEOUT": "7200", "MAX_NUM_SEQS": "256"}
    assert serve.inputs["triggers"] == ["v1"]
    assert serve.inputs["create"] == "start-server --host ascend-a --npus 8"  # from outputs_for
    container = graph.by_name("node0-container")
    assert container.inputs["networkMode"] == "host"
    assert container.inputs["devices"] == [{"hostPath": "/dev/davinci0"}]
    assert container.inputs["envs"][1] == "ASCEND_VISIBLE_DEVICES=0-7"
    assert graph.by_name("node0-docker").inputs["host"] == "ssh://root@10.0.0.1"
    assert graph.outputs["maxNumSeqs"] == 256  # require_object(JSON) round trip
    assert graph.outputs["endpoint"] == "http://10.0.0.1:1025"
    assert graph.by_name("node0").outputs == {"endpoint": "http://10.0.0.1:1025"}


# --------------------------------------------------------------------------------------
# Secrets and unknowns
# --------------------------------------------------------------------------------------


def test_secrets_are_recorded_as_secret(graph: Graph) -> None:
    serve = graph.by_name("node0-serve")
    # pulumi-command wraps the whole connection in Output.secret
    assert isinstance(serve.inputs["connection"], Secret)
    assert serve.inputs["connection"].value["privateKey"] == SSH_KEY
    envs = graph.by_name("node0-container").inputs["envs"]
    assert envs[0] == Secret(f"API_TOKEN={API_TOKEN}")
    assert graph.outputs["sshKey"] == Secret(SSH_KEY)


def _assert_no_cleartext(text: str) -> None:
    for needle in ("TOPSECRET", "CLEARTEXT", "BEGIN OPENSSH", API_TOKEN, "b3BlbnNzaC1rZXk"):
        assert needle not in text


def test_secrets_never_printed(graph: Graph) -> None:
    tree = format_tree(graph)
    as_json = graph.to_json()
    _assert_no_cleartext(tree)
    _assert_no_cleartext(as_json)
    _assert_no_cleartext(repr(graph))
    _assert_no_cleartext(str(graph.by_name("node0-serve")))
    assert "connection: [secret]" in tree
    assert 'envs: [[secret], "ASCEND_VISIBLE_DEVICES=0-7"]' in tree
    assert "sshKey: [secret]" in tree
    doc = json.loads(as_json)
    serve = next(r for r in doc["resources"] if r["name"] == "node0-serve")
    assert serve["inputs"]["connection"] == {"$secret": "[secret]"}


def test_secret_changes_are_masked_in_diff(graph: Graph) -> None:
    after = record(sshPrivateKey=Secret(SSH_KEY.replace("TOPSECRET", "ROTATED")), apiToken=Secret("tok-CLEARTEXT-new"))
    changes = diff_graphs(graph, after, replace_keys=provider_replace_keys)
    text = format_diff(changes)
    _assert_no_cleartext(text)
    assert "ROTATED" not in text and "tok-CLEARTEXT-new" not in text
    assert "connection: [secret] -> [secret]" in text
    as_json = json.dumps([c.to_dict() for c in changes])
    _assert_no_cleartext(as_json)
    assert "ROTATED" not in as_json
    by_name = {c.name: c for c in changes}
    assert by_name["node0-serve"].action == "replace"
    assert by_name["node0-serve"].replace_paths == ["connection"]
    assert by_name["node0-container"].action == "replace"
    assert by_name["node0-container"].paths == ["envs[0]"]


def test_unknowns_without_mocked_outputs() -> None:
    g = record_graph(toy_program, base_config())  # the preflight's stdout is not mocked
    serve = g.by_name("node0-serve")
    assert serve.inputs["create"] is UNKNOWN
    assert g.outputs["smokeReply"] is UNKNOWN
    assert serve.inputs["environment"]["MAX_NUM_SEQS"] == "256"  # known values stay known
    tree = format_tree(g)
    assert "create: (known after apply)" in tree
    assert "smokeReply: (known after apply)" in tree
    doc = json.loads(g.to_json())
    s = next(r for r in doc["resources"] if r["name"] == "node0-serve")
    assert s["inputs"]["create"] == {"$unknown": "(known after apply)"}


def test_tree_shape_and_multiline_strings(graph: Graph) -> None:
    tree = format_tree(graph)
    lines = tree.splitlines()
    assert lines[0] == f"+ pulumi:pulumi:Stack {PROJECT}-dev"
    assert f"    + {TOY} node0" in lines
    assert "        + command:remote:Command node0-serve" in lines
    assert "    + command:remote:Command smoke" in lines
    assert any(line.strip() == "after: node0-preflight" for line in lines)
    assert any(line.strip() == "provider: node0-docker" for line in lines)
    assert any("delete_before_replace" in line and "timeouts(create=20m)" in line for line in lines)
    # the script is summarized, not dumped
    assert "npu-smi info" not in tree
    assert '"#!/bin/bash" (4 lines, sha256 ' in tree
    assert "environment.MAX_NUM_SEQS: \"256\"" in tree
    short = format_tree(graph, show_inputs=False)
    assert "MAX_NUM_SEQS" not in short and "after: node0-preflight" in short


# --------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------


def test_no_change(graph: Graph) -> None:
    assert diff_graphs(graph, record(), replace_keys=provider_replace_keys) == []
    assert format_diff([]) == "No changes.\n"


def test_config_change_updates_exactly_its_users(graph: Graph) -> None:
    after = record(serve={"max_num_seqs": 128})
    changes = diff_graphs(graph, after, replace_keys=provider_replace_keys)
    assert [(c.name, c.action, c.paths) for c in changes] == [
        ("node0-serve", "update", ["environment.MAX_NUM_SEQS"])
    ]
    text = format_diff(changes)
    assert 'environment.MAX_NUM_SEQS: "256" -> "128"' in text
    assert "1 to update" in text


def test_triggers_change_replaces(graph: Graph) -> None:
    changes = diff_graphs(graph, record(serveTrigger="v2"))
    assert [(c.name, c.action) for c in changes] == [("node0-serve", "replace")]
    ch = changes[0]
    assert ch.replace_paths == ["triggers[0]"]
    assert "replace_on_changes: triggers[*]" in ch.reason
    assert '+- replace' in format_diff(changes)


def test_provider_replace_keys_and_propagation(graph: Graph) -> None:
    after = record(image="mindie:2.0")
    # without provider knowledge an image change is only an update
    plain = diff_graphs(graph, after)
    assert {c.name: c.action for c in plain} == {"node0-container": "update", "smoke": "update"}

    changes = diff_graphs(graph, after, replace_keys=provider_replace_keys)
    by_name = {c.name: c for c in changes}
    assert set(by_name) == {"node0-container", "smoke"}
    assert by_name["node0-container"].action == "replace"
    assert by_name["node0-container"].replace_paths == ["image"]
    # smoke's `create` is computed from the container's image: update, with the cause
    assert by_name["smoke"].action == "update"
    assert by_name["smoke"].paths == ["create"]
    assert "because node0-container is replaced" in by_name["smoke"].reason


def test_provider_replacement_replaces_its_resources(graph: Graph) -> None:
    after = record(host="10.0.0.2")
    changes = diff_graphs(graph, after, replace_keys=provider_replace_keys)
    by_name = {c.name: c for c in changes}
    assert by_name["node0-docker"].action == "replace"
    assert by_name["node0-container"].action == "replace"
    assert "provider node0-docker is replaced" in by_name["node0-container"].reason
    assert by_name["node0-preflight"].action == "replace"  # connection (secret) changed


def test_create_and_delete(graph: Graph) -> None:
    bigger = record(extraNodes=2)
    grow = diff_graphs(graph, bigger)
    assert [(c.name, c.action) for c in grow] == [("extra0", "create"), ("extra1", "create")]
    shrink = diff_graphs(bigger, graph)
    assert [(c.name, c.action) for c in shrink] == [("extra0", "delete"), ("extra1", "delete")]
    text = format_diff(shrink)
    assert "-  delete" in text and "2 to delete" in text


def test_ignore_changes_is_applied() -> None:
    def prog(label: str):
        def program() -> None:
            docker.Container(
                "c",
                image="img",
                labels=[docker.ContainerLabelArgs(label="l", value=label)],
                opts=pulumi.ResourceOptions(ignore_changes=["labels"]),
            )

        return program

    a, b = record_graph(prog("a"), {}), record_graph(prog("b"), {})
    assert a.by_name("c").inputs["labels"] == [{"label": "l", "value": "a"}]
    assert diff_graphs(a, b, replace_keys=provider_replace_keys) == []


def test_nested_urns_and_alias_matching() -> None:
    class Outer(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("test:toy:Outer", name, None, None)
            self.inner = pulumi.ComponentResource("test:toy:Inner", f"{name}-inner", None,
                                                  pulumi.ResourceOptions(parent=self))

    def flat() -> None:
        remote.Command("cmd", connection=remote.ConnectionArgs(host="h"), create="a")

    def nested() -> None:
        outer = Outer("outer")
        remote.Command(
            "cmd",
            connection=remote.ConnectionArgs(host="h"),
            create="a",
            opts=pulumi.ResourceOptions(parent=outer.inner, aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]),
        )

    before, after = record_graph(flat, {}), record_graph(nested, {})
    # the engine's URN scheme: no Stack type for top-level resources, the
    # parent's full qualified type for nested ones
    assert before.by_name("cmd").urn == f"urn:pulumi:dev::{PROJECT}::command:remote:Command::cmd"
    assert after.by_name("cmd").urn == (
        f"urn:pulumi:dev::{PROJECT}::test:toy:Outer$test:toy:Inner$command:remote:Command::cmd"
    )
    changes = diff_graphs(before, after)
    assert [(c.name, c.action) for c in changes] == [("outer", "create"), ("outer-inner", "create")]


def test_assets_and_reads() -> None:
    def program(text: str):
        def run() -> None:
            remote.CopyToRemote(
                "rank-table",
                connection=remote.ConnectionArgs(host="h"),
                source=pulumi.StringAsset(text),
                remote_path="/etc/hccl.json",
            )
            docker.RemoteImage.get("image", "sha256:abc")

        return run

    a = record_graph(program('{\n "server_count": "2"\n}\n'), {})
    b = record_graph(program('{\n "server_count": "4"\n}\n'), {})
    assert a.by_name("rank-table").inputs["source"] == {"$asset": {"text": '{\n "server_count": "2"\n}\n'}}
    image = a.by_name("image")
    assert image.options["read_id"] == "sha256:abc" and image.options["protect"] is False
    tree = format_tree(a)
    assert "> docker:index/remoteImage:RemoteImage image" in tree
    assert "source: {$asset: {text: \"{\" (3 lines, sha256 " in tree
    changes = diff_graphs(a, b)
    assert [(c.name, c.action, c.paths) for c in changes] == [("rank-table", "update", ["source"])]


def test_paths() -> None:
    assert format_path(["environment", "MAX_NUM_SEQS"]) == "environment.MAX_NUM_SEQS"
    assert format_path(["triggers", 0]) == "triggers[0]"
    assert format_path(["mounts", "/dev/davinci0"]) == 'mounts["/dev/davinci0"]'
    assert parse_path('a.b[3]["x.y"][*]') == ["a", "b", 3, "x.y", "*"]
    assert path_matches("triggers[*]", "triggers[0]")
    assert path_matches("triggers[*]", "triggers")  # whole list changed
    assert path_matches("connection", "connection.host")
    assert not path_matches("triggers[*]", "create")
    assert not path_matches("environment.A", "environment.B")
    assert path_matches("labels", "labels[0].value", within_only=True)
    assert not path_matches("environment.A", "environment", within_only=True)


# --------------------------------------------------------------------------------------
# Errors, repeatability, isolation, speed
# --------------------------------------------------------------------------------------


def test_value_error_in_program() -> None:
    def program() -> None:
        raise ValueError("stack tp16: tp=16 needs 16 NPUs, nodes give 8")

    with pytest.raises(ValueError, match=r"^stack tp16: tp=16 needs 16 NPUs, nodes give 8$"):
        record_graph(program, {})


def test_value_error_inside_apply_feeding_a_resource() -> None:
    def check(facts: str) -> str:
        raise ValueError("node0: 7 healthy NPUs, stack says 8")

    def program() -> None:
        pre = remote.Command("pre", connection=remote.ConnectionArgs(host="h"), create="npu-smi info")
        remote.Command("next", connection=remote.ConnectionArgs(host="h"), create=pre.stdout.apply(check))

    with pytest.raises(ValueError) as info:
        record_graph(program, {}, outputs_for=lambda a: {"stdout": "x"})
    assert str(info.value) == "node0: 7 healthy NPUs, stack says 8"


def test_an_sdk_wrapper_that_is_its_own_cause_is_returned_as_it_is() -> None:
    # The SDK's wait re-raises a failed registration `from` the exception it
    # recorded for it, which can be the same object: the chain then loops.
    wrapper = ValueError("While processing resource: 'next', type: 'command:remote:Command'\nboom")
    wrapper.__cause__ = wrapper
    assert _unwrap_sdk_error(wrapper) is wrapper


def test_the_first_failure_is_raised_when_several_resources_fail() -> None:
    def check(facts: str) -> str:
        raise ValueError(f"node {facts}: 7 healthy NPUs, stack says 8")

    def program() -> None:
        for node in ("node0", "node1", "node2"):
            pre = remote.Command(f"{node}-pre", connection=remote.ConnectionArgs(host="h"), create="npu-smi info")
            remote.Command(f"{node}-next", connection=remote.ConnectionArgs(host="h"), create=pre.stdout.apply(check))

    for _ in range(3):
        with pytest.raises(ValueError) as info:
            record_graph(program, {}, outputs_for=lambda a: {"stdout": a.name.split("-")[0]})
        assert str(info.value) == "node node0: 7 healthy NPUs, stack says 8"


# Run in a process of its own, as the offline CLI runs: each run collects the
# previous run's parked garbage (`_collect_previous_run`), a full collection
# whose cost grows with the whole heap, and a test worker's heap is a whole
# test session's (300 runs took 95 s there, 313 s under coverage on a busy
# machine; here about 15 s).
WHATEVER_ORDER = """
import pulumi_command.remote as remote
from ascendctl.preview.recorder import record_graph

def check(facts):
    raise ValueError("node0: 7 healthy NPUs, stack says 8")

def program():
    pre = remote.Command("pre", connection=remote.ConnectionArgs(host="h"), create="npu-smi info")
    remote.Command("next", connection=remote.ConnectionArgs(host="h"), create=pre.stdout.apply(check))

messages, spacers = set(), []
for run in range(300):
    spacers.append([object() for _ in range(run % 37)])
    try:
        record_graph(program, {}, outputs_for=lambda a: {"stdout": "x"})
        messages.add("no error")
    except Exception as error:
        messages.add(f"{type(error).__name__}: {error}")
print(sorted(messages))
"""


def test_the_programs_error_whatever_order_the_sdk_sees_the_failures_in() -> None:
    # Which of a failing apply's Output and the registration it feeds fails
    # first in the recorder's view follows object addresses; with the
    # registration still under way when the recorder stopped, the SDK raised
    # its own wrapper instead (a few runs in a hundred). Vary the addresses.
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", WHATEVER_ORDER], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['ValueError: node0: 7 healthy NPUs, stack says 8']", done.stdout + done.stderr


def test_error_inside_unused_apply_and_other_types() -> None:
    def program() -> None:
        pre = remote.Command("pre", connection=remote.ConnectionArgs(host="h"), create="x")
        pre.id.apply(lambda _: (_ for _ in ()).throw(KeyError("nodes[3].device_ip")))

    with pytest.raises(KeyError, match="nodes\\[3\\].device_ip"):
        record_graph(program, {})

    with pytest.raises(pulumi.ConfigMissingError):
        record_graph(lambda: pulumi.Config().require("nodes"), {})


def test_runtime_is_usable_after_errors_and_runs_are_repeatable(graph: Graph) -> None:
    with pytest.raises(ValueError):
        record_graph(lambda: (_ for _ in ()).throw(ValueError("boom")), {})
    again = record()
    assert again == graph
    assert again.to_json() == graph.to_json()
    assert [r.urn for r in again.resources] == [r.urn for r in graph.resources]


def test_config_namespace_and_secret_keys() -> None:
    seen: dict[str, Any] = {}

    def program() -> None:
        cfg = pulumi.Config(PROJECT)
        seen["plain"] = cfg.require("host")
        seen["flag"] = cfg.require_bool("fixTls")
        seen["obj"] = cfg.require_object("nodes")
        seen["other_ns"] = pulumi.Config("docker").get("host")
        seen["secret_keys"] = pulumi.runtime.is_config_secret(f"{PROJECT}:pw")
        remote.Command("c", connection=remote.ConnectionArgs(host="h", password=cfg.require_secret("pw")), create="x")

    g = record_graph(
        program,
        {"host": "h1", "fixTls": True, "nodes": [{"name": "a"}], "docker:host": "ssh://x", "pw": "p4ss"},
        secret_keys=["pw"],
    )
    assert seen == {"plain": "h1", "flag": True, "obj": [{"name": "a"}], "other_ns": "ssh://x", "secret_keys": True}
    assert isinstance(g.by_name("c").inputs["connection"], Secret)
    assert "p4ss" not in format_tree(g) and "p4ss" not in g.to_json()


def test_does_not_disturb_callers_mocks() -> None:
    class CallerMocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            return "caller-id", args.inputs

        def call(self, args):
            return {}

    def scenario() -> None:
        pulumi.runtime.set_mocks(CallerMocks(), project="caller", stack="s", preview=False)
        monitor = pulumi_settings.get_monitor()
        root = pulumi_settings.get_root_resource()
        g = record()
        assert g.by_name("node0").urn.startswith(f"urn:pulumi:dev::{PROJECT}::")
        assert pulumi_settings.get_monitor() is monitor
        assert pulumi_settings.get_root_resource() is root
        assert pulumi_settings.get_project() == "caller"
        assert pulumi_settings.is_dry_run() is False

    # run the caller in its own context and undo the SDK's ContextProperty
    # default quirk so this test leaves nothing behind either
    saved = sdk.settings_defaults()
    try:
        contextvars.copy_context().run(scenario)
    finally:
        sdk.restore_settings_defaults(saved)


def test_timeout_instead_of_hang() -> None:
    def program() -> None:
        never = asyncio.get_event_loop().create_future()
        pulumi.Output.from_input(never).apply(str)

    # The recorder gives up with a clear error instead of waiting forever.
    with pytest.raises(TimeoutError, match="did not finish within 0.5s"):
        record_graph(program, {}, timeout=0.5)


def test_the_final_wait_passes_its_own_cancellation_on(monkeypatch) -> None:
    # At its timeout the recorder cancels every task and waits for them to
    # end. The final wait once caught the cancellation as if a registration
    # had failed, and went on waiting for the registrations under way: a task
    # that does not end when cancelled can hang that clean-up for ever.
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        registration = loop.create_future()  # under way, never answered
        monkeypatch.setattr(sdk._settings, "_get_rpc_manager", lambda: types.SimpleNamespace(rpcs=[registration]))
        monkeypatch.setattr(sdk._settings, "SETTINGS", types.SimpleNamespace(outputs=set(), lock=threading.Lock()))
        wait = asyncio.ensure_future(sdk._settle())
        await asyncio.sleep(0)  # the wait is now on the registration
        wait.cancel()
        await asyncio.wait({wait}, timeout=5)
        return wait.done(), wait.cancelled()

    assert asyncio.run(scenario()) == (True, True)


def test_records_hundreds_of_resources() -> None:
    """How long it takes is measured by benchmarks/preview_scaling.py, not here."""
    def program() -> None:
        prev = None
        for i in range(300):
            prev = remote.Command(
                f"c{i}",
                connection=remote.ConnectionArgs(host=f"10.0.{i // 250}.{i % 250}"),
                create=f"echo {i}",
                opts=pulumi.ResourceOptions(depends_on=[prev] if prev is not None and i % 10 else []),
            )

    g = record_graph(program, {})
    assert len(g.resources) == 300
    assert g.longest_chain() == 10


def test_a_runs_garbage_is_parked_then_collected_by_the_next_run() -> None:
    """A run leaves its cyclic garbage frozen (a CLI process exits next, and
    scanning it would cost a fifth of a large preview); the next run in the
    same process collects it before starting, so a test session does not
    accumulate runs."""
    import gc
    import weakref

    class Marker:
        pass

    kept: list[weakref.ref] = []

    def program() -> None:
        marker = Marker()
        marker.self = marker  # type: ignore[attr-defined]  # a cycle: only the GC frees it
        kept.append(weakref.ref(marker))
        remote.Command("c", connection=remote.ConnectionArgs(host="10.0.0.1"), create="true")

    record_graph(program, {})
    assert kept[0]() is not None, "the first run's garbage is parked, not collected"
    assert gc.get_freeze_count() > 0
    record_graph(program, {})
    assert kept[0]() is None, "the second run collected the first run's garbage"
    assert kept[1]() is not None


# --- node checks (local.run invokes) -------------------------------------------


def test_node_checks_and_the_registrations_that_waited_for_them():
    """A check is recorded with its name, node, parent and the resources its
    depends_on named; a registration's `after_checks` are exactly the checks
    its depends_on held `after(...)` of. A resource registered after a check
    answered, without waiting for it, has none: the record is what
    depends_on held, not what had happened to answer first."""
    from components.common import CHECK_AFTER_ENV, CHECK_ENV, NodeConnection, after, node_check

    def program() -> None:
        group = pulumi.ComponentResource("test:index:Node", "n0")
        connection = NodeConnection(remote.ConnectionArgs(host="10.0.0.1"), "ssh://root@10.0.0.1:22",
                                    ("ssh", "root@10.0.0.1"))
        setup = remote.Command("n0-setup", connection=connection.args, create="true",
                               opts=pulumi.ResourceOptions(parent=group))
        facts = node_check("n0-preflight", node="n0", connection=connection, script="echo facts", parent=group,
                           depends_on=[setup])
        ping = node_check("n0-ping", node="n0", connection=connection, script=facts.apply(lambda f: f"echo {f}"),
                          parent=group, depends_on=[after(facts)])
        remote.Command("n0-step", connection=connection.args, create="true",
                       opts=pulumi.ResourceOptions(parent=group, depends_on=[after(facts), after(ping)]))
        remote.Command("n0-unrelated", connection=connection.args, create="true",
                       opts=pulumi.ResourceOptions(parent=group, depends_on=[setup]))
        pulumi.export("ping", ping)

    def call_for(args) -> dict:
        return {"stdout": f"ran {args.args['environment'][CHECK_ENV]}", "stderr": ""}

    def outputs_for(args) -> dict:
        # What n0-setup printed: known once it ran (in a preview of a create it is unknown).
        return {"stdout": "set up", "stderr": ""} if args.name == "n0-setup" else {}

    g = record_graph(program, {}, call_for=call_for, outputs_for=outputs_for)
    assert [c.name for c in g.checks] == ["n0-preflight", "n0-ping"]
    preflight, ping = g.check("n0-preflight"), g.check("n0-ping")
    assert preflight.ran and ping.ran and preflight.node == ping.node == "n0"
    assert preflight.parent_urn == g.by_name("n0").urn
    assert preflight.dependencies == [g.by_name("n0-setup").urn] and preflight.after_checks == []
    assert ping.after_checks == ["n0-preflight"] and ping.args["stdin"] == "echo ran n0-preflight"
    # The ids of the steps a check follows are its input (unknown while a step is still to be
    # created, so a preview does not run the check on a node the step has not touched yet);
    # a check that follows only other checks has none.
    assert len(preflight.args["environment"][CHECK_AFTER_ENV]) == 64
    assert CHECK_AFTER_ENV not in ping.args["environment"]
    # Before n0-setup ran (its stdout unknown, a preview of its create), its check is not run.
    fresh = record_graph(program, {}, call_for=call_for)
    assert not fresh.check("n0-preflight").ran and not fresh.check("n0-ping").ran
    assert g.by_name("n0-step").after_checks == ["n0-preflight", "n0-ping"]
    assert g.by_name("n0-unrelated").after_checks == [] and g.checks_before(g.by_name("n0-unrelated")) == set()
    assert g.checks_before(g.by_name("n0-step")) == {"n0-preflight", "n0-ping"}
    assert g.check_waits_for(ping, g.by_name("n0-setup"))
    assert g.runs_after(g.by_name("n0-step"), g.by_name("n0-setup"))
    assert g.outputs["ping"] == "ran n0-ping"
