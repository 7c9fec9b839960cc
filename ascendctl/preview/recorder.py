"""Recording a Pulumi program's resource graph: run the program under the
SDK's mocks in preview mode and return the `Graph` of everything it
registered.

The mocks (`RecordingMocks`, a public `pulumi.runtime.Mocks`) answer each
resource with its inputs plus what the caller's `outputs_for` adds (the
synthetic node facts for a stack, or real work in the emulator); the requests
themselves are kept by `sdk.RecordingMonitor`. What the recording shows and
does not show:

* Shown: the resource tree (type, name, URN as the engine makes it, parent,
  custom/component), dependencies as the SDK sends them (`depends_on` plus
  every property dependency, components expanded to their custom children;
  and per input), the options the request carries (including those an SDK adds
  on its own: pulumi-command's `remote.Command` merges
  `replace_on_changes=["triggers[*]"]` and `additional_secret_outputs`),
  inputs in wire form (Pulumi schema names, secrets kept as `Secret`, preview
  unknowns as `UNKNOWN`), stack outputs and component `register_outputs`.
  An exception raised by the program, inside an `apply` or by a mock comes out
  of `record_graph` unchanged (same type, same message).
* Node checks: the program's read-only checks are pulumi-command `local.run`
  invokes, not resources (components.common.node_check), so no request names
  them as a dependency. Each is recorded as a `CheckRecord` in `Graph.checks`
  (its name and node from the `ASCEND_INFERENCE_CHECK`/`_NODE` environment the
  program sets; `ran` once its invoke reached the mock monitor, with its
  arguments; the resources its depends_on named). Which registrations waited
  for which checks is read, not guessed: the program marks each Output computed
  from checks with their names (`from_checks`), `after(value)` carries the mark
  into `depends_on`, and `sdk._watch_sdk` reads the marks in the options the
  SDK itself resolves before it sends the request (`prepare_resource` for a
  resource, `_invoke` for a check). So `ResourceRecord.after_checks` is what
  that registration's depends_on held, and `Graph.checks_before` follows it
  through the resources and checks it waits for. (Recording which checks had
  answered when a request arrived would not do: one request is answered at a
  time, so everything earlier has, needed or not.) A wait that only data
  carries (a check's output in an input) is not recorded; the program states
  each wait it relies on in depends_on too.
* Not shown: no provider is loaded, so provider defaults, provider-side
  validation and the provider's own update-or-replace decision are invisible
  (`diff.py` approximates the last with `providers.py`); there is no state, so
  "before" in a diff is another recording; default providers, stack
  transforms, resource hooks and the engine's step scheduling are not run
  (`Graph.longest_chain` models the scheduling).

Order and cost: the SDK sends every monitor request through the event
loop's executor. Here the loop waits for each request to be answered before
it runs anything else, so the registration order (and the printouts, which
follow it) does not depend on how fast the mocks answer. (With a
free-running worker thread the loop raced ahead of slow answers, and the
order of independent registrations, a node's image and its container-name
check say, changed between runs on a loaded machine.) One source of order
is left to the SDK (pulumi 3.272.0): a dependency on a component awaits the
component's children in the order of a set of objects, that is of their
addresses, which address-space randomisation and string hashing vary. So
independent resources (GPUStack's worker containers, say) can still come in
another order: measured, 1 run in 16 of `preview --stack dp4-ep32-gpustack`
(before this change, 4 in 16); with PYTHONHASHSEED=0 and ASLR off, none in
10. The cyclic GC is paused during a run. Before the SDK's own final wait,
`sdk.run_program` awaits every registration and Output once each
(`components/linear_wait.py` `settle`): the SDK's wait polls all pending Outputs in rounds, which
was half of a 256-node recording; at the first failure it steps aside so
that the SDK raises what it would have raised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

from ascendctl.preview import sdk
from ascendctl.preview.graph import Graph
from ascendctl.preview.values import Secret


class RecordingMocks(Mocks):
    """Each resource's state is its inputs (less those ``not_echoed`` names
    for its type) updated with ``outputs_for(args)``; its id is the
    ``"__id__"`` that ``outputs_for`` returns, else ``<name>-id``.
    Invokes return ``call_for(args)`` (default ``{}``)."""

    def __init__(
        self,
        outputs_for: Callable[[MockResourceArgs], dict[str, Any]] | None,
        call_for: Callable[[MockCallArgs], dict[str, Any]] | None,
        not_echoed: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._outputs_for = outputs_for
        self._call_for = call_for
        self._not_echoed = not_echoed or {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        skipped = self._not_echoed.get(args.typ)
        state = {k: v for k, v in args.inputs.items() if k not in skipped} if skipped else dict(args.inputs)
        if self._outputs_for is not None:
            extra = self._outputs_for(args)
            if extra:
                state.update(extra)
        # outputs_for may choose the id (key "__id__"), e.g. one derived from
        # the inputs, so that a replaced resource gets a new id as it would
        # for real and its dependents' triggers change with it. None is an id
        # unknown in the preview (a resource the preview creates or replaces):
        # the SDK reads the empty id as unknown in a dry run.
        if "__id__" in state:
            chosen = state.pop("__id__")
            return ("" if chosen is None else chosen or f"{args.name}-id"), state
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        # No failures is [], not None: the SDK's mock monitor iterates them.
        return (self._call_for(args) or {}) if self._call_for is not None else {}, []


_RUN_LOCK = threading.Lock()
_P = ParamSpec("_P")
_T = TypeVar("_T")


class _OneAtATime(concurrent.futures.ThreadPoolExecutor):
    """Each RPC runs on the worker thread while the event loop waits for it:
    nothing else in the program advances meanwhile, so what the program
    registers next never depends on how long an answer took. (The worker
    thread stays: on the loop's own thread, MockMonitor's `_sync_await` would
    pump the program's loop re-entrantly, running program callbacks in the
    middle of a request.) It is also faster: a
    64-node stack recorded in 3.6 s against 6.4 s with a free-running worker,
    which spent the difference handing the GIL back and forth."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> concurrent.futures.Future[_T]:
        future = super().submit(fn, *args, **kwargs)
        concurrent.futures.wait([future])
        return future


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


