"""The graph stays linear in the node count: stacks scaled past the
all-pairs threshold (`ascend_inference.peers`) are recorded under the SDK's
mocks and their dependency edges counted. Structure only; the times are
measured by benchmarks/preview_scaling.py."""
from __future__ import annotations

import functools

import pytest

import components.deployment as deployment_module
from ascend_inference.peers import ALL_PAIRS_UP_TO, ping_targets
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.conftest import NS, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.graph

SMALL, LARGE = ALL_PAIRS_UP_TO + 4, 2 * (ALL_PAIRS_UP_TO + 4)


@functools.cache
def scaled_graph(stack: str, count: int):
    base = load_stack(stack)
    config = scaled_config(base, count)
    return record_stack(loaded_with_config(base, config), config)


def direct(g, rec) -> set[str]:
    """Names of the custom resources `rec` names among its own dependencies."""
    return {g.by_urn[u].name for u in rec.dependencies if u in g.by_urn and g.by_urn[u].custom}


def edge_count(g) -> int:
    return sum(len([u for u in r.dependencies if u in g.by_urn]) for r in g.resources)


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-lmdeploy"])
def test_dependency_edges_grow_linearly(stack):
    """Doubling the nodes at most doubles the dependency edges (plus a little
    for the one-per-cluster steps); before, pings and rank-table copies each
    took every node's facts, so edges grew with the square."""
    small, large = scaled_graph(stack, SMALL), scaled_graph(stack, LARGE)
    ratio = edge_count(large) / edge_count(small)
    assert ratio <= 2.1, f"{edge_count(small)} edges at {SMALL} nodes, {edge_count(large)} at {LARGE}"


def test_each_ping_waits_only_for_its_targets():
    g = scaled_graph("tp16-vllm-mindspore", LARGE)
    for i in range(LARGE):
        # A node check: it waits for its own node's facts (so its own link
        # down is reported by its preflight, never as a peer's failed ping)
        # and its targets' facts, nothing else.
        ping = g.check(f"node{i}-peer-ping")
        assert ping.ran and ping.dependencies == []
        assert set(ping.after_checks) == {f"node{j}-preflight" for j in [i, *ping_targets(LARGE, i)]}, ping.name
        assert len(ping.after_checks) == 1 + len(ping_targets(LARGE, i))


def test_rank_table_copies_read_only_the_gate():
    """The copies take the verified device IPs as the gate recorded them (by
    value) and wait for `cluster-verified` itself: one edge each, not one per
    node, and no node check of their own."""
    g = scaled_graph("tp16-lmdeploy", LARGE)
    gate = g.by_name("cluster-verified")
    assert {f"node{i}-preflight" for i in range(LARGE)} <= set(gate.after_checks)
    assert {f"node{i}-peer-ping" for i in range(LARGE)} <= set(gate.after_checks)
    for i in range(LARGE):
        copy = g.by_name(f"node{i}-rank-table")
        assert direct(g, copy) == {"cluster-verified"} and copy.after_checks == []


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-lmdeploy"])
def test_per_node_steps_wait_for_a_bounded_number_of_resources(stack):
    """Only the steps that gather the cluster (the gate, Ray's head, which
    waits for every node's in-container checks, Ray verify, the serving start
    and readiness) wait for something per node."""
    g = scaled_graph(stack, LARGE)
    gathering = {"cluster-verified", "node0-ray-head", "ray-verify", "node0-serve", "serving-ready"}
    for rec in g.resources:
        if rec.custom and rec.name not in gathering:
            assert len(direct(g, rec)) <= 8, f"{rec.name} waits for {sorted(direct(g, rec))}"


def test_each_node_is_rendered_once(monkeypatch):
    calls = []
    real = deployment_module.render_node

    def counting(loaded, index, *args, **kwargs):
        calls.append(index)
        return real(loaded, index, *args, **kwargs)

    monkeypatch.setattr(deployment_module, "render_node", counting)
    base = load_stack("tp16-mindie")
    record_stack(base)
    assert sorted(calls) == list(range(len(base.spec.nodes)))


def test_mindie_refuses_more_nodes_than_it_supports(tmp_path):
    """MindIE multi-node inference supports at most 4 servers (its
    installation guide); a bigger stack is refused at validate."""
    doc = load_stack_doc("tp16-mindie")
    config = doc["config"]
    nodes = config[NS + "nodes"]
    for i in range(len(nodes), 5):
        extra = dict(nodes[-1], name=f"node{i}", host=f"198.51.100.{200 + i}", hostname=f"atlas-{i}")
        extra["device_ips"] = [f"198.51.101.{8 * i + d}" for d in range(8)]
        extra.pop("ip", None), extra.pop("container_ip", None)
        nodes.append(extra)
    config[NS + "parallel"]["tp"] = 8 * len(nodes)
    path = write_stack(tmp_path, "mindie5", doc)
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    line = next(line for line in result.stderr.splitlines() if f"{NS}nodes:" in line)
    assert str(path) in line and "at most 4 servers" in line and "(fix: use at most 4 nodes" in line, line
    # Four nodes are accepted.
    base = load_stack("tp16-mindie")
    assert len(loaded_with_config(base, scaled_config(base, 4)).spec.nodes) == 4


def test_a_large_rank_table_travels_compressed_and_arrives_intact(tmp_path):
    """Past COMPRESS_ABOVE the install script carries the table xz+base64
    (the same script for the same table), and running it with bash writes
    exactly the table, mode 640."""
    import json
    import shutil
    import subprocess

    from ascend_inference.ranktable import rank_table_json
    from ascend_inference.render import declared_device_ips, rank_table
    from components.cluster import COMPRESS_ABOVE, install_script

    base = load_stack("tp16-lmdeploy")
    loaded = loaded_with_config(base, scaled_config(base, 64))
    text = rank_table_json(rank_table(loaded, declared_device_ips(loaded)))
    assert len(text) > COMPRESS_ABOVE
    target = tmp_path / "hm" / "rank_table.json"
    make = lambda: install_script(text, purpose="Install the HCCL rank table", stack=loaded.name,  # noqa: E731
                                  node=loaded.spec.nodes[1], path=str(target), mode="640")
    script = make()
    assert script == make()
    assert len(script) < len(text) / 5 and '"server_list"' not in script
    done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True)
    assert target.read_text() == text
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert json.loads(done.stdout)["mode"] == "640"
    # A node without xz: one line that names the file and the fix, nothing written.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "base64", "mkdir", "dirname", "mktemp", "rm", "chmod", "mv", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    target.unlink()
    failed = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True,
                            env={"PATH": str(bin_dir)})
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr.strip() == (f"no xz on this node to unpack {target}: install it "
                                     "(package xz or xz-utils) and run pulumi up again")
    assert list(target.parent.iterdir()) == []
    # A small table stays legible.
    small = install_script('{"server_count": "2"}\n', purpose="p", stack=loaded.name, node=loaded.spec.nodes[1],
                           path=str(target), mode="640")
    assert '"server_count": "2"' in small
