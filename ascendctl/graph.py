"""Offline resource-graph recorder: ``preview`` and ``diff`` without the Pulumi CLI.

Why this exists
---------------
Real users run ``pulumi preview --diff`` / ``pulumi up`` with the Pulumi CLI and
engine.  This repository is developed and tested on machines where the CLI and
engine do not exist, so the program is exercised under the Python SDK's mocks
(``pulumi.runtime.set_mocks``) instead.  A subclass of the SDK's ``MockMonitor``
sees every ``RegisterResource`` request the program sends -- exactly what the
engine would receive -- and this module turns those requests into a plain
:class:`Graph` that tests, ``python -m ascendctl preview`` and
``python -m ascendctl diff`` can inspect.

What it reproduces
------------------
* The resource tree: type token, logical name, URN, parent, custom/component.
  URNs follow the engine's ``generateURN`` (no ``pulumi:pulumi:Stack$`` prefix
  for top-level resources, the parent's full qualified type for nested ones),
  which the stock ``MockMonitor.make_urn`` does not.
* Dependencies as the SDK sends them: ``dependencies`` (``depends_on`` plus every
  property dependency, with components expanded to their custom children by the
  SDK) and ``propertyDependencies`` per input.
* Resource options carried by the request (protect, delete_before_replace,
  retain_on_delete, deleted_with, replace_on_changes, ignore_changes, custom
  timeouts, aliases, additional_secret_outputs, explicit provider, ...).  Options
  that SDKs add on their own show up too: pulumi-command's ``remote.Command``
  merges ``replace_on_changes=["triggers[*]"]`` and
  ``additional_secret_outputs=["connection"]`` into its opts in ``_internal_init``.
* Inputs in wire form (Pulumi schema names, e.g. ``privateKey``, ``networkMode``),
  with secrets kept as :class:`Secret` and preview-unknowns as :data:`UNKNOWN`.
* Stack outputs and component ``register_outputs``.
* Errors: an exception raised by the program, inside an ``apply`` or by a mock
  comes out of :func:`record_graph` unchanged (same type, same message).

What it does NOT reproduce
--------------------------
* No provider is ever loaded: no ``Check``/``Diff`` calls, so provider defaults,
  provider-side validation and the provider's own update-vs-replace decision are
  invisible.  :func:`diff_graphs` approximates the latter with the request's
  ``replace_on_changes`` plus a caller-supplied ``replace_keys`` table.
* No checkpoint/state: "before" is another recorded run, not real state; resource
  outputs come from the mocks (``{name}-id`` ids, inputs echoed back, plus
  ``outputs_for``), so values that a real ``up`` computes differ, and outputs the
  mock does not return stay unknown during this (preview) run.
* Default providers are created by the engine, not by the program, so they are
  not in the graph; the engine's step ordering/parallelism is modelled only by
  :meth:`Graph.longest_chain`.
* Stack transforms, resource hooks and ``deleteBeforeReplace`` cascades of the
  engine are not executed; invokes get ``call_for(args)`` (default ``{}``).
* ``diff_graphs`` compares two recordings by value.  A real preview shows inputs
  computed from a replaced resource's outputs as unknown and may list more
  updates; here such a dependent appears only if its inputs really differ.  Two
  unknowns compare equal.

Determinism and cost: monitor RPCs run on a one-thread executor, so the
registration order (and the whole Graph) is the same on every run.  The cyclic
GC is paused during a run; 1000 resources record in about 2 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import settings as _settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.stack import run_in_stack

__all__ = [
    "SECRET_MASK",
    "UNKNOWN",
    "UNKNOWN_TEXT",
    "Change",
    "Graph",
    "RecordingMonitor",
    "ResourceRecord",
    "ResourceReference",
    "Secret",
    "Unknown",
    "alias_urns",
    "contains_secret",
    "diff_graphs",
    "format_diff",
    "format_path",
    "format_tree",
    "parse_path",
    "path_matches",
    "record_graph",
    "render_value",
]

# --------------------------------------------------------------------------------------
# Markers for values that are not plain data.
# --------------------------------------------------------------------------------------

_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_OUTPUT_VALUE_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

SECRET_MASK = "[secret]"
UNKNOWN_TEXT = "(known after apply)"


class Secret:
    """A secret value.  ``repr``/``str`` never show the value; compare with ``==``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:  # values may be unhashable; secrets are rarely dict keys
        return hash(("secret", json.dumps(_plain(self.value), sort_keys=True, default=str)))

    def __repr__(self) -> str:
        return f"Secret({SECRET_MASK})"

    __str__ = __repr__


