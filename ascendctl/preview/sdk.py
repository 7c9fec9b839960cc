"""The one place the offline preview goes below the Pulumi SDK's public mock API.

The public API (`pulumi.runtime.set_mocks` with a `pulumi.runtime.Mocks`
whose `new_resource` gets `MockResourceArgs`) hands a mock each resource's
type, name and inputs, which is all `recorder.py` needs to answer. A preview
also needs what the public interface does not show: a resource's parent,
its dependency edges (`depends_on` and per input), its options
(`replace_on_changes`, `ignore_changes`, ...) and the stack's outputs. Those
are in the registration requests the SDK sends its monitor, so this module
hands `set_mocks` (through its `monitor=` argument) a `MockMonitor` subclass
that keeps every request, and runs the program the way the language host
does, inside a stack whose outputs are registered after the program ran.

Every private detail used here was checked against pulumi 3.272.0 (the
version `versions.py` insists on):
* `pulumi.runtime.mocks.MockMonitor` and its gRPC-named methods
  (`RegisterResource`, `ReadResource`, `RegisterResourceOutputs`);
* `pulumi.runtime.settings.ROOT` (the root-resource ContextVar): `set_mocks`
  creates and at once finishes a root Stack when none is set, which would
  register the stack's outputs before the program exported any; a placeholder
  in ROOT while it runs prevents that;
* `pulumi.runtime.settings.Settings` properties are `ContextProperty`s whose
  process-wide default is replaced when set while unset; saved and restored
  around a run so that a recording leaves no monitor behind;
* `pulumi.runtime.run_in_stack` (exported, documented as internal): creates
  the Stack, runs the program, registers its outputs and waits for every RPC;
* the SDK sends each monitor request through the running event loop's
  default executor (`run_in_executor(None, ...)`), which `recorder.py` sets
  to answer one request at a time;
* `pulumi.runtime.resource.prepare_resource(res, ty, custom, remote, props,
  opts, ...)` (every registration's options, before its request) and
  `pulumi.runtime.invoke._invoke(tok, props, opts, ...)` (every invoke's
  arguments and options, called by `invoke_output` through the module's
  globals): wrapped (`_watch_sdk`) to read what a request cannot show, the
  node checks a registration's or a check's `depends_on` held (see recorder.py).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ascendctl.preview.versions import check_sdk_versions

# Before importing any of the SDK: another version may lack what is used here,
# and the user should read which version is needed, not an ImportError.
check_sdk_versions()

import pulumi  # noqa: E402
import pulumi.runtime  # noqa: E402
import pulumi.runtime.invoke  # noqa: E402
import pulumi.runtime.resource  # noqa: E402
from pulumi.runtime import Mocks  # noqa: E402
from pulumi.runtime import settings as _settings  # noqa: E402
from pulumi.runtime.mocks import MockMonitor  # noqa: E402

# The modules (`pulumi.runtime` exports functions of the same names).
_sdk_invoke = sys.modules["pulumi.runtime.invoke"]
_sdk_resource = sys.modules["pulumi.runtime.resource"]

from ascendctl.preview.graph import CheckRecord, ResourceRecord, engine_urn  # noqa: E402
from ascendctl.preview.values import Secret  # noqa: E402
from ascendctl.preview.wire import default_options, from_wire, options_of  # noqa: E402
from components.linear_wait import settle as _settle  # noqa: E402

if TYPE_CHECKING:
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import resource_pb2

# Strings this long or longer are kept once in the records (`_shared`).
_LONG = 1024

# pulumi-command's invoke that runs the node checks, and the environment
# variables naming a check and its node (components.common.node_check).
LOCAL_RUN = "command:local:run"
CHECK_ENV = "ASCEND_INFERENCE_CHECK"
CHECK_NODE_ENV = "ASCEND_INFERENCE_NODE"
# The attribute of an Output naming the checks it came from (components.common.from_checks).
NODE_CHECKS = "node_checks"

# The monitor of the run in this context (set by install_mocks).
_RECORDING: contextvars.ContextVar[RecordingMonitor | None] = contextvars.ContextVar("recording", default=None)


def _entries(opts: Any) -> list[Any]:
    """The entries of ``opts.depends_on`` (the program passes lists)."""
    depends_on = getattr(opts, "depends_on", None)
    if not isinstance(depends_on, (list, tuple)):
        return [depends_on] if depends_on is not None else []
    return list(depends_on)


def _checks_in(opts: Any) -> list[str]:
    """Names of the node checks behind the entries of ``opts.depends_on``."""
    names: list[str] = []
    for entry in _entries(opts):
        for name in getattr(entry, "__dict__", {}).get(NODE_CHECKS, ()):
            if name not in names:
                names.append(name)
    return names


def _watch_sdk() -> None:
    """Wrap the two SDK functions that see a request's options (once per
    process; outside a recording the wrappers only call through)."""
    if getattr(_sdk_resource.prepare_resource, "_recording", False):
        return
    prepare, invoke = _sdk_resource.prepare_resource, _sdk_invoke._invoke

    async def prepare_resource(res: Any, ty: str, custom: bool, remote: bool, props: Any, opts: Any,
                               *args: Any, **kwargs: Any) -> Any:
        monitor = _RECORDING.get()
        if monitor is not None:
            checks = _checks_in(opts)
            if checks:
                with monitor._lock:
                    monitor._after_checks[(ty, res._name)] = checks
        return await prepare(res, ty, custom, remote, props, opts, *args, **kwargs)

    def _invoke(tok: str, props: Any, opts: Any, *args: Any, **kwargs: Any) -> Any:
        monitor = _RECORDING.get()
        environment = props.get("environment") if isinstance(props, dict) else None
        if monitor is not None and tok == LOCAL_RUN and isinstance(environment, dict) and CHECK_ENV in environment:
            with monitor._lock:
                check = CheckRecord(name=str(environment[CHECK_ENV]), node=str(environment.get(CHECK_NODE_ENV, "")),
                                    after_checks=_checks_in(opts))
                monitor.checks.append(check)
                # The resources its depends_on names (URNs once they are registered, see Invoke).
                monitor._check_resources[check.name] = [
                    (entry._type, entry._name) for entry in _entries(opts) if isinstance(entry, pulumi.Resource)]
                parent = getattr(opts, "parent", None)
                if parent is not None:
                    monitor._check_parents[check.name] = (parent._type, parent._name)
        return invoke(tok, props, opts, *args, **kwargs)

    prepare_resource._recording = True  # type: ignore[attr-defined]
    setattr(_sdk_resource, "prepare_resource", prepare_resource)  # noqa: B010 - the module's global
    setattr(_sdk_invoke, "_invoke", _invoke)  # noqa: B010


class RecordingMonitor(MockMonitor):
    """A ``MockMonitor`` that keeps a :class:`ResourceRecord` for every request."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []
        self.stack_urn: str | None = None
        self.stack_outputs: dict[str, Any] = {}
        self._by_urn: dict[str, ResourceRecord] = {}
        self._lock = threading.Lock()
        # Long strings seen in inputs, each kept once (see `_shared`).
        self._long_strings: dict[str, str] = {}
        # The node checks, as the program asked for them (`_watch_sdk`).
        self.checks: list[CheckRecord] = []
        # (type, name) -> the checks its depends_on held, until its request comes.
        self._after_checks: dict[tuple[str, str], list[str]] = {}
        # check name -> (type, name) of the resources its depends_on named.
        self._check_resources: dict[str, list[tuple[str, str]]] = {}
        # check name -> (type, name) of its parent component.
        self._check_parents: dict[str, tuple[str, str]] = {}

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """URNs as the engine makes them (``Deployment.generateURN``).

        MockMonitor's version qualifies top-level resources with the Stack type
        (``pulumi:pulumi:Stack$my:Type``) and keeps only the parent's last type
        segment; the engine skips the root stack and keeps the parent's full
        qualified type (``a:A$b:B$c:C`` for a grandchild).
        """
        return engine_urn(pulumi.get_stack(), pulumi.get_project(), parent, type_, name)

    def _keep(self, record: ResourceRecord) -> None:
        with self._lock:
            self.records.append(record)
            self._by_urn[record.urn] = record

    def _shared(self, value: Any) -> Any:
        """`value` with each long string replaced by the first equal one seen:
        every node's rank-table copy carries the same script (at 1,000 nodes
        a 32 KB one), which the records would otherwise hold once per node."""
        if isinstance(value, str):
            return self._long_strings.setdefault(value, value) if len(value) >= _LONG else value
        if isinstance(value, dict):
            return {k: self._shared(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._shared(v) for v in value]
        if isinstance(value, Secret):
            return Secret(self._shared(value.value))
        return value

    def RegisterResource(  # noqa: N802 (gRPC method name)
        self, request: resource_pb2.RegisterResourceRequest
    ) -> resource_pb2.RegisterResourceResponse:
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return super().RegisterResource(request)  # type: ignore[no-untyped-call,no-any-return]  # MockMonitor is unannotated
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
            inputs=self._shared(from_wire(request.object)),
            options=options_of(request),
            provider=request.provider or None,
        )
        with self._lock:
            record.after_checks = self._after_checks.pop((request.type, request.name), [])
        self._keep(record)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call,no-any-return]  # MockMonitor is unannotated

    def Invoke(self, request: resource_pb2.ResourceInvokeRequest) -> Any:  # noqa: N802
        if request.tok == LOCAL_RUN:
            args = from_wire(request.args)
            name = (args.get("environment") or {}).get(CHECK_ENV)
            with self._lock:
                for check in self.checks:
                    if check.name == name and not check.ran:
                        check.ran, check.args = True, self._shared(args)
                        break
        return super().Invoke(request)  # type: ignore[no-untyped-call]  # MockMonitor is unannotated

    def finish_checks(self) -> None:
        """Each check's parent and depends_on resources as URNs, once the run
        registered them all: (type, name) is unique for custom resources, and
        for a parent among components (a node's AscendNode and its
        InferenceContainer share the node's name, not the type)."""
        urns = {(r.type, r.name): r.urn for r in self.records}
        for check in self.checks:
            wanted = self._check_resources.pop(check.name, [])
            check.dependencies = sorted(urns[key] for key in wanted if key in urns)
            parent = self._check_parents.pop(check.name, None)
            check.parent_urn = urns.get(parent) if parent is not None else None

    def ReadResource(  # noqa: N802
        self, request: resource_pb2.ReadResourceRequest
    ) -> resource_pb2.ReadResourceResponse:
        urn = self.make_urn(request.parent, request.type, request.name)
        record = ResourceRecord(
            urn=urn,
            type=request.type,
            name=request.name,
            parent_urn=request.parent or None,
            custom=True,
            dependencies=sorted(set(request.dependencies)),
            inputs=from_wire(request.properties),
            options={**default_options(), "read_id": request.id},
            provider=request.provider or None,
        )
        self._keep(record)
        return super().ReadResource(request)  # type: ignore[no-untyped-call,no-any-return]  # MockMonitor is unannotated

    def RegisterResourceOutputs(  # noqa: N802
        self, request: resource_pb2.RegisterResourceOutputsRequest
    ) -> empty_pb2.Empty:
        outputs = from_wire(request.outputs)
        with self._lock:
            if request.urn == self.stack_urn:
                self.stack_outputs = outputs
            elif request.urn in self._by_urn:
                self._by_urn[request.urn].outputs = outputs
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]  # MockMonitor is unannotated


