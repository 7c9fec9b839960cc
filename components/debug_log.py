"""The SDK's debug messages, sent without stopping the program.

pulumi 3.272's `pulumi.log.debug` sends each message to the engine with a
blocking gRPC call on the event loop's own thread (`pulumi/log.py` `_log`:
`engine.Log(req)`), and the SDK sends at least two for every registration
and invoke (`pulumi/runtime/resource.py` `do_register`, `invoke.py`
`do_invoke`). The CLI shows them only under `--debug`, yet every call waits
for the engine's answer while the engine is busy with the registrations:
profiled under the real engine (a 32-node `pulumi preview`,
docs/benchmarks.md), 2,101 such calls held the program's loop for 11 s of
its 38 s.

`debug` sends the same request with the call's non-blocking form
(`engine.Log.future`): the message still reaches the engine, the loop goes
on. The SDK logs synchronously so that the program cannot end before a
message is sent; `flush`, run when the interpreter exits, keeps that: it
waits for the calls still under way. A message tied to a resource keeps the
SDK's own path (it waits for the resource's URN first). Like `linear_wait`,
it is installed only over the exact function it was written against.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

import pulumi
from pulumi import log as sdk_log
from pulumi.runtime.proto import engine_pb2

from components.sdk_functions import replace_sdk_function

# The SDK release whose `pulumi.log.debug` this stands in for (requirements.txt pins it).
WRITTEN_FOR = "3.272.0"
_SDK_FUNCTION = sdk_log.debug

_under_way: list[Any] = []  # the calls sent and not yet seen answered
_lock = threading.Lock()


def debug(msg: str, resource: pulumi.Resource | None = None, stream_id: int | None = None,
          ephemeral: bool | None = None) -> None:
    """`pulumi.log.debug`, the engine's answer not waited for (see the module's text)."""
    engine = sdk_log.get_engine()
    # A gRPC stub's method has the non-blocking form; the SDK's test mocks' engine does not.
    send = getattr(getattr(engine, "Log", None), "future", None)
    if send is None or resource is not None:
        _SDK_FUNCTION(msg, resource, stream_id, ephemeral)
        return
    request = engine_pb2.LogRequest(severity=engine_pb2.DEBUG, message=msg, urn="",
                                    streamId=stream_id or 0, ephemeral=bool(ephemeral))
    call = send(request)
    with _lock:
        # Answered calls leave the list as new ones come: it holds what is under way.
        _under_way[:] = [c for c in _under_way if not c.done()]
        _under_way.append(call)


def flush() -> None:
    """Wait for every message sent and not yet answered. A failed call is a
    lost debug message, never the program's failure: the SDK's blocking call
    would have raised it into whatever registration logged it."""
    with _lock:
        calls, _under_way[:] = list(_under_way), []
    for call in calls:
        try:
            call.result()
        except Exception:  # noqa: BLE001 -- a debug message the engine did not take
            pass


def install() -> bool:
    """Put `debug` over the SDK's when the SDK has the function it was
    written against, and `flush` at the interpreter's exit; True when installed."""
    installed = replace_sdk_function(sdk_log, "debug", debug, _SDK_FUNCTION, WRITTEN_FOR)
    if installed:
        atexit.unregister(flush)  # once, however often install runs
        atexit.register(flush)
    return installed