class Unknown:
    """A value that a real ``pulumi preview`` would show as "(known after apply)"."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unknown)

    def __hash__(self) -> int:
        return hash("pulumi-unknown")

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


@dataclass(frozen=True)
class ResourceReference:
    """An input that is a whole resource (sent by URN)."""

    urn: str
    id: str | None = None


def _plain(value: Any) -> Any:
    """Plain-JSON form for hashing only (NOT masked; never print this)."""
    if isinstance(value, Secret):
        return {"$secret": _plain(value.value)}
    if isinstance(value, Unknown):
        return {"$unknown": True}
    if isinstance(value, ResourceReference):
        return {"$resource": value.urn}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _masked(value: Any) -> Any:
    """JSON-safe form with every secret replaced by a marker and unknowns marked."""
    if isinstance(value, Secret):
        return {"$secret": SECRET_MASK}
    if isinstance(value, Unknown):
        return {"$unknown": UNKNOWN_TEXT}
    if isinstance(value, ResourceReference):
        return {"$resource": value.urn}
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


# --------------------------------------------------------------------------------------
# Wire (protobuf Struct) -> plain Python
# --------------------------------------------------------------------------------------


def _from_wire(value: Any) -> Any:
    if isinstance(value, struct_pb2.Struct):
        fields = value.fields
        if _SIG_KEY in fields:
            sig = fields[_SIG_KEY].string_value
            if sig == _SECRET_SIG:
                return Secret(_from_wire(value["value"]) if "value" in fields else None)
            if sig == _RESOURCE_SIG:
                rid = value["id"] if "id" in fields else None
                return ResourceReference(str(value["urn"]), None if rid in (None, "") else _from_wire(rid))
            if sig == _ASSET_SIG:
                return {"$asset": {k: _from_wire(v) for k, v in value.items() if k != _SIG_KEY}}
            if sig == _ARCHIVE_SIG:
                return {"$archive": {k: _from_wire(v) for k, v in value.items() if k != _SIG_KEY}}
            if sig == _OUTPUT_VALUE_SIG:
                inner = _from_wire(value["value"]) if "value" in fields else UNKNOWN
                if "secret" in fields and value["secret"]:
                    inner = Secret(inner)
                return inner
        # Struct is a map: its iteration order is not the program's; sort for stable output.
        return {k: _from_wire(value[k]) for k in sorted(fields.keys())}
    if isinstance(value, struct_pb2.ListValue):
        return [_from_wire(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if value == _UNKNOWN_WIRE:
        return UNKNOWN
    return value


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


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
            "options": _masked(self.options),
            "inputs": _masked(self.inputs),
            "outputs": _masked(self.outputs),
        }


@dataclass
class Graph:
    """Everything one program run registered, in registration order."""

    resources: list[ResourceRecord] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    stack_urn: str | None = None

    def __post_init__(self) -> None:
        self._index: dict[str, ResourceRecord] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.resources, self.outputs, self.stack_urn) == (
            other.resources,
            other.outputs,
            other.stack_urn,
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
        urn = _urn_of(urn)
        if urn is None:
            urn = self.stack_urn
        return [r for r in self.resources if r.parent_urn == urn]

    def descendants_of(self, urn: str | ResourceRecord) -> list[ResourceRecord]:
        out: list[ResourceRecord] = []
        stack = [_urn_of(urn)]
        while stack:
            u = stack.pop()
            for child in self.children_of(u):
                out.append(child)
                stack.append(child.urn)
        return out

    # -- ordering -------------------------------------------------------------------

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
            "outputs": _masked(self.outputs),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)


def _urn_of(x: str | ResourceRecord | None) -> str | None:
    return x.urn if isinstance(x, ResourceRecord) else x


# --------------------------------------------------------------------------------------
# Mocks and the recording monitor
# --------------------------------------------------------------------------------------


class _Mocks(Mocks):
    def __init__(
        self,
        outputs_for: Callable[[MockResourceArgs], dict] | None,
        call_for: Callable[[MockCallArgs], dict] | None,
    ) -> None:
        self._outputs_for = outputs_for
        self._call_for = call_for

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        state = dict(args.inputs)
        if self._outputs_for is not None:
            extra = self._outputs_for(args)
            if extra:
                state.update(extra)
        # outputs_for may choose the id (key "__id__"), e.g. one derived from
        # the inputs, so that a replaced resource gets a new id as it would
        # for real and its dependents' triggers change with it.
        return state.pop("__id__", None) or f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        if self._call_for is not None:
            return self._call_for(args) or {}, None
        return {}, None


class RecordingMonitor(MockMonitor):
    """A ``MockMonitor`` that keeps a :class:`ResourceRecord` for every request."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []
        self.stack_urn: str | None = None
        self.stack_outputs: dict[str, Any] = {}
        self._by_urn: dict[str, ResourceRecord] = {}
        self._lock = threading.Lock()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """URNs as the engine makes them (``Deployment.generateURN``).

        MockMonitor's version qualifies top-level resources with the Stack type
        (``pulumi:pulumi:Stack$my:Type``) and keeps only the parent's last type
        segment; the engine skips the root stack and keeps the parent's full
        qualified type (``a:A$b:B$c:C`` for a grandchild).
        """
        return _engine_urn(_settings.get_stack(), _settings.get_project(), parent, type_, name)

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return super().RegisterResource(request)
        record = ResourceRecord(
            urn=urn,
            type=request.type,
            name=request.name,
            parent_urn=request.parent or None,
            custom=bool(request.custom),
            dependencies=sorted(set(request.dependencies)),
            property_dependencies={
                k: sorted(set(v.urns)) for k, v in sorted(request.propertyDependencies.items())
            },
            inputs=_from_wire(request.object),
            options=_options_of(request),
            provider=request.provider or None,
        )
        with self._lock:
            self.records.append(record)
            self._by_urn[urn] = record
        return super().RegisterResource(request)

    def ReadResource(self, request):  # noqa: N802
        urn = self.make_urn(request.parent, request.type, request.name)
        record = ResourceRecord(
            urn=urn,
            type=request.type,
            name=request.name,
            parent_urn=request.parent or None,
            custom=True,
            dependencies=sorted(set(request.dependencies)),
            inputs=_from_wire(request.properties),
            options={**_default_options(), "read_id": request.id},
            provider=request.provider or None,
        )
        with self._lock:
            self.records.append(record)
            self._by_urn[urn] = record
        return super().ReadResource(request)

    def RegisterResourceOutputs(self, request):  # noqa: N802
        outputs = _from_wire(request.outputs)
        with self._lock:
            if request.urn == self.stack_urn:
                self.stack_outputs = outputs
            elif request.urn in self._by_urn:
                self._by_urn[request.urn].outputs = outputs
        return super().RegisterResourceOutputs(request)