class _NoStack:
    """Placeholder root so that ``set_mocks`` does not create and finish its own Stack."""


class _EachMessageOnce(logging.Filter):
    """Lets each distinct message through once per process: `diff` and the
    settling rounds run the program several times, and its `pulumi.log.warn`
    lines (the insecure choices a stack keeps) should print once, not per run."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


# What the program logs under the mocks (MockEngine.Log writes to this logger),
# printed as the engine prints it: `warning: <message>`, on stderr.
PROGRAM_LOG = logging.getLogger("ascendctl.program")
PROGRAM_LOG.addFilter(_EachMessageOnce())
_program_log_handler = logging.StreamHandler()
_program_log_handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
PROGRAM_LOG.addHandler(_program_log_handler)
PROGRAM_LOG.propagate = False


class _LowerLevelNames(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.levelname = record.levelname.lower()
        return True


_program_log_handler.addFilter(_LowerLevelNames())


def install_mocks(monitor: RecordingMonitor, *, project: str, stack: str,
                  config: dict[str, str], secret_keys: list[str]) -> None:
    """Point the current context's Pulumi runtime at ``monitor`` in preview
    mode, with ``config`` as the stack's configuration."""
    # Fresh settings (new RPC manager, output set, lock; no root resource).
    pulumi.runtime.reset_options(project=project, stack=stack, preview=True)
    _watch_sdk()
    _RECORDING.set(monitor)
    pulumi.runtime.set_all_config(config, secret_keys)  # [] also clears earlier secret keys
    token = _settings.ROOT.set(_NoStack())  # type: ignore[arg-type]
    try:
        pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=True, monitor=monitor,
                                 logger=PROGRAM_LOG)
    finally:
        _settings.ROOT.reset(token)
    _settings.ROOT.set(None)