_frozen = False


def _collect_previous_run() -> None:
    """Collect what an earlier run in this process parked (see record_graph)."""
    global _frozen
    if _frozen:
        gc.unfreeze()
        gc.collect()
        _frozen = False


def record_graph(
    program: Callable[[], None],
    config: dict[str, Any],
    *,
    project: str = "ascend-inference",
    stack: str = "dev",
    outputs_for: Callable[[MockResourceArgs], dict[str, Any]] | None = None,
    call_for: Callable[[MockCallArgs], dict[str, Any]] | None = None,
    secret_keys: Iterable[str] = (),
    timeout: float = 300.0,
    rpc_workers: int = 1,
    not_echoed: Mapping[str, frozenset[str]] | None = None,
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
    ``not_echoed`` maps a resource type to input names left out of that state:
    in preview those outputs are unknown (as a provider's unknown outputs are),
    and the SDK does not hold a copy of them for every resource.
    ``rpc_workers`` > 1 lets independent registrations run concurrently (for an
    ``outputs_for`` that performs real work) and gives up the fixed order;
    the default of 1 answers one request at a time, in a fixed order.

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
        saved_defaults = sdk.settings_defaults()
        gc.disable()
        _collect_previous_run()
        try:
            ctx = contextvars.copy_context()
            return ctx.run(
                _record, program, config, project, stack, outputs_for, call_for, secret_keys, timeout,
                rpc_workers, not_echoed,
            )
        finally:
            sdk.restore_settings_defaults(saved_defaults)
            # A run leaves its short-lived SDK objects uncollected (GC was
            # off): collecting them now would scan every object the run
            # made, a fifth of a 512-node preview's time, for a CLI process
            # that exits next. Park them instead (gc.freeze); the next run in
            # this process collects them first (`_collect_previous_run`).
            global _frozen
            gc.freeze()
            _frozen = True
            if gc_was_enabled:
                gc.enable()


def _record(
    program: Callable[[], None],
    config: dict[str, Any],
    project: str,
    stack: str,
    outputs_for: Callable[[MockResourceArgs], dict[str, Any]] | None,
    call_for: Callable[[MockCallArgs], dict[str, Any]] | None,
    secret_keys: Iterable[str],
    timeout: float,
    rpc_workers: int = 1,
    not_echoed: Mapping[str, frozenset[str]] | None = None,
) -> Graph:
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

    export_dependencies: dict[str, list[str]] = {}
    monitor = sdk.RecordingMonitor(RecordingMocks(outputs_for, call_for, not_echoed))
    sdk.install_mocks(monitor, project=project, stack=stack, config=values, secret_keys=sorted(secrets))

    # A private loop (never installed as the thread's current loop; inside it
    # asyncio.get_event_loop() returns it) whose default executor answers one
    # RPC at a time while the loop waits (see _OneAtATime).  The RPCs are
    # GIL-bound Python anyway; more workers would not be faster.
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet_exception_handler)
    # An executor that performs real work in `outputs_for` (emulator/) asks for
    # more workers so that independent resources proceed in parallel.
    executor = (_OneAtATime if rpc_workers == 1 else concurrent.futures.ThreadPoolExecutor)(
        max_workers=rpc_workers, thread_name_prefix="pulumi-mock-rpc")
    loop.set_default_executor(executor)

    class _Timeout(Exception):
        pass

    async def main() -> None:
        task = asyncio.ensure_future(sdk.run_program(program, export_dependencies.update))
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

    monitor.finish_checks()
    return Graph(resources=list(monitor.records), outputs=monitor.stack_outputs, stack_urn=monitor.stack_urn,
                 output_dependencies=export_dependencies, checks=list(monitor.checks))


_WRAPPED = re.compile(r"^While processing (resource|input): (.*?)(?:, type[: ] (.*?))?\n", re.S)


def _unwrap_sdk_error(exc: BaseException) -> BaseException:
    """Undo the SDK's re-wrapping of ValueError/AssertionError.

    ``serialize_properties`` and ``register_resource`` turn a ValueError raised in
    an ``apply`` into ``ValueError("While processing resource: ... has risen: ...")
    from original``.  Return the original exception (same object, traceback
    intact) with a note naming the resource and input instead.
    """
    notes = []
    seen: set[int] = set()  # a cause chain may loop (an exception raised from itself)
    while (
        id(exc) not in seen
        and isinstance(exc, (ValueError, AssertionError))
        and isinstance(exc.__cause__, type(exc))
        and str(exc).startswith("While processing ")
    ):
        seen.add(id(exc))
        m = _WRAPPED.match(str(exc))
        if m:
            what, name, typ = m.groups()
            notes.append(f"{what} {name}" + (f" ({typ})" if typ and what == "resource" else ""))
        exc = exc.__cause__
    if notes and hasattr(exc, "add_note"):
        exc.add_note("while registering " + ", ".join(notes))
    return exc


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
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