def _default_options() -> dict[str, Any]:
    return {
        "protect": False,
        "delete_before_replace": False,
        "retain_on_delete": False,
        "deleted_with": None,
        "replace_on_changes": [],
        "ignore_changes": [],
        "custom_timeouts": None,
        "aliases": [],
        "additional_secret_outputs": [],
        "replace_with": [],
        "hide_diffs": [],
        "import_id": None,
        "version": None,
    }


def _options_of(request: Any) -> dict[str, Any]:
    ct = request.customTimeouts if request.HasField("customTimeouts") else None
    timeouts = None
    if ct is not None and (ct.create or ct.update or ct.delete):
        timeouts = {k: getattr(ct, k) for k in ("create", "update", "delete") if getattr(ct, k)}
    aliases = []
    for a in request.aliases:
        if a.urn:
            aliases.append(a.urn)
        else:
            aliases.append(json_format.MessageToDict(a.spec))
    aliases.extend(request.aliasURNs)
    return {
        "protect": bool(request.protect) if request.HasField("protect") else False,
        "delete_before_replace": bool(request.deleteBeforeReplace),
        "retain_on_delete": bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
        "deleted_with": request.deletedWith or None,
        "replace_on_changes": list(request.replaceOnChanges),
        "ignore_changes": list(request.ignoreChanges),
        "custom_timeouts": timeouts,
        "aliases": aliases,
        "additional_secret_outputs": list(request.additionalSecretOutputs),
        "replace_with": list(request.replace_with),
        "hide_diffs": list(request.hideDiffs),
        "import_id": request.importId or None,
        "version": request.version or None,
    }


# --------------------------------------------------------------------------------------
# Running a program
# --------------------------------------------------------------------------------------

_RUN_LOCK = threading.Lock()


class _NoStack:
    """Placeholder root so that ``set_mocks`` does not create and finish its own Stack."""


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def _full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def _settings_defaults() -> dict[str, Any]:
    # Quirk of pulumi._utils.ContextProperty: setting a Settings property while
    # its current value is None also replaces the property's process-wide
    # *default* (so set_mocks after reset_options makes our monitor the default
    # seen by every context that never set it).  Save and restore those defaults.
    out = {}
    for name, prop in vars(_settings.Settings).items():
        if hasattr(prop, "_ContextProperty__default"):
            out[name] = prop._ContextProperty__default
    return out


