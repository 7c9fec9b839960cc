"""`python -m ascendctl graph` (issue 25, item 3): every stack drawn in every
format, with each node's lane, the gate, the arrows, and no secret; with
--set, what the change replaces filled and the arrows that carry it marked;
without Graphviz, SVG falls back to DOT with one line naming the package."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack, stack_names
from ascendctl import cli
from ascendctl.preview.stack import config_for, picture_of

pytestmark = pytest.mark.graph

SVG = "{http://www.w3.org/2000/svg}"


def _secrets_of(stack: str) -> list[str]:
    """The stack file's ciphertexts and the placeholders the preview uses."""
    loaded = load_stack(stack)
    doc = yaml.safe_load(Path(loaded.file).read_text())
    found = [v["secure"] for v in doc.get("config", {}).values() if isinstance(v, dict) and "secure" in v]
    config = config_for(loaded, loaded.raw_config)
    found += [config[f"{NAMESPACE}:{key}"].value for key in loaded.spec.secret_keys()]
    return [s for s in found if s]


def _draw(tmp_path: Path, stack: str, fmt: str, *changes: str) -> str:
    out = tmp_path / f"{stack}.{fmt}"
    args = ["graph", "--stack", stack, "--format", fmt, "--out", str(out)]
    for change in changes:
        args += ["--set", change]
    assert cli.main(args) == 0
    return out.read_text()


@pytest.mark.parametrize("stack", stack_names())
def test_every_stack_in_every_format(tmp_path, stack):
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's `dot` is needed for the SVG (apt-get install graphviz; .ci/run installs it "
                    "from emulator/apt-packages.txt)")
    nodes = [n.name for n in load_stack(stack).spec.nodes]
    picture = picture_of(stack, [])
    assert picture.edges and len(picture.lanes) == len(nodes) + 2  # the nodes, the gate, cluster-wide
    secrets = _secrets_of(stack)
    assert secrets  # every stack has at least its SSH key

    dot = _draw(tmp_path, stack, "dot")
    mermaid = _draw(tmp_path, stack, "mermaid")
    svg = _draw(tmp_path, stack, "svg")
    # The SVG parses as XML; its words are in <text> (with `-` as an entity in the file).
    root = ET.fromstring(svg)
    svg_words = "\n".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for text in (dot, mermaid, svg_words, svg):
        for secret in secrets:
            assert secret not in text
    for text in (dot, mermaid, svg_words):
        for node in nodes:
            # (The node checks are invokes, no steps: `{node}-preflight` is not drawn.)
            assert f"{node}-container" in text
        assert "cluster-verified" in text
    # One lane per node, the arrows all there.
    for node in nodes:
        assert f"subgraph cluster_{node} {{" in dot and f'subgraph lane_{node} ["node {node}"]' in mermaid
    assert len(re.findall(r"^  s\d+ -> s\d+", dot, re.M)) == len(picture.edges)
    assert len(re.findall(r"^  s\d+ (-->|==>)", mermaid, re.M)) == len(picture.edges)
    # One <g class="edge"> per arrow, one cluster per lane.
    assert root.tag == f"{SVG}svg"
    groups = [g.get("class") for g in root.iter(f"{SVG}g")]
    assert groups.count("edge") == len(picture.edges)
    assert groups.count("cluster") == len(nodes) + 1
    titles = {t.text for t in root.iter(f"{SVG}title")}
    assert {f"cluster_{n}" for n in nodes} <= titles


def test_a_change_is_highlighted(tmp_path):
    dot = _draw(tmp_path, "tp16-mindie", "dot", "engine.max_seq_len=16384")
    mermaid = _draw(tmp_path, "tp16-mindie", "mermaid", "engine.max_seq_len=16384")
    assert "changing engine.max_seq_len: 8 to replace" in dot
    assert "16384" not in dot.split("\n", 2)[1]  # the title names the key, not the value
    replaced = re.findall(r'label="([\w-]+)\\n\w+\\n\(replace\)"', dot)
    assert {"node0-serve", "node1-serve", "node0-config-edit", "serving-ready"} <= set(replaced)
    assert "node0-container" not in replaced
    # The red arrows are the ones that carry the replacement: config-edit -> serve.
    ids = dict(re.findall(r'^    (s\d+) \[label="([\w-]+)\\n', dot, re.M))
    red = [(ids[a], ids[b]) for a, b in re.findall(r"^  (s\d+) -> (s\d+) \[color=\"#d7301f\"", dot, re.M)]
    assert ("node0-config-edit", "node0-serve") in red and ("serving-ready", "smoke-test-request") in red
    assert all(a in replaced and b in replaced for a, b in red)
    assert "==>|replaces|" in mermaid and re.search(r"class (s\d+,?)+ replace", mermaid)


def test_without_graphviz_svg_falls_back_to_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "g.svg"
    assert cli.main(["graph", "--stack", "tp16-vllm-mindspore", "--out", str(out)]) == cli.EXIT_GRAPH_FALLBACK
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "apt-get install graphviz" in err[0] and str(tmp_path / "g.dot") in err[0]
    assert not out.exists() and (tmp_path / "g.dot").read_text().startswith("digraph resources {")


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["graph", "--stack", "tp16-vllm-mindspore", "--format", "dot",
                     "--out", str(blocker / "g.dot")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: graph --out {blocker / 'g.dot'}: ")
