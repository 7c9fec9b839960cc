"""The SDK's end-of-program wait, in linear time.

When the program has made its resources, the Python SDK (pulumi 3.272,
`pulumi/runtime/stack.py` `wait_for_rpcs`) yields to the event loop once
per registration, then hands every pending Output to `asyncio.wait(...,
FIRST_COMPLETED)` again and again until none is left: each round adds and
removes a callback on every pending Output, so the wait grows with the
square of the Outputs. Profiled under the real engine (a 32-node `pulumi
preview`, docs/benchmarks.md), it was most of the program's CPU.

`settle` awaits every registration and Output the program started, each
once, before the SDK's own wait runs; that wait then finds nothing left and
raises what it would have raised (see `settle`). The offline preview's
recorder awaits it after the program (ascendctl/preview/sdk.py
`run_program`); under the real engine `install` puts it ahead of the SDK's
wait. Like `cycle_check` and `source_positions`, it is installed only over
the exact function it was written against.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pulumi.runtime import settings
from pulumi.runtime import stack as sdk_stack

from components.sdk_functions import replace_sdk_function

# The SDK release whose `wait_for_rpcs` this goes ahead of (requirements.txt pins it).
WRITTEN_FOR = "3.272.0"
_SDK_FUNCTION = sdk_stack.wait_for_rpcs


async def settle() -> None:
    """Wait for every registration and Output the program started, in
    linear time, before the SDK's own wait (`wait_for_rpcs`) runs.

    The SDK's wait yields to the loop once per registration, and then hands
    all pending Outputs to `asyncio.wait(..., FIRST_COMPLETED)` again and
    again until none is left: each round adds and removes a callback on
    every pending Output. Together that was half of a 256-node recording.
    Here each is awaited in turn, one callback each.

    At the first failure this lets the registrations under way finish and
    leaves the rest to the SDK's wait, which then raises the first failure
    as it would have: the failed registration as the SDK recorded it
    (`unhandled_exception`), or the failed Output. Failed registrations are
    taken out of the SDK's list first: its wait re-raises a failed one
    `from` the recorded exception, which is the same object, so the
    exception would become its own cause and lose the chain back to the
    program's own error. (Stopping before those registrations finished left
    a failing one in the list: 4 runs in 150 raised the SDK's wrapper.) After a success
    the SDK's wait finds nothing left but the stack's outputs."""
    rpcs: list[Any] = settings._get_rpc_manager().rpcs  # asyncio futures
    outputs = settings.SETTINGS.outputs

    def failed(task: Any) -> bool:
        return bool(task.done() and (task.cancelled() or task.exception() is not None))

    async def fails(awaitable: Any) -> bool:
        # Whether it failed; its error is the SDK's wait's to raise. The
        # cancellation of this task itself (the recorder's timeout cancels
        # every task) is passed on: swallowed, the recorder's clean-up would
        # wait for ever on a task that never ends.
        try:
            await awaitable
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return True
        except Exception:  # noqa: BLE001 -- the SDK's wait raises it
            return True
        return False

    async def stop() -> None:
        # Registrations still under way finish first (one may be failing from
        # the same error), then the failed ones leave the SDK's list.
        while under_way := [rpc for rpc in rpcs if not rpc.done()]:
            for rpc in under_way:
                await fails(rpc)
        rpcs[:] = [rpc for rpc in rpcs if not failed(rpc)]

    while True:
        while rpcs:
            if await fails(rpcs.pop()):  # last first, as the SDK's wait takes them
                await stop()
                return
        with settings.SETTINGS.lock:
            tracked = list(outputs)
        # A done Output leaves the set in a callback; a failed one stays there.
        if any(failed(task) for task in tracked):
            await stop()
            return
        pending = [task for task in tracked if not task.done()]
        if not pending:
            return
        for task in pending:
            if await fails(task):
                await stop()
                return


async def wait_for_rpcs(await_all_outstanding_tasks: bool = True) -> None:
    """`settle`, then the SDK's own wait (which raises the first failure)."""
    if await_all_outstanding_tasks:
        await settle()
    await _SDK_FUNCTION(await_all_outstanding_tasks)


def install() -> bool:
    """Put `settle` ahead of the SDK's end-of-program wait when the SDK has
    the function it was written against; True when installed."""
    return replace_sdk_function(sdk_stack, "wait_for_rpcs", wait_for_rpcs, _SDK_FUNCTION, WRITTEN_FOR)