def _restore_settings_defaults(saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        vars(_settings.Settings)[name]._ContextProperty__default = value


def record_graph(
    program: Callable[[], None],
    config: dict[str, Any],
    *,
    project: str = "ascend-inference",
    stack: str = "dev",
    outputs_for: Callable[[MockResourceArgs], dict] | None = None,
    call_for: Callable[[MockCallArgs], dict] | None = None,
    secret_keys: Iterable[str] = (),
    timeout: float = 300.0,
    rpc_workers: int = 1,
) -> Graph:
    """Run ``program()`` under the SDK's mocks in preview mode and record its graph.

    ``config`` maps keys (``"maxNumSeqs"`` or fully qualified ``"ns:key"``; plain
    keys get ``"<project>:"``) to values: strings as they are, bools as
    ``true``/``false``, numbers as text, dicts/lists JSON-encoded -- what the CLI
    would put in the stack config.  A value wrapped in :class:`Secret`, or a key
    listed in ``secret_keys``, is a secret config key.  ``Config.require_secret``
    / ``get_secret`` always return secret Outputs (in this SDK the secret-key list
    is informational only: ``Config.require`` of a secret key returns plaintext).

    Mocked resources get id ``f"{name}-id"`` (or the ``"__id__"`` that
    ``outputs_for`` returns) and state = inputs updated with
    ``outputs_for(args)``; invokes return ``call_for(args)`` (default ``{}``).
    ``rpc_workers`` > 1 lets independent registrations run concurrently (for an
    ``outputs_for`` that performs real work); the default of 1 keeps the
    recorded order deterministic.

    Exceptions raised by the program, inside an ``apply`` or by a mock are
    re-raised as the original exception (the SDK's "While processing resource"
    ValueError wrapper is removed; the resource name is added as a note).  A run
    that does not finish within ``timeout`` seconds raises TimeoutError.

    Isolation: the run happens in a copy of the caller's ``contextvars`` context
    (pulumi's settings, root resource and config are ContextVars) on a private
    event loop, so it can be called any number of times in one process and does
    not disturb mocks a caller set up with ``set_mocks``.  Runs are serialized.
    """
    with _RUN_LOCK:
        # The SDK allocates tens of thousands of short-lived futures per hundred
        # resources; the cyclic GC rescanning them is more than half the run time
        # (1000 resources: ~5.5 s with GC, ~2 s without).  Pause it for the run.
        gc_was_enabled = gc.isenabled()
        saved_defaults = _settings_defaults()
        gc.disable()
        try:
            ctx = contextvars.copy_context()
            return ctx.run(
                _record, program, config, project, stack, outputs_for, call_for, secret_keys, timeout,
                rpc_workers,
            )
        finally:
            _restore_settings_defaults(saved_defaults)
            if gc_was_enabled:
                gc.enable()


def _record(program, config, project, stack, outputs_for, call_for, secret_keys, timeout,
            rpc_workers=1) -> Graph:
    values: dict[str, str] = {}
    secrets: set[str] = {_full_key(project, k) for k in secret_keys}
    for key, value in config.items():
        full = _full_key(project, key)
        if isinstance(value, Secret):
            secrets.add(full)
            value = value.value
        if value is None:
            continue
        values[full] = _config_value(value)

    monitor = RecordingMonitor(_Mocks(outputs_for, call_for))

    # Fresh settings (new RPC manager, output set, lock; ROOT=None), then the
    # mocks.  set_mocks() creates and immediately finishes a root Stack when ROOT
    # is None -- its outputs would be registered before the program exports
    # anything -- so park a placeholder in ROOT while it runs and let
    # run_in_stack() create the real Stack, as the language host does.
    _settings.reset_options(project=project, stack=stack, preview=True)
    set_all_config(values, sorted(secrets))  # [] also clears earlier secret keys
    token = _settings.ROOT.set(_NoStack())  # type: ignore[arg-type]
    try:
        pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=True, monitor=monitor)
    finally:
        _settings.ROOT.reset(token)
    _settings.ROOT.set(None)

    # A private loop (never installed as the thread's current loop; inside it
    # asyncio.get_event_loop() returns it) whose default executor has ONE worker:
    # the SDK sends every monitor RPC through run_in_executor, so one worker makes
    # the order of requests -- and so the graph -- deterministic.  The RPCs are
    # GIL-bound Python anyway; more workers would not be faster.
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet_exception_handler)
    # An executor that performs real work in `outputs_for` (emulator/) asks for
    # more workers so that independent resources proceed in parallel.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=rpc_workers, thread_name_prefix="pulumi-mock-rpc")
    loop.set_default_executor(executor)

    class _Timeout(Exception):
        pass

    async def main() -> None:
        # run_in_stack: Stack(), program(), Stack._finish() (stack outputs), then
        # wait_for_rpcs() -- every registration and every Output, including
        # applies whose result nobody uses -- and re-raise the first error.
        task = asyncio.ensure_future(run_in_stack(program))
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            raise _Timeout
        task.result()

    try:
        try:
            loop.run_until_complete(main())
        except _Timeout:
            raise TimeoutError(
                f"the program did not finish within {timeout:g}s under the mocks "
                f"({len(monitor.records)} resources registered so far)"
            ) from None
        except BaseException as exc:  # noqa: BLE001 -- re-raised, unwrapped
            original = _unwrap_sdk_error(exc)
            if original is exc:
                raise
            raise original from original.__cause__
    finally:
        try:
            _cancel_pending(loop)
            executor.submit(_close_thread_loop).result(timeout=10)
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    return Graph(resources=list(monitor.records), outputs=monitor.stack_outputs, stack_urn=monitor.stack_urn)


