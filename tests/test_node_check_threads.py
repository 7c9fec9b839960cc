"""Every node check gets a thread of the program's RPC executor beside the
`--parallel` ones (components/common.py `room_for_node_checks`): the Python
SDK sends each blocking invoke from that executor, which its language host
sizes to `--parallel` (8 on a 2-core control host), so without the room 256
nodes' checks ran 8 at a time (docs/benchmarks.md)."""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

import components.common as common
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack

pytestmark = pytest.mark.graph


def blocking_checks_at_once(parallel: int, nodes: int) -> int:
    """With the SDK's executor as its language host sets it (`--parallel`
    threads), then `room_for_node_checks(nodes)`: how many blocking calls of
    the loop's default executor wait at the same time (each waits, bounded,
    until all the node checks of `nodes` nodes are waiting or the wait ends)."""
    checks = common.CHECKS_PER_NODE * nodes
    barrier = threading.Barrier(checks)

    def check() -> bool:
        try:
            barrier.wait(timeout=60)  # only reached late if the executor is too small
            return True
        except threading.BrokenBarrierError:
            return False

    async def program() -> int:
        loop = asyncio.get_running_loop()
        from concurrent.futures import ThreadPoolExecutor

        loop.set_default_executor(ThreadPoolExecutor(max_workers=parallel))  # as the language host does
        common.room_for_node_checks(nodes)
        done = await asyncio.gather(*[loop.run_in_executor(None, check) for _ in range(checks)])
        return sum(done)

    return asyncio.run(program())


def test_every_node_check_waits_on_its_own_thread(monkeypatch):
    monkeypatch.setattr(common, "settings", SimpleNamespace(SETTINGS=SimpleNamespace(parallel=2)))
    # 12 nodes: 48 checks on a language host with --parallel 2, all waiting at once.
    assert blocking_checks_at_once(parallel=2, nodes=12) == 48


def test_the_room_is_parallel_plus_the_checks(monkeypatch):
    monkeypatch.setattr(common, "settings", SimpleNamespace(SETTINGS=SimpleNamespace(parallel=8)))

    async def program() -> int | None:
        return common.room_for_node_checks(256)

    assert asyncio.run(program()) == 8 + 4 * 256


def test_under_the_mocks_the_callers_executor_stays():
    """No `--parallel` (the SDK's mocks): the offline preview keeps its own
    one-RPC-at-a-time executor (ascendctl/preview/recorder.py)."""
    async def program() -> tuple[int | None, object]:
        loop = asyncio.get_running_loop()
        mine = object()
        loop._default_executor = mine  # type: ignore[attr-defined]  # what set_default_executor stores
        room = common.room_for_node_checks(4)
        kept = loop._default_executor  # type: ignore[attr-defined]
        loop._default_executor = None  # type: ignore[attr-defined]  # nothing for asyncio.run to shut down
        return room, kept is mine

    assert asyncio.run(program()) == (None, True)


def test_the_program_makes_room_for_its_nodes(monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(common, "room_for_node_checks", asked.append)
    base = load_stack("tp16-vllm-mindspore")
    config = scaled_config(base, 20)
    record_stack(loaded_with_config(base, config), config)
    assert asked == [20]
