"""A picture of a stack's resource graph (`python -m ascendctl graph`): every
step (custom resource) as a box, in one lane per node, the cluster gate
between the lanes, the cluster-wide steps (the serving chain's last steps,
GPUStack's server-side ones) in a lane of their own; an arrow from each step
to every step that waits for it.

An arrow is drawn bold when the waiting step is replaced if the step it
waits for is replaced: the dependency feeds an input whose change forces a
replacement (a command's `triggers`, which pulumi-command replaces on; a
container input the docker provider recreates it for: `providers.py`). With
config changes (`--set`), the steps they replace, update, create or delete
are filled, and the bold arrows that carry a replacement are red.

Written as Graphviz DOT, Mermaid, or SVG (DOT laid out by Graphviz's `dot`,
Debian package `graphviz`). Only names and types are drawn: no input value,
so no secret, can end up in the picture."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field

from ascendctl.preview.diff import Change
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.paths import path_matches
from ascendctl.preview.printer import CLUSTER_GATE, CLUSTER_WIDE, node_of
from ascendctl.preview.providers import replace_keys

FORMATS = ("svg", "dot", "mermaid")
GRAPHVIZ_PACKAGE = "graphviz"

# Fill per change action (ColorBrewer's Pastel1, readable in print).
_FILL = {"replace": "#fbb4ae", "update": "#fed9a6", "create": "#ccebc5", "delete": "#decbe4"}
_GATE_FILL = "#b3cde3"


@dataclass
class Step:
    id: str
    name: str
    kind: str  # a short type: Command, Container, RemoteImage, provider docker, ...
    lane: str  # a node name, "gate" or CLUSTER_WIDE
    action: str = ""  # what the --set changes do to it ("" when nothing)


@dataclass
class Edge:
    source: str
    target: str
    replaces: bool  # the target is replaced when the source is
    carries_change: bool = False  # ... and with --set, the source is replaced and the target too


@dataclass
class Picture:
    title: str
    lanes: list[str]
    steps: list[Step] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def short_type(type_token: str) -> str:
    if type_token.startswith("pulumi:providers:"):
        return "provider " + type_token.rsplit(":", 1)[-1]
    if type_token == "pulumi-python:dynamic:Resource":
        return "dynamic resource"
    return type_token.rsplit(":", 1)[-1]


def _replacing_keys(rec: ResourceRecord) -> set[str]:
    """The input keys whose change makes the provider replace `rec`."""
    patterns = [*(rec.options.get("replace_on_changes") or []), *sorted(replace_keys(rec))]
    return {key for key in rec.property_dependencies if any(path_matches(p, [key]) for p in patterns)}


def build_picture(graph: Graph, node_names: list[str], title: str,
                  changes: list[Change] | None = None, gate_name: str = CLUSTER_GATE) -> Picture:
    nodes = set(node_names)
    actions = {c.urn: c.action for c in changes or []}
    steps: dict[str, Step] = {}
    for i, rec in enumerate(r for r in graph.resources if r.custom):
        lane = "gate" if rec.name == gate_name else node_of(rec.name, nodes) or CLUSTER_WIDE
        steps[rec.urn] = Step(f"s{i}", rec.name, short_type(rec.type), lane, actions.get(rec.urn, ""))
    # Deleted steps are in the recording before the change only: drawn, not linked.
    for change in changes or []:
        if change.urn not in steps:
            steps[change.urn] = Step(f"s{len(steps)}", change.name, short_type(change.type),
                                     node_of(change.name, nodes) or CLUSTER_WIDE, change.action)
    edges: list[Edge] = []
    for rec in graph.resources:
        if rec.urn not in steps or not rec.custom:
            continue
        via_replacing = {u for key in _replacing_keys(rec) for u in rec.property_dependencies[key]}
        # A new explicit provider replaces what it manages (`diff.diff_graphs`).
        if rec.provider_urn:
            via_replacing.add(rec.provider_urn)
        for dep in [*rec.dependencies, *([rec.provider_urn] if rec.provider_urn else [])]:
            if dep not in steps or dep == rec.urn:
                continue
            replaces = dep in via_replacing
            edges.append(Edge(steps[dep].id, steps[rec.urn].id, replaces,
                              replaces and actions.get(dep) == "replace" and actions.get(rec.urn) == "replace"))
    present = {s.lane for s in steps.values()}
    lanes = [n for n in node_names if n in present] + [lane for lane in ("gate", CLUSTER_WIDE) if lane in present]
    return Picture(title, lanes, list(steps.values()), edges)


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(picture: Picture) -> str:
    lines = ["digraph resources {",
             f"  label={_dot_string(picture.title)}; labelloc=t; fontname=Helvetica; rankdir=LR; "
             "newrank=true; compound=true;",
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica, fontsize=10];',
             "  edge [color=gray40, arrowsize=0.6];"]
    for lane in picture.lanes:
        members = [s for s in picture.steps if s.lane == lane]
        body = []
        for s in members:
            fill = _FILL.get(s.action) or (_GATE_FILL if lane == "gate" else "white")
            label = f"{s.name}\\n{s.kind}" + (f"\\n({s.action})" if s.action else "")
            shape = ", shape=octagon" if lane == "gate" else ""
            body.append(f'    {s.id} [label="{_escape_label(label)}", fillcolor="{fill}"{shape}];')
        if lane == "gate":
            lines += body
            continue
        title = "cluster-wide (serving)" if lane == CLUSTER_WIDE else f"node {lane}"
        lines.append(f"  subgraph cluster_{_lane_id(lane)} {{")
        lines.append(f'    label={_dot_string(title)}; style="rounded,filled"; fillcolor="#f7f7f7"; color=gray70;')
        lines += body
        lines.append("  }")
    for e in picture.edges:
        style = ""
        if e.carries_change:
            style = ' [color="#d7301f", penwidth=2.2, label="replaces", fontsize=8, fontcolor="#d7301f"]'
        elif e.replaces:
            style = " [penwidth=1.6, color=gray20]"
        lines.append(f"  {e.source} -> {e.target}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape_label(label: str) -> str:
    # `\n` in the label is DOT's line break; everything else is quoted.
    return label.replace('"', '\\"')


def _lane_id(lane: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in lane)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(picture: Picture) -> str:
    lines = ["---", f"title: {json.dumps(picture.title)}", "---", "flowchart LR"]
    for lane in picture.lanes:
        members = [s for s in picture.steps if s.lane == lane]
        shape = ("{{", "}}") if lane == "gate" else ("[", "]")
        body = [f'    {s.id}{shape[0]}"{_mermaid_text(s.name)}<br/><small>{_mermaid_text(s.kind)}'
                + (f" ({s.action})" if s.action else "") + f'</small>"{shape[1]}' for s in members]
        if lane == "gate":
            lines += [line[2:] for line in body]
            continue
        title = "cluster-wide (serving)" if lane == CLUSTER_WIDE else f"node {lane}"
        lines.append(f'  subgraph lane_{_lane_id(lane)} ["{_mermaid_text(title)}"]')
        lines += body
        lines.append("  end")
    for e in picture.edges:
        arrow = "==>|replaces|" if e.carries_change else "==>" if e.replaces else "-->"
        lines.append(f"  {e.source} {arrow} {e.target}")
    for action, fill in _FILL.items():
        lines.append(f"  classDef {action} fill:{fill},stroke:#555")
        ids = [s.id for s in picture.steps if s.action == action]
        if ids:
            lines.append(f"  class {','.join(ids)} {action}")
    gate = [s.id for s in picture.steps if s.lane == "gate"]
    if gate:
        lines.append(f"  classDef gate fill:{_GATE_FILL},stroke:#555")
        lines.append(f"  class {','.join(gate)} gate")
    red = [str(i) for i, e in enumerate(picture.edges) if e.carries_change]
    if red:
        lines.append(f"  linkStyle {','.join(red)} stroke:#d7301f,stroke-width:3px")
    return "\n".join(lines) + "\n"


class GraphvizMissing(Exception):
    """Graphviz's `dot` is not installed."""


def to_svg(picture: Picture) -> str:
    """The picture laid out by Graphviz's `dot` (GraphvizMissing without it)."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing(f"Graphviz's `dot` is not installed (Debian package {GRAPHVIZ_PACKAGE}: "
                              f"apt-get install {GRAPHVIZ_PACKAGE})")
    done = subprocess.run([dot, "-Tsvg"], input=to_dot(picture), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed: {done.stderr.strip()}")
    return done.stdout