_WRAPPED = re.compile(r"^While processing (resource|input): (.*?)(?:, type[: ] (.*?))?\n", re.S)


def _unwrap_sdk_error(exc: BaseException) -> BaseException:
    """Undo the SDK's re-wrapping of ValueError/AssertionError.

    ``serialize_properties`` and ``register_resource`` turn a ValueError raised in
    an ``apply`` into ``ValueError("While processing resource: ... has risen: ...")
    from original``.  Return the original exception (same object, traceback
    intact) with a note naming the resource and input instead.
    """
    notes = []
    while (
        isinstance(exc, (ValueError, AssertionError))
        and isinstance(exc.__cause__, type(exc))
        and str(exc).startswith("While processing ")
    ):
        m = _WRAPPED.match(str(exc))
        if m:
            what, name, typ = m.groups()
            notes.append(f"{what} {name}" + (f" ({typ})" if typ and what == "resource" else ""))
        exc = exc.__cause__
    if notes and hasattr(exc, "add_note"):
        exc.add_note("while registering " + ", ".join(notes))
    return exc


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    # A failed Output fans out to every Output derived from it; the first failure
    # is re-raised by record_graph, the copies are not news.
    msg = context.get("message", "")
    if "exception was never retrieved" in msg:
        return
    loop.default_exception_handler(context)


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _close_thread_loop() -> None:
    # MockMonitor calls _ensure_event_loop() on the worker thread; close that loop.
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if not loop.is_running():
        loop.close()
    asyncio.set_event_loop(None)


# --------------------------------------------------------------------------------------
# Property paths
# --------------------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
PathPart = str | int


