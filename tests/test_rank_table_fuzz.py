"""Property: every rank table, however broken, gets a clean answer.

Seeded random mutations of good tables (1.0 for MindIE and LMDeploy, 1.2 for
Atlas A3) and random JSON documents go through the checks a brought table
goes through (`validate_rank_table`, then `check_rank_table_for_stack` with
each engine's real options, and `load_brought_table` from a file). Each
answer is an acceptance or a list of Problems, each one line naming the
file and a key; never another exception. The work is bounded by a fixed
number of examples per seed, not by the clock; a failure prints the seed
and the table, which reproduces it.
"""
from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from ascend_inference.brought_table import load_brought_table
from ascend_inference.errors import Problem, StackError
from ascend_inference.ranktable import (
    RankTableOptions,
    StackServer,
    check_rank_table_for_stack,
    rank_table_for,
    validate_rank_table,
)
from ascend_inference.stackfile import load_stack

pytestmark = pytest.mark.pure

# Examples per base table and seed; 3 bases x 2 seeds x 250 = 1,500 tables.
EXAMPLES = 250
SEEDS = (23, 2026)
# load_brought_table reads a file each time: fewer of those.
FILE_EXAMPLES = 40

# Values that have broken, or could break, a reader that trusts its input.
NASTY: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 2.5, 10**30, float("nan"), "", " ", "0", "00", "1", "15", "²", "¹⁵",
    "١٥", "٣", "1a", " 3", "+3", "-1", "99999999999", "9" * 5000, "1.0", "1.2", "Standard", "completed",
    "1\n2", "192.0.2.11\n", "\x00", "\u2028",
    "192.0.2.11", "192.0.2.12", "198.51.100.1", "198.51.100.1,198.51.100.2", "198.51.100.1,", ",", "::",
    "0.0.0.0", "2001:db8::1", "fe80::1%eth0", "not an ip", "n" * 100, [], {}, [1], [[]], {"server_id": 1},
    {"server_id": []}, [{"server_id": "192.0.2.11"}], {"a": {"b": []}},
]