async def run_program(program: Callable[[], None],
                      on_export_dependencies: Callable[[dict[str, list[str]]], None] | None = None) -> None:
    """Stack(), program(), the stack's outputs registered, then every
    registration and every Output awaited (applies nobody uses included);
    the first error is re-raised. `on_export_dependencies`, when given, is
    handed the URNs of the custom resources each stack output was computed
    from (the registration of the stack's outputs does not carry them)."""

    async def program_then_settle() -> None:
        program()
        await _settle()
        if on_export_dependencies is not None:
            root = _settings.get_root_resource()
            on_export_dependencies(await _export_dependencies(getattr(root, "outputs", None) or {}))

    await pulumi.runtime.run_in_stack(program_then_settle)


async def _export_dependencies(exports: dict[str, Any]) -> dict[str, list[str]]:
    """Per stack output, the custom resources its value was computed from:
    an Output's resource set, which every `apply` and `Output.all` carries
    on, and the node checks it is marked with (`check:<name>`: facts flow by
    value, without resources). An output that failed is left out (the SDK's
    wait raises its error)."""
    found: dict[str, list[str]] = {}
    for name, value in exports.items():
        try:
            resources = await pulumi.Output.from_input(value).resources()
            found[name] = sorted(({await r.urn.future() or "" for r in resources
                                   if isinstance(r, pulumi.CustomResource)} - {""})
                                 # The instance's own mark: getattr on an Output lifts an unknown name.
                                 | {f"check:{check}" for check in getattr(value, "__dict__", {}).get(NODE_CHECKS, ())})
        except Exception:  # noqa: BLE001,S112 -- the SDK's wait reports the failure
            continue
    return found


def settings_defaults() -> dict[str, Any]:
    # Quirk of pulumi._utils.ContextProperty: setting a Settings property while
    # its current value is None also replaces the property's process-wide
    # *default* (so set_mocks after reset_options makes our monitor the default
    # seen by every context that never set it).  Save and restore those defaults.
    out = {}
    for name, prop in vars(_settings.Settings).items():
        if hasattr(prop, "_ContextProperty__default"):
            out[name] = prop._ContextProperty__default
    return out


def restore_settings_defaults(saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        vars(_settings.Settings)[name]._ContextProperty__default = value