def format_path(parts: Iterable[PathPart]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p == "*":
            out += "[*]"
        elif _IDENT.match(p):
            out += ("." if out else "") + p
        else:
            out += "[" + json.dumps(p) + "]"
    return out


_PATH_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_\-]*|\*)|\[(\d+|\*|"(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> list[PathPart]:
    """Parse a Pulumi property path (``a.b[0]``, ``a["x.y"]``, ``triggers[*]``)."""
    parts: list[PathPart] = []
    pos = 0
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad property path {path!r} at {pos}")
        if m.group(1) is not None:
            parts.append(m.group(1))
        else:
            tok = m.group(2)
            if tok == "*":
                parts.append("*")
            elif tok.startswith('"'):
                parts.append(json.loads(tok))
            else:
                parts.append(int(tok))
        pos = m.end()
    return parts


def path_matches(pattern: str | list[PathPart], path: str | list[PathPart], *, within_only: bool = False) -> bool:
    """Whether a changed ``path`` is covered by ``pattern`` (``*`` matches one step).

    By default prefix semantics in both directions, as for replaceOnChanges:
    ``triggers[*]`` covers ``triggers[0]``, ``triggers[0].x`` and a change of
    ``triggers`` as a whole.  ``within_only=True`` (used for ignoreChanges) only
    covers paths at or below the pattern: ignoring ``environment.A`` does not hide
    a change of ``environment`` as a whole.
    """
    pat = parse_path(pattern) if isinstance(pattern, str) else pattern
    pth = parse_path(path) if isinstance(path, str) else path
    if within_only and len(pth) < len(pat):
        return False
    for a, b in zip(pat, pth):
        if a == "*" or b == "*":
            continue
        if a != b and str(a) != str(b):
            return False
    return True


# --------------------------------------------------------------------------------------
# Tree printout
# --------------------------------------------------------------------------------------


def _short_string(s: str, limit: int = 100) -> str:
    if "\n" in s.rstrip("\n"):
        lines = s.splitlines()
        first = lines[0] if lines else ""
        if len(first) > limit:
            first = first[:limit] + "…"
        digest = hashlib.sha256(s.encode()).hexdigest()[:8]
        return f"{json.dumps(first, ensure_ascii=False)} ({len(lines)} lines, sha256 {digest})"
    if len(s) > limit:
        digest = hashlib.sha256(s.encode()).hexdigest()[:8]
        return f"{json.dumps(s[:limit], ensure_ascii=False)}… ({len(s)} chars, sha256 {digest})"
    return json.dumps(s, ensure_ascii=False)


def render_value(value: Any) -> str:
    """Compact one-line rendering; secrets as ``[secret]``, unknowns as ``(known after apply)``."""
    if isinstance(value, Secret):
        return SECRET_MASK
    if isinstance(value, Unknown):
        return UNKNOWN_TEXT
    if isinstance(value, ResourceReference):
        return f"<resource {value.urn.rsplit('::', 1)[-1]}>"
    if isinstance(value, str):
        return _short_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return str(value)


def _flatten(value: Any, parts: list[PathPart], inline_limit: int = 100) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value and not _is_special(value):
        for k, v in value.items():
            yield from _flatten(v, parts + [k], inline_limit)
        return
    if isinstance(value, list) and value:
        rendered = render_value(value)
        if len(rendered) <= inline_limit and not any(isinstance(v, (dict, list)) for v in value):
            yield format_path(parts), rendered
            return
        for i, v in enumerate(value):
            yield from _flatten(v, parts + [i], inline_limit)
        return
    yield format_path(parts), render_value(value)


def _is_special(d: dict) -> bool:
    return len(d) == 1 and next(iter(d)) in ("$asset", "$archive")


def _display_names(graph: Graph) -> dict[str, str]:
    counts: dict[str, int] = {}
    for r in graph.resources:
        counts[r.name] = counts.get(r.name, 0) + 1
    return {r.urn: (r.name if counts[r.name] == 1 else f"{r.type}::{r.name}") for r in graph.resources}


def _option_summary(rec: ResourceRecord) -> str:
    o = rec.options
    bits = []
    if o.get("protect"):
        bits.append("protect")
    if o.get("delete_before_replace"):
        bits.append("delete_before_replace")
    if o.get("retain_on_delete"):
        bits.append("retain_on_delete")
    if o.get("deleted_with"):
        bits.append("deleted_with=" + o["deleted_with"].rsplit("::", 1)[-1])
    if o.get("replace_on_changes"):
        bits.append("replace_on_changes=[" + ", ".join(o["replace_on_changes"]) + "]")
    if o.get("ignore_changes"):
        bits.append("ignore_changes=[" + ", ".join(o["ignore_changes"]) + "]")
    if o.get("custom_timeouts"):
        bits.append("timeouts(" + ", ".join(f"{k}={v}" for k, v in o["custom_timeouts"].items()) + ")")
    if o.get("additional_secret_outputs"):
        bits.append("secret_outputs=[" + ", ".join(o["additional_secret_outputs"]) + "]")
    if o.get("aliases"):
        bits.append(f"aliases={len(o['aliases'])}")
    if o.get("read_id"):
        bits.append(f"read id={o['read_id']}")
    return ", ".join(bits)


def format_tree(graph: Graph, *, show_inputs: bool = True) -> str:
    """A ``pulumi preview``-like tree.  Secrets print as ``[secret]``, unknowns as
    ``(known after apply)``; multi-line strings print as their first line plus
    ``(N lines, sha256 xxxxxxxx)``."""
    names = _display_names(graph)
    children: dict[str | None, list[ResourceRecord]] = {}
    known = graph.by_urn
    for r in graph.resources:
        parent = r.parent_urn if r.parent_urn in known else None
        children.setdefault(parent, []).append(r)

    lines: list[str] = []
    stack_name = graph.stack_urn.rsplit("::", 1)[-1] if graph.stack_urn else "stack"
    lines.append(f"+ pulumi:pulumi:Stack {stack_name}")
    n_custom = sum(1 for r in graph.resources if r.custom)
    order = {r.urn: i for i, r in enumerate(graph.resources)}

    def emit(rec: ResourceRecord, depth: int) -> None:
        ind = "    " * depth
        mark = ">" if rec.options.get("read_id") else "+"
        lines.append(f"{ind}{mark} {rec.type} {rec.name}")
        sub = ind + "      "
        deps = [names.get(u, u.rsplit("::", 1)[-1]) for u in sorted(rec.dependencies, key=lambda u: order.get(u, -1))]
        if deps:
            lines.append(f"{sub}after: {', '.join(deps)}")
        if rec.provider_urn:
            lines.append(f"{sub}provider: {names.get(rec.provider_urn, rec.provider_urn.rsplit('::', 1)[-1])}")
        opts = _option_summary(rec)
        if opts:
            lines.append(f"{sub}options: {opts}")
        if show_inputs and rec.inputs:
            for path, text in _flatten(rec.inputs, []):
                lines.append(f"{sub}{path}: {text}")
        for child in children.get(rec.urn, []):
            emit(child, depth + 1)

    for top in children.get(None, []):
        emit(top, 1)
    if graph.outputs:
        lines.append("Outputs:")
        for path, text in _flatten(graph.outputs, []):
            lines.append(f"    {path}: {text}")
    n_read = sum(1 for r in graph.resources if r.options.get("read_id"))
    lines.append(
        f"Resources: {len(graph.resources) - n_read} to create ({n_custom - n_read} custom, "
        f"{len(graph.resources) - n_custom} components)"
        + (f", {n_read} to read" if n_read else "")
        + f"; longest chain {graph.longest_chain()}"
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


MISSING = _Missing()


@dataclass
class Change:
    """What a config change does to one resource."""

    urn: str
    type: str
    name: str
    action: str  # "create" | "delete" | "update" | "replace"
    paths: list[str] = field(default_factory=list)  # changed input paths
    replace_paths: list[str] = field(default_factory=list)  # the ones forcing replacement
    reason: str = ""
    details: list[tuple[str, Any, Any]] = field(default_factory=list)  # (path, old, new)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; values that are or contain secrets become ``"[secret]"``."""
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "action": self.action,
            "paths": list(self.paths),
            "replace_paths": list(self.replace_paths),
            "reason": self.reason,
            "details": [
                {"path": p, "old": _diff_json(o), "new": _diff_json(n)} for p, o, n in self.details
            ],
        }


def _diff_json(v: Any) -> Any:
    if v is MISSING:
        return {"$absent": True}
    if contains_secret(v):
        return SECRET_MASK
    return _masked(v)


def _diff_values(old: Any, new: Any, parts: list[PathPart], out: list[tuple[list[PathPart], Any, Any]]) -> None:
    if isinstance(old, Secret) or isinstance(new, Secret):
        if not (isinstance(old, Secret) and isinstance(new, Secret) and old == new):
            out.append((parts, old, new))
        return
    if isinstance(old, dict) and isinstance(new, dict) and not _is_special(old) and not _is_special(new):
        for k in list(old.keys()) + [k for k in new.keys() if k not in old]:
            _diff_values(old.get(k, MISSING), new.get(k, MISSING), parts + [k], out)
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _diff_values(old[i] if i < len(old) else MISSING, new[i] if i < len(new) else MISSING, parts + [i], out)
        return
    if old is MISSING and new is MISSING:
        return
    if type(old) is not type(new) or old != new:
        # 1 == 1.0 and True == 1 are not changes worth reporting, but "1" vs 1 is.
        if not (isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool) and not isinstance(new, bool) and old == new):
            out.append((parts, old, new))


def _engine_urn(stack: str, project: str, parent: str | None, type_: str, name: str) -> str:
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
            _engine_urn(
                a.get("stack", stack), a.get("project", project), parent, a.get("type", rec.type), a.get("name", rec.name)
            )
        )
    return out