def base_tables() -> dict[str, dict]:
    devices = 8
    servers = [{"server_id": f"192.0.2.{11 + n}", "device_ips": [f"198.51.100.{n * 16 + d + 1}" for d in range(8)]}
               for n in range(2)]
    mindie = rank_table_for(servers, devices, version="1.0", with_container_ip=True)
    lmdeploy = rank_table_for(servers, devices, version="1.0", device_port="16667")
    a3_servers = [{"server_id": f"172.16.0.{100 + n}", "device_ips": [f"192.168.{n + 1}.{6 + d}" for d in range(4)],
                   "super_device_ids": [str(n % 2 * 4 + d) for d in range(4)], "super_pod_id": str(n // 2)}
                  for n in range(4)]
    a3 = rank_table_for(a3_servers, 4, version="1.2")
    return {"mindie": mindie, "lmdeploy": lmdeploy, "a3": a3}


def containers(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a JSON tree: dict keys and list indexes."""
    found: list[tuple[Any, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                found.append((current, key))
                stack.append(value)
        elif isinstance(current, list):
            for index, value in enumerate(current):
                found.append((current, index))
                stack.append(value)
    return found


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.5:
        return copy.deepcopy(rng.choice(NASTY))
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["server_list", "server_count", "version", "status", "device", "device_id", "device_ip", "rank_id",
            "server_id", "container_ip", "host_ip", "super_pod_list", "super_pod_id", "super_device_id", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(table: Any, rng: random.Random) -> Any:
    """One to four edits anywhere in the tree: replace, delete, duplicate,
    reorder, or graft a piece of the table somewhere else."""
    for _ in range(rng.randint(1, 4)):
        spots = containers(table)
        if not spots or rng.random() < 0.02:
            return random_json(rng)
        parent, key = rng.choice(spots)
        action = rng.randrange(6)
        if action == 0:
            parent[key] = copy.deepcopy(rng.choice(NASTY))
        elif action == 1:
            parent[key] = random_json(rng)
        elif action == 2:
            del parent[key]
        elif action == 3 and isinstance(parent, list):
            parent.insert(rng.randint(0, len(parent)), copy.deepcopy(parent[key]))
        elif action == 4 and isinstance(parent, list) and len(parent) > 1:
            other = rng.randrange(len(parent))
            parent[key], parent[other] = parent[other], parent[key]
        else:
            donor = rng.choice(spots)
            parent[key] = copy.deepcopy(donor[0][donor[1]])
    return table


def assert_clean(problems: object, source: str, table: Any) -> None:
    assert isinstance(problems, list), f"{type(problems)} for {json.dumps(table)[:2000]}"
    for problem in problems:
        assert isinstance(problem, Problem)
        text = str(problem)
        assert text.startswith(f"{source}: ") and problem.key and problem.message, text
        assert len(text.splitlines()) == 1, text


STACK = [StackServer("node0", "192.0.2.11", tuple(f"198.51.100.{d + 1}" for d in range(8))),
         StackServer("node1", "192.0.2.12")]
A3_STACK = [StackServer(f"node{n}", f"172.16.0.{100 + n}") for n in range(4)]


@pytest.fixture(scope="module")
def engine_options() -> dict[str, RankTableOptions]:
    options = {}
    for engine, stack in (("mindie", "tp16-mindie"), ("lmdeploy", "tp16-lmdeploy")):
        spec = load_stack(stack).spec
        options[engine] = spec.engine_plugin.rank_table_options(spec)
    return options


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("base", ["mindie", "lmdeploy", "a3"])
def test_every_mutated_table_gets_a_clean_answer(base, seed, engine_options):
    rng = random.Random(f"{base}-{seed}")
    good = base_tables()[base]
    version, devices = ("1.2", 4) if base == "a3" else ("1.0", 8)
    stack = A3_STACK if base == "a3" else STACK
    refused = 0
    for example in range(EXAMPLES):
        table = mutate(copy.deepcopy(good), rng)
        shown = f"seed {seed} example {example}: {json.dumps(table, ensure_ascii=False)[:2000]}"
        for every_device in (True, False):
            try:
                problems = validate_rank_table(
                    table, source="t.json", devices_per_node=devices, version=version,
                    require_container_ip=base == "mindie", every_device=every_device, notes=[])
            except Exception as error:  # noqa: BLE001 - the property is "no exception"
                pytest.fail(f"validate_rank_table raised {error!r} on {shown}")
            assert_clean(problems, "t.json", table)
        refused += bool(problems)
        if problems:
            continue
        for engine, rules in engine_options.items():
            try:
                more = check_rank_table_for_stack(table, source="t.json", stack_file="Pulumi.s.yaml",
                                                  servers=stack, world_size=len(stack) * devices, rules=rules)
            except Exception as error:  # noqa: BLE001
                pytest.fail(f"check_rank_table_for_stack ({engine}) raised {error!r} on {shown}")
            assert_clean(more, "t.json", table)
    # The mutations do reach the checks: most tables are refused, some pass.
    assert EXAMPLES // 2 < refused < EXAMPLES, refused


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-lmdeploy"])
def test_every_mutated_file_gets_a_clean_answer_from_the_loader(tmp_path, stack):
    """The path `validate --rank-table` and network.rank_table_file take: the
    file's text, including text that is no JSON at all."""
    loaded = load_stack(stack)
    rng = random.Random(f"file-{stack}")
    good = base_tables()["mindie" if stack == "tp16-mindie" else "lmdeploy"]
    path = tmp_path / "brought.json"
    texts = ["", "[" * 100_000, "{\"server_count\": " + "9" * 5000 + "}", "\ufeff{}", "{} {}", "\x00"]
    texts += [json.dumps(mutate(copy.deepcopy(good), rng), ensure_ascii=rng.random() < 0.5)
              for _ in range(FILE_EXAMPLES)]
    for text in texts:
        path.write_text(text, encoding="utf-8")
        try:
            load_brought_table(loaded.spec, loaded.plan, loaded.file, path)
        except StackError as error:
            assert error.problems
            for problem in error.problems:
                assert len(str(problem).splitlines()) == 1 and problem.key, str(problem)
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"load_brought_table raised {error!r} on {text[:2000]!r}")
