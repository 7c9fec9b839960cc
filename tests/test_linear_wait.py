"""components/linear_wait.py: the SDK's end-of-program wait with `settle`
ahead of it. What makes the SDK's own wait quadratic is how many pending
Outputs it hands to `asyncio.wait` round after round; with `settle` first it
finds none. The failure it raises is the one the SDK's wait raises alone."""
from __future__ import annotations

import asyncio
import types

import pytest
from pulumi.runtime import settings
from pulumi.runtime import stack as sdk_stack

from components import linear_wait

pytestmark = pytest.mark.graph

SDK = linear_wait._SDK_FUNCTION


def run_wait(monkeypatch, wait, outputs_count: int, failing: int | None = None) -> list[int]:
    """Run `wait` over `outputs_count` Outputs (tasks that end in turn, one
    failing when asked) as the SDK tracks them; return the sizes of what the
    SDK's wait handed to `asyncio.wait`, round by round."""
    handed: list[int] = []
    real_wait = asyncio.wait

    async def recording_wait(tasks, **kwargs):
        handed.append(len(tasks))
        return await real_wait(tasks, **kwargs)

    monkeypatch.setattr(sdk_stack, "asyncio", types.SimpleNamespace(wait=recording_wait, sleep=asyncio.sleep,
                                                                    FIRST_COMPLETED=asyncio.FIRST_COMPLETED))

    async def output(index: int) -> int:
        for _ in range(index):  # each ends at a loop turn of its own
            await asyncio.sleep(0)
        if index == failing:
            raise ValueError(f"output {index} failed")
        return index

    async def main() -> None:
        manager = settings._get_rpc_manager()
        monkeypatch.setattr(manager, "rpcs", [])
        monkeypatch.setattr(manager, "unhandled_exception", None)
        tracked = set()
        monkeypatch.setattr(settings.SETTINGS, "outputs", tracked)
        for index in range(outputs_count):
            task = asyncio.ensure_future(output(index))
            tracked.add(task)
            # As the SDK's Output does (pulumi/output.py): a task that succeeded leaves the set.
            task.add_done_callback(lambda t: tracked.discard(t) if not t.exception() else None)
        await wait()

    asyncio.run(main())
    return handed


def test_the_sdks_own_wait_hands_every_pending_output_over_again_and_again(monkeypatch):
    # The measure of the quadratic cost: without `settle`, a round per Output that ends,
    # each handing over every one still pending (100 + 99 + ... in all for 100).
    handed = run_wait(monkeypatch, SDK, 100)
    assert sum(handed) > 2000, handed


def test_with_settle_first_the_sdks_wait_finds_nothing_left(monkeypatch):
    # At most the last Output, done, whose callback taking it out of the set has not run yet.
    handed = run_wait(monkeypatch, linear_wait.wait_for_rpcs, 100)
    assert sum(handed) <= 1, handed


@pytest.mark.parametrize("wait", [SDK, linear_wait.wait_for_rpcs], ids=["sdk", "settle-first"])
def test_a_failed_output_is_raised_as_the_sdks_wait_raises_it(monkeypatch, wait):
    with pytest.raises(ValueError, match="^output 42 failed$"):
        run_wait(monkeypatch, wait, 100, failing=42)