def _aliases_map(after: Graph, before: Graph) -> dict[str, str]:
    """after-URN -> before-URN for resources that moved with an alias."""
    out = {}
    for r in after.resources:
        if r.urn in before.by_urn:
            continue
        for a in alias_urns(r):
            if a in before.by_urn:
                out[r.urn] = a
                break
    return out


def diff_graphs(
    before: Graph,
    after: Graph,
    *,
    replace_keys: Callable[[ResourceRecord], set[str]] | None = None,
) -> list[Change]:
    """Per-resource changes from ``before`` to ``after`` (matched by URN, or URN alias).

    * ``create`` / ``delete``: URN only in one graph.
    * ``update``: some input path differs (``ignore_changes`` paths removed).
    * ``replace``: a changed path matches the request's ``replace_on_changes``
      (e.g. pulumi-command's ``triggers[*]``) or a pattern from
      ``replace_keys(after_record)`` (what the provider would force-replace), or
      the resource's explicit provider is replaced.
    * A changed input whose property dependencies include a replaced resource gets
      "because X is replaced" in its reason.  Resources whose inputs do not change
      are not listed, even when they depend on a replaced resource: under mocks the
      outputs they consume are known and compared by value.  (A real preview shows
      such inputs as unknown and may list more resources.)

    Unchanged resources are omitted.  Order: after-graph registration order, then
    deletions in before-graph order.
    """
    alias = _aliases_map(after, before)
    matched_before: set[str] = set()
    changes: list[Change] = []
    replaced: set[str] = set()
    by_after: dict[str, Change] = {}

    for rec in after.resources:
        old_urn = rec.urn if rec.urn in before.by_urn else alias.get(rec.urn)
        if old_urn is None:
            ch = Change(rec.urn, rec.type, rec.name, "create", reason="new resource")
            changes.append(ch)
            by_after[rec.urn] = ch
            continue
        matched_before.add(old_urn)
        old = before.by_urn[old_urn]
        raw: list[tuple[list[PathPart], Any, Any]] = []
        _diff_values(old.inputs, rec.inputs, [], raw)
        ignore = rec.options.get("ignore_changes") or []
        raw = [d for d in raw if not any(path_matches(p, d[0], within_only=True) for p in ignore)]

        patterns: list[tuple[str, str]] = [(p, "replace_on_changes") for p in rec.options.get("replace_on_changes") or []]
        if replace_keys is not None:
            patterns += [(p, "provider forces replacement") for p in sorted(replace_keys(rec) or ())]

        paths = [format_path(p) for p, _, _ in raw]
        replace_paths: list[str] = []
        why: list[str] = []
        for parts, _, _ in raw:
            for pat, src in patterns:
                if path_matches(pat, parts):
                    replace_paths.append(format_path(parts))
                    why.append(f"{format_path(parts)} changed ({src}: {pat})" if src == "replace_on_changes" else f"{format_path(parts)} changed ({src})")
                    break
        provider_changed = (old.provider_urn or None) != (rec.provider_urn or None)
        if provider_changed:
            paths.append("provider")
            replace_paths.append("provider")
            why.append("provider reference changed")
        if not raw and not provider_changed:
            continue
        if old_urn != rec.urn:
            why.insert(0, f"aliased from {old_urn}")
        action = "replace" if replace_paths else "update"
        ch = Change(
            rec.urn,
            rec.type,
            rec.name,
            action,
            paths=paths,
            replace_paths=replace_paths,
            reason="; ".join(why) if why else "inputs changed: " + ", ".join(paths),
            details=[(format_path(p), o, n) for p, o, n in raw],
        )
        changes.append(ch)
        by_after[rec.urn] = ch
        if action == "replace":
            replaced.add(rec.urn)

    # A resource whose explicit provider is replaced is replaced too (registration
    # order is topological, so one pass suffices).
    for rec in after.resources:
        p = rec.provider_urn
        if p and p in replaced:
            ch = by_after.get(rec.urn)
            pname = after.by_urn[p].name if p in after.by_urn else p
            if ch is None:
                ch = Change(rec.urn, rec.type, rec.name, "replace", reason="")
                changes.append(ch)
                by_after[rec.urn] = ch
            if ch.action in ("update", "replace"):
                ch.action = "replace"
                ch.replace_paths.append("provider")
                ch.reason = (ch.reason + "; " if ch.reason else "") + f"provider {pname} is replaced"
                replaced.add(rec.urn)

    # Annotate data flow from replaced resources.
    for ch in changes:
        if ch.action not in ("update", "replace"):
            continue
        rec = after.by_urn[ch.urn]
        causes = []
        for path in ch.paths:
            top = parse_path(path)[0] if path != "provider" else None
            for dep in rec.property_dependencies.get(str(top), []) if top is not None else []:
                if dep in replaced and dep != rec.urn:
                    name = after.by_urn[dep].name
                    if name not in causes:
                        causes.append(name)
        if causes:
            ch.reason += "; because " + ", ".join(causes) + (" is" if len(causes) == 1 else " are") + " replaced"

    # Keep registration order for updates/creates even when added by propagation.
    order = {r.urn: i for i, r in enumerate(after.resources)}
    changes.sort(key=lambda c: order[c.urn])
    for rec in before.resources:
        if rec.urn not in matched_before and rec.urn not in after.by_urn:
            changes.append(Change(rec.urn, rec.type, rec.name, "delete", reason="no longer in the program"))
    return changes


_SYMBOL = {"create": "+", "delete": "-", "update": "~", "replace": "+-"}


def format_diff(changes: list[Change]) -> str:
    """Human-readable diff; any value that is or contains a secret prints ``[secret]``."""
    if not changes:
        return "No changes.\n"
    lines = []
    counts: dict[str, int] = {}
    for ch in changes:
        counts[ch.action] = counts.get(ch.action, 0) + 1
        lines.append(f"{_SYMBOL[ch.action]:<2} {ch.action:<7} {ch.type} {ch.name}")
        if ch.reason:
            lines.append(f"           reason: {ch.reason}")
        for path, old, new in ch.details:
            mark = "  (forces replacement)" if path in ch.replace_paths else ""
            lines.append(f"           {path}: {_diff_value(old)} -> {_diff_value(new)}{mark}")
    summary = ", ".join(f"{counts[a]} to {a}" for a in ("create", "update", "replace", "delete") if a in counts)
    lines.append(f"Resources: {summary}")
    return "\n".join(lines) + "\n"


def _diff_value(v: Any) -> str:
    if v is MISSING:
        return "(absent)"
    if contains_secret(v):
        return SECRET_MASK
    return render_value(v)
