"""The recorded resource graph as plain data: one `ResourceRecord` per
registration request (type, name, URN, parent, dependencies, inputs, options)
and the `Graph` of one program run, with the queries the previews and tests
ask of it (lookup by name or type, children, wait edges, whether one resource
waits for another, the longest chain of create steps) and the engine's URN
rules (`engine_urn`, `alias_urns`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ascendctl.preview.values import masked


@dataclass
class ResourceRecord:
    """One ``RegisterResource`` (or ``ReadResource``) request, as plain data."""

    urn: str
    type: str
    name: str
    parent_urn: str | None
    custom: bool
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # component register_outputs
    # Node checks (by name) whose facts this registration waited for: its
    # depends_on held `after(...)` of them (see recorder.py).
    after_checks: list[str] = field(default_factory=list)

    @property
    def provider_urn(self) -> str | None:
        """URN part of the provider reference (``<urn>::<id>``)."""
        if not self.provider:
            return None
        return self.provider.rsplit("::", 1)[0]

    @property
    def explicit_dependencies(self) -> list[str]:
        """Dependencies that no input accounts for (i.e. from ``depends_on``).

        A URN that is both in ``depends_on`` and behind an input is not listed
        here; the request does not tell the two apart.
        """
        via_inputs = {u for urns in self.property_dependencies.values() for u in urns}
        return [u for u in self.dependencies if u not in via_inputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent_urn": self.parent_urn,
            "custom": self.custom,
            "provider": self.provider,
            "dependencies": list(self.dependencies),
            "property_dependencies": {k: list(v) for k, v in self.property_dependencies.items()},
            "options": masked(self.options),
            "inputs": masked(self.inputs),
            "outputs": masked(self.outputs),
            "after_checks": list(self.after_checks),
        }


@dataclass
class CheckRecord:
    """One node check: a `command:local:run` invoke named by its environment
    (see recorder.py). `ran`: the invoke reached the monitor (its inputs were
    known); `dependencies`: the resources its depends_on named (URNs);
    `after_checks`: the checks whose facts its depends_on held."""

    name: str
    node: str
    parent_urn: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    after_checks: list[str] = field(default_factory=list)
    ran: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "parent_urn": self.parent_urn, "ran": self.ran,
                "dependencies": list(self.dependencies),
                "after_checks": list(self.after_checks), "args": masked(self.args)}


@dataclass
class Graph:
    """Everything one program run registered, in registration order."""

    resources: list[ResourceRecord] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    stack_urn: str | None = None
    # Per stack output, the custom resources its value was computed from.
    output_dependencies: dict[str, list[str]] = field(default_factory=dict)
    # Values the caller's mocks made up in place of what a rollout learns
    # (ids, image ids, command output): see `unknowns.py`. Not compared.
    mock_values: set[str] = field(default_factory=set)
    # The node checks (invokes, no resources), in the order the program asked for them.
    checks: list[CheckRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[str, ResourceRecord] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.resources, self.outputs, self.stack_urn, self.checks) == (
            other.resources,
            other.outputs,
            other.stack_urn,
            other.checks,
        )

    # -- lookup ---------------------------------------------------------------------

    @property
    def by_urn(self) -> dict[str, ResourceRecord]:
        if self._index is None or len(self._index) != len(self.resources):
            self._index = {r.urn: r for r in self.resources}
        return self._index

    def get(self, urn: str) -> ResourceRecord | None:
        return self.by_urn.get(urn)

    def by_name(self, name: str) -> ResourceRecord:
        """The resource with this logical name (KeyError if none, ValueError if ambiguous)."""
        found = [r for r in self.resources if r.name == name]
        if not found:
            raise KeyError(f"no resource named {name!r}")
        if len(found) > 1:
            raise ValueError(f"{len(found)} resources named {name!r}: " + ", ".join(r.type for r in found))
        return found[0]

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_]

    def children_of(self, urn: str | ResourceRecord | None) -> list[ResourceRecord]:
        """Direct children; ``None`` or the stack URN gives the top-level resources."""
        parent = self.stack_urn if urn is None else _urn_of(urn)
        return [r for r in self.resources if r.parent_urn == parent]

    def descendants_of(self, urn: str | ResourceRecord) -> list[ResourceRecord]:
        out: list[ResourceRecord] = []
        stack = [_urn_of(urn)]
        while stack:
            u = stack.pop()
            for child in self.children_of(u):
                out.append(child)
                stack.append(child.urn)
        return out

    def check(self, name: str) -> CheckRecord:
        """The node check with this name (KeyError if none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no node check named {name!r}")

    def checks_on(self, node: str) -> list[CheckRecord]:
        return [c for c in self.checks if c.node == node]

    # -- ordering -------------------------------------------------------------------

    def check_waits_for(self, check: str | CheckRecord, urn: str | ResourceRecord) -> bool:
        """Whether a node check runs only after the resource: its depends_on
        named it, or a resource or check it waits for waits for it."""
        c = self.check(check) if isinstance(check, str) else check
        target = _urn_of(urn)
        pending = [c]
        seen: set[str] = set()
        while pending:
            current = pending.pop()
            if current.name in seen:
                continue
            seen.add(current.name)
            for dep in current.dependencies:
                if dep == target or (dep in self.by_urn and self.depends_on(dep, target)):
                    return True
            pending.extend(self.check(name) for name in current.after_checks)
        return False

    def runs_after(self, a: str | ResourceRecord, b: str | ResourceRecord) -> bool:
        """Whether resource ``a`` waits for resource ``b``: through resources
        (`depends_on`), or through a node check it waits for that waits for ``b``
        (a node's steps wait for its preflight, which waits for its TLS fix)."""
        return self.depends_on(a, b) or any(self.check_waits_for(c, b) for c in self.checks_before(a))

    def checks_before(self, what: str | ResourceRecord | CheckRecord, transitive: bool = True) -> set[str]:
        """Names of the node checks a resource (or a check) waits for: those its
        depends_on held `after(...)` of, and with ``transitive`` (default) those
        of every resource and check it waits for (`waits_for`, parents included)."""
        found: set[str] = set()
        seen_checks: set[str] = set()
        seen: set[str] = set()
        if isinstance(what, CheckRecord):
            direct, resources = list(what.after_checks), list(what.dependencies)
        else:
            rec = self.by_urn[_urn_of(what)]
            direct, resources = list(rec.after_checks), self.waits_for(rec)
        pending_checks = direct
        if not transitive:
            return set(direct)
        while pending_checks or resources:
            while pending_checks:
                name = pending_checks.pop()
                found.add(name)
                if name in seen_checks:
                    continue
                seen_checks.add(name)
                c = self.check(name)
                pending_checks.extend(c.after_checks)
                resources.extend(c.dependencies)
            while resources:
                u = resources.pop()
                if u in seen or u not in self.by_urn:
                    continue
                seen.add(u)
                pending_checks.extend(self.by_urn[u].after_checks)
                resources.extend(self.waits_for(u))
        return found


    def waits_for(self, urn: str | ResourceRecord) -> list[str]:
        """URNs the resource cannot be created before (its "wait edges").

        ``dependencies`` (depends_on + inputs; the SDK already expands a component
        into its custom children), the parent (a child's registration waits for its
        parent's, and a component's registration waits for the component's own
        ``depends_on``), and the explicit provider.  Edges to URNs outside the graph
        (the stack, default providers) are dropped.
        """
        rec = self.by_urn[_urn_of(urn)]
        edges = list(rec.dependencies)
        if rec.parent_urn:
            edges.append(rec.parent_urn)
        if rec.provider_urn:
            edges.append(rec.provider_urn)
        index = self.by_urn
        seen: set[str] = set()
        out = []
        for e in edges:
            if e in index and e not in seen and e != rec.urn:
                seen.add(e)
                out.append(e)
        return out

    def depends_on(
        self,
        a_urn: str | ResourceRecord,
        b_urn: str | ResourceRecord,
        transitive: bool = True,
        *,
        via_parent: bool = True,
    ) -> bool:
        """Whether ``a`` must wait for ``b``.

        Direct edges are ``a.dependencies`` (which already contain custom children
        of components named in ``depends_on``), the explicit provider and, with
        ``via_parent`` (default), the parent: a child waits for everything its
        component waited for.  ``transitive=False`` checks only a's own
        ``dependencies`` (plus ``b`` being a's parent/provider when ``via_parent``).
        """
        a, b = _urn_of(a_urn), _urn_of(b_urn)
        index = self.by_urn
        if a not in index:
            raise KeyError(a)

        def edges(u: str) -> list[str]:
            rec = index[u]
            if via_parent:
                return self.waits_for(u)
            return [d for d in rec.dependencies if d in index]

        direct = edges(a)
        if not transitive:
            return b in direct
        seen = {a}
        stack = list(direct)
        while stack:
            u = stack.pop()
            if u == b:
                return True
            if u in seen:
                continue
            seen.add(u)
            stack.extend(edges(u))
        return False

    def _levels(self) -> tuple[dict[str, int], dict[str, str | None]]:
        # Registration order is a topological order of the wait edges: the SDK only
        # sends a request once the URNs of its parent, dependencies and provider
        # are known.  Fall back to a memoised DFS for anything out of order.
        level: dict[str, int] = {}
        via: dict[str, str | None] = {}
        index = self.by_urn

        def compute(u: str, visiting: set[str]) -> int:
            if u in level:
                return level[u]
            if u in visiting:  # defensive: a cycle cannot come out of the SDK
                return 0
            visiting.add(u)
            best, best_via = 0, None
            for e in self.waits_for(u):
                lv = compute(e, visiting)
                if lv > best or best_via is None and lv == best and lv > 0:
                    best, best_via = lv, e
            visiting.discard(u)
            level[u] = best + (1 if index[u].custom else 0)
            via[u] = best_via
            return level[u]

        for rec in self.resources:
            compute(rec.urn, set())
        return level, via

    def levels(self) -> dict[str, int]:
        """Per URN, the number of create steps up to and including it along
        its longest wait path (see `longest_chain`)."""
        return self._levels()[0]

    def longest_chain(self) -> int:
        """Length of the longest wait path, counted in custom resources.

        Definition: ``level(r) = (1 if r is custom else 0) + max(level(w) for w in
        waits_for(r))`` (0 for no edges); the result is the maximum level.  It is the
        number of create steps a real ``pulumi up`` must run one after another even
        with unlimited parallelism.  Components count 0 but pass their waits on to
        their children (parent edges); provider resources are custom and count 1.
        """
        level, _ = self._levels()
        return max(level.values(), default=0)

    def critical_path(self) -> list[ResourceRecord]:
        """The custom resources along one longest chain, first to last."""
        level, via = self._levels()
        if not level:
            return []
        u: str | None = max(self.resources, key=lambda r: level[r.urn]).urn
        path = []
        while u is not None:
            rec = self.by_urn[u]
            if rec.custom:
                path.append(rec)
            u = via[u]
        return list(reversed(path))

    # -- export ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; secrets are ``{"$secret": "[secret]"}``, unknowns ``{"$unknown": ...}``."""
        return {
            "stack_urn": self.stack_urn,
            "resources": [r.to_dict() for r in self.resources],
            "checks": [c.to_dict() for c in self.checks],
            "outputs": masked(self.outputs),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)


def _urn_of(x: str | ResourceRecord) -> str:
    return x.urn if isinstance(x, ResourceRecord) else x


# --------------------------------------------------------------------------------------
# URNs as the engine makes them
# --------------------------------------------------------------------------------------


def engine_urn(stack: str, project: str, parent: str | None, type_: str, name: str) -> str:
    """A resource's URN as the engine makes it (`Deployment.generateURN`): no
    `pulumi:pulumi:Stack$` prefix for top-level resources, the parent's full
    qualified type (`a:A$b:B$c:C` for a grandchild) for nested ones."""
    parent_type = ""
    if parent:
        qualified = parent.split("::")[2]
        if qualified != "pulumi:pulumi:Stack":
            parent_type = qualified + "$"
    return "urn:pulumi:" + "::".join([stack, project, parent_type + type_, name])


def alias_urns(rec: ResourceRecord) -> list[str]:
    """The URNs a resource's ``aliases`` stand for (URN aliases and alias specs)."""
    parts = rec.urn.split("::")
    stack, project = parts[0][len("urn:pulumi:"):], parts[1]
    out = []
    for a in rec.options.get("aliases", []):
        if isinstance(a, str):
            out.append(a)
            continue
        parent = None if a.get("noParent") else a.get("parentUrn", rec.parent_urn)
        out.append(
            engine_urn(
                a.get("stack", stack), a.get("project", project), parent,
                a.get("type", rec.type), a.get("name", rec.name),
            )
        )
    return out

