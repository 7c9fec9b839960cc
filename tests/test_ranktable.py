"""HCCL rank tables: properties of `rank_table_for` over 1..64 nodes x 1..16
devices, and `validate_rank_table` rejecting every kind of broken table with a
message that says which server (and device) is wrong."""
from __future__ import annotations

import copy
import ipaddress
import json
import random

import pytest

from ascend_inference.ranktable import (
    hccl_number,
    json_kind,
    one_line,
    rank_table_digest,
    rank_table_for,
    rank_table_json,
    split_device_ip,
    validate_rank_table,
)

NODE_COUNTS = (1, 2, 3, 4, 8, 16, 32, 64)
DEVICE_COUNTS = (1, 2, 4, 8, 16)


def make_servers(nodes: int, devices: int, *, seed: int = 0, container_ips: bool = False) -> list[dict]:
    """Distinct server IPs (192.0.2.0/24 style, shuffled so that order is not
    sorted) and distinct device IPs for every device."""
    rng = random.Random(seed)
    server_ips = [str(ipaddress.IPv4Address("10.0.0.1") + i) for i in range(nodes)]
    rng.shuffle(server_ips)  # server order must be kept as given, not sorted
    base = ipaddress.IPv4Address("172.16.0.1")
    servers = []
    for i, ip in enumerate(server_ips):
        server = {"server_id": ip, "device_ips": [str(base + i * 64 + d) for d in range(devices)]}
        if container_ips:
            server["container_ip"] = str(ipaddress.IPv4Address("10.1.0.1") + i)
        servers.append(server)
    return servers


def all_strings(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and all_strings(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_strings(v) for v in value)
    return isinstance(value, str)


def check_properties(nodes: int, devices: int, *, with_container_ip: bool, device_port, seed: int = 0):
    servers = make_servers(nodes, devices, seed=seed, container_ips=with_container_ip and seed % 2 == 0)
    table = rank_table_for(servers, devices, version="1.0", with_container_ip=with_container_ip,
                           device_port=device_port)
    label = f"{nodes} nodes x {devices} devices"
    world = nodes * devices
    assert table["server_count"] == str(nodes), label
    assert len(table["server_list"]) == nodes, label
    assert table["status"] == "completed" and table["version"] == "1.0", label
    # Server order kept (master first), device IPs in device order.
    assert [s["server_id"] for s in table["server_list"]] == [s["server_id"] for s in servers], label
    ranks = []
    for server, given in zip(table["server_list"], servers, strict=True):
        assert [d["device_id"] for d in server["device"]] == [str(i) for i in range(devices)], label
        assert [d["device_ip"] for d in server["device"]] == given["device_ips"], label
        ranks += [int(d["rank_id"]) for d in server["device"]]
        if with_container_ip:
            assert server["container_ip"] == given.get("container_ip", given["server_id"]), label
        else:
            assert "container_ip" not in server, label
        for device in server["device"]:
            if device_port is None:
                assert "device_port" not in device, label
            else:
                assert device["device_port"] == str(device_port), label
    # Contiguous, unique, in server then device order.
    assert ranks == list(range(world)), label
    assert all_strings(table), f"{label}: every value must be a string"
    problems = validate_rank_table(table, source="generated.json", devices_per_node=devices, version="1.0",
                                   server_count=nodes, require_container_ip=with_container_ip)
    assert problems == [], f"{label}: " + "; ".join(map(str, problems))
    # Canonical text: same table, same bytes.
    assert json.loads(rank_table_json(table)) == table
    assert rank_table_digest(copy.deepcopy(table)) == rank_table_digest(table)


@pytest.mark.parametrize("nodes", NODE_COUNTS)
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_rank_table_properties_grid(nodes, devices):
    check_properties(nodes, devices, with_container_ip=True, device_port=None)
    check_properties(nodes, devices, with_container_ip=False, device_port="16667")


def test_rank_table_properties_random_sample():
    rng = random.Random(20240517)
    for seed in range(60):
        nodes, devices = rng.randint(1, 64), rng.randint(1, 16)
        check_properties(nodes, devices, with_container_ip=rng.random() < 0.5,
                         device_port=rng.choice([None, "16667", 16666]), seed=seed)


def test_rank_table_extremes():
    check_properties(1, 1, with_container_ip=True, device_port=None)
    check_properties(64, 16, with_container_ip=False, device_port="16667")


# --------------------------------------------------------------------------
# Validator: broken tables
# --------------------------------------------------------------------------

MASTER, WORKER = "192.0.2.11", "192.0.2.12"


@pytest.fixture
def table() -> dict:
    servers = [{"server_id": MASTER, "device_ips": [f"198.51.100.{d + 1}" for d in range(8)]},
               {"server_id": WORKER, "device_ips": [f"198.51.100.{d + 17}" for d in range(8)]}]
    return rank_table_for(servers, 8, version="1.0", with_container_ip=True)


def problems_of(table, **overrides) -> list[str]:
    kwargs = dict(source="rank_table.json", devices_per_node=8, version="1.0", server_count=2,
                  require_container_ip=True)
    kwargs.update(overrides)
    return [str(p) for p in validate_rank_table(table, **kwargs)]


def names_server(text: str, server_id: str, index: int) -> bool:
    return server_id in text or f"server_list[{index}]" in text


def names_device(text: str, device: int) -> bool:
    return f"device {device}" in text or f"device[{device}]" in text


def assert_problem(problems: list[str], *, server: tuple[str, int] | None = None, device: int | None = None,
                   words: tuple[str, ...] = ()):
    assert problems, "the validator accepted a broken table"
    for text in problems:
        if server is not None and not names_server(text, *server):
            continue
        if device is not None and not names_device(text, device):
            continue
        if all(w in text for w in words):
            return
    want = []
    if server:
        want.append(f"server {server[0]}")
    if device is not None:
        want.append(f"device {device}")
    want += [repr(w) for w in words]
    pytest.fail(f"no problem names {', '.join(want)}; got:\n" + "\n".join(problems))


def test_valid_table_has_no_problem(table):
    assert problems_of(table) == []


def test_duplicate_device_ip(table):
    table["server_list"][1]["device"][3]["device_ip"] = table["server_list"][0]["device"][2]["device_ip"]
    problems = problems_of(table)
    assert_problem(problems, server=(WORKER, 1), device=3, words=("198.51.100.3",))
    assert_problem(problems, server=(MASTER, 0), device=2)  # says which device already has it


def test_duplicate_device_ip_within_a_server(table):
    devices = table["server_list"][0]["device"]
    devices[5]["device_ip"] = devices[4]["device_ip"]
    assert_problem(problems_of(table), server=(MASTER, 0), device=5, words=(devices[4]["device_ip"],))


def test_duplicate_server(table):
    table["server_list"][1]["server_id"] = MASTER
    assert_problem(problems_of(table), server=(MASTER, 1), words=("twice",))


def test_gap_in_rank_ids(table):
    for device in table["server_list"][1]["device"]:
        device["rank_id"] = str(int(device["rank_id"]) + 1)  # 0..7, 9..16
    problems = problems_of(table)
    # 16 ranks run 0..15: the worker's last device holds 16, and 8 is unused.
    assert_problem(problems, server=(WORKER, 1), device=7, words=("16", "rank 8 is unused"))


def test_repeated_rank_id(table):
    table["server_list"][1]["device"][0]["rank_id"] = "7"
    problems = problems_of(table)
    assert_problem(problems, words=("7",))
    assert_problem(problems, server=(WORKER, 1), device=0)


def test_device_count_mismatch(table):
    table["server_list"][1]["device"].pop()
    assert_problem(problems_of(table), server=(WORKER, 1), words=("7", "8"))


def test_wrong_version_for_the_chip(table):
    table["version"] = "1.2"
    assert_problem(problems_of(table), words=("version", "1.2", "1.0"))


def test_number_instead_of_string(table):
    table["server_list"][1]["device"][2]["rank_id"] = 10
    assert_problem(problems_of(table), server=(WORKER, 1), device=2, words=("string",))


def test_number_instead_of_string_device_id(table):
    table["server_list"][0]["device"][4]["device_id"] = 4
    assert_problem(problems_of(table), server=(MASTER, 0), device=4, words=("string",))


def test_server_count_not_a_string(table):
    table["server_count"] = 2
    assert_problem(problems_of(table), words=("server_count", "string"))


def test_missing_container_ip_for_mindie(table):
    del table["server_list"][1]["container_ip"]
    assert_problem(problems_of(table), server=(WORKER, 1), words=("container_ip",))
    # Not needed for LMDeploy's format.
    assert problems_of(table, require_container_ip=False) == []


def test_server_count_mismatch(table):
    table["server_count"] = "3"
    assert_problem(problems_of(table), words=("server_count", "3", "2"))


def test_server_list_shorter_than_the_stack(table):
    assert_problem(problems_of(table, server_count=3), words=("2", "3"))


def test_status_not_completed(table):
    table["status"] = "initializing"
    assert_problem(problems_of(table), words=("status", "initializing"))


def test_device_id_in_any_order_is_accepted(table):
    """HCCL reads device_id as the NPU's number, not as a list position."""
    devices = table["server_list"][1]["device"]
    devices[0]["device_id"], devices[1]["device_id"] = "1", "0"
    assert problems_of(table) == []


def test_device_id_beyond_the_server(table):
    table["server_list"][1]["device"][2]["device_id"] = "8"
    assert_problem(problems_of(table), server=(WORKER, 1), words=("device_id '8'", "0..7"))


def test_device_id_repeated(table):
    table["server_list"][1]["device"][1]["device_id"] = "0"
    assert_problem(problems_of(table), server=(WORKER, 1), words=("device_id",))


def test_device_ip_not_an_ip(table):
    table["server_list"][0]["device"][6]["device_ip"] = "198.51.100.x"
    assert_problem(problems_of(table), server=(MASTER, 0), device=6, words=("198.51.100.x",))


def test_missing_top_level_field(table):
    del table["status"]
    assert_problem(problems_of(table), words=("status",))


def test_not_an_object():
    assert_problem(problems_of(["not", "a", "table"]), words=("object",))


def test_every_problem_names_the_source(table):
    table["status"] = "x"
    table["server_list"][1]["device"][3]["device_ip"] = table["server_list"][0]["device"][0]["device_ip"]
    for text in problems_of(table):
        assert text.startswith("rank_table.json: ")


def test_rendered_rank_tables_validate(rendered):
    for stack, devices in (("tp16-mindie", 8), ("tp16-lmdeploy", 8)):
        table = json.loads((rendered[stack] / "rank_table.json").read_text())
        assert validate_rank_table(table, source=stack, devices_per_node=devices, version="1.0", server_count=2,
                                   require_container_ip=stack == "tp16-mindie") == []


# --------------------------------------------------------------------------
# Tables users bring: HCCL's rules and no stricter, then the stack's
# --------------------------------------------------------------------------

from ascend_inference.ranktable import RankTableOptions, StackServer, check_rank_table_for_stack  # noqa: E402

pytestmark = pytest.mark.pure


def notes_of(table, **overrides) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    kwargs = dict(source="rank_table.json", devices_per_node=8, version="1.0", require_container_ip=True,
                  every_device=False, notes=notes)
    kwargs.update(overrides)
    return [str(p) for p in validate_rank_table(table, **kwargs)], notes


def test_a_subset_of_devices_is_accepted_with_a_note(table):
    """Devices 4-7 of each server: HCCL accepts it; the program's own tables list every NPU."""
    for server in table["server_list"]:
        server["device"] = server["device"][4:]
    for rank, device in enumerate(d for s in table["server_list"] for d in s["device"]):
        device["rank_id"] = str(rank)
    problems, notes = notes_of(table)
    assert problems == []
    assert any("uses 4 of its 8 NPUs" in n and "4, 5, 6, 7" in n for n in notes), notes
    assert_problem(problems_of(table), server=(MASTER, 0), words=("4 devices", "8"))


def test_ranks_in_another_order_are_accepted_with_a_note(table):
    devices = [d for s in table["server_list"] for d in s["device"]]
    for device in devices:
        device["rank_id"] = str(15 - int(device["rank_id"]))
    devices[15]["rank_id"], devices[7]["rank_id"] = devices[7]["rank_id"], devices[15]["rank_id"]
    problems, notes = notes_of(table)
    assert problems == []
    assert any("not numbered in server then device order" in n for n in notes), notes


def test_a_version_hccl_does_not_read(table):
    table["version"] = "2.0"
    assert_problem(problems_of(table, version=None), words=("'2.0'", "HCCL does not read", "1.2"))


def test_ipv6_device_addresses_are_accepted(table):
    for n, device in enumerate(d for s in table["server_list"] for d in s["device"]):
        device["device_ip"] = f"2001:db8::{n + 1:x}"
    assert problems_of(table) == []


def test_an_over_long_server_id(table):
    table["server_list"][1]["server_id"] = "n" * 64
    assert_problem(problems_of(table), words=("64 characters", "63"))


STACK_SERVERS = [StackServer("node0", MASTER, tuple(f"198.51.100.{d + 1}" for d in range(8))),
                 StackServer("node1", WORKER)]
MINDIE = RankTableOptions("mindie", container_ip=True, server_count_range=(2, 60), max_devices_per_server=32)
LMDEPLOY = RankTableOptions("lmdeploy", first_server_is_master=True)


def stack_problems(table, rules=MINDIE, world_size=16, servers=STACK_SERVERS) -> list[str]:
    return [str(p) for p in check_rank_table_for_stack(table, source="brought.json", stack_file="Pulumi.s.yaml",
                                                       servers=servers, world_size=world_size, rules=rules)]


def test_the_stack_accepts_its_own_table(table):
    assert stack_problems(table) == []
    assert stack_problems(table, rules=LMDEPLOY) == []


def test_a_server_that_is_not_a_node(table):
    table["server_list"][1]["server_id"] = "192.0.2.99"
    problems = stack_problems(table)
    assert_problem(problems, words=("192.0.2.99", "not a node of stack Pulumi.s.yaml"))
    assert_problem(problems, words=("node node1 (192.0.2.12)", "not in the table"))


def test_rank_zero_off_the_master(table):
    """MindIE makes the server holding rank 0 its master."""
    first, second = table["server_list"]
    for a, b in zip(first["device"], second["device"], strict=True):
        a["rank_id"], b["rank_id"] = b["rank_id"], a["rank_id"]
    assert validate_rank_table(table, source="t", devices_per_node=8, version="1.0") == []
    assert_problem(stack_problems(table), server=(WORKER, 1), device=0,
                   words=("rank 0", "master is node0 (192.0.2.11)"))


def test_lmdeploy_wants_the_master_listed_first(table):
    table["server_list"].reverse()
    assert_problem(stack_problems(table, rules=LMDEPLOY), words=("first server is 192.0.2.12", "Ray's head"))


def test_a_device_ip_that_is_not_the_declared_one(table):
    table["server_list"][0]["device"][3]["device_ip"] = "198.51.100.99"
    assert_problem(stack_problems(table), server=(MASTER, 0), device=3,
                   words=("198.51.100.99", "declares 198.51.100.4 for node0 device 3"))


def test_ranks_that_are_not_the_plans_world_size(table):
    assert_problem(stack_problems(table, world_size=8), words=("16 ranks", "world size 8"))


def test_mindie_server_limits(table):
    """MindIE-LLM's rank table reader accepts 2 to 60 servers of at most 32 NPUs."""
    single = {**table, "server_list": table["server_list"][:1], "server_count": "1"}
    assert_problem(stack_problems(single, world_size=8, servers=STACK_SERVERS[:1]),
                   words=("1 server,", "mindie accepts 2 to 60"))


def test_a_table_made_by_ascends_tools_is_accepted(table):
    """hccl_tools.py + merge_hccl.py write `host_nic_ip: reserve` and no
    container_ip; with the container_ip runbook 001 adds by hand, MindIE takes it."""
    for server in table["server_list"]:
        server["host_nic_ip"] = "reserve"
    problems, notes = notes_of(table)
    assert problems == [] and notes == []
    assert stack_problems(table) == []


# --------------------------------------------------------------------------
# Version 1.2 (Atlas A3 / SuperPoD)
# --------------------------------------------------------------------------

# CANN's HCCL guide, "rank table配置资源信息 (Atlas A3 训练系列产品/Atlas A3 推理系列产品)"
# (hiascend.com, CANNCommunityEdition 900, hcclug_000066): two super pods of
# two servers of four devices. Its first server, without the optional
# device_port / backup_device_ip / backup_device_port / host_port:
CANN_A3_FIRST_SERVER = {
    "server_id": "node_0",
    "host_ip": "172.16.0.100",
    "device": [
        {"device_id": "0", "super_device_id": "0", "device_ip": "192.168.1.6", "rank_id": "0"},
        {"device_id": "1", "super_device_id": "1", "device_ip": "192.168.1.7", "rank_id": "1"},
        {"device_id": "2", "super_device_id": "2", "device_ip": "192.168.1.8", "rank_id": "2"},
        {"device_id": "3", "super_device_id": "3", "device_ip": "192.168.1.9", "rank_id": "3"},
    ],
}


@pytest.fixture
def a3_table() -> dict:
    servers = []
    for n in range(4):
        servers.append({"server_id": f"172.16.0.{100 + n}",
                        "device_ips": [f"192.168.{n + 1}.{6 + d}" for d in range(4)],
                        # Unique within a super pod: 0..3 on its first server, 4..7 on its second.
                        "super_device_ids": [str(n % 2 * 4 + d) for d in range(4)], "super_pod_id": str(n // 2)})
    return rank_table_for(servers, 4, version="1.2")


def test_a3_table_has_cann_fields_and_order(a3_table):
    first = a3_table["server_list"][0]
    assert set(first) == set(CANN_A3_FIRST_SERVER)
    for ours, cann in zip(first["device"], CANN_A3_FIRST_SERVER["device"], strict=True):
        assert list(ours) == list(cann)  # device_id, super_device_id, device_ip, rank_id
        without_ip = {k: v for k, v in ours.items() if k != "device_ip"}
        assert without_ip == {k: v for k, v in cann.items() if k != "device_ip"}
    assert first["host_ip"] == first["server_id"]
    assert a3_table["version"] == "1.2"
    assert a3_table["super_pod_list"] == [
        {"super_pod_id": "0", "server_list": [{"server_id": "172.16.0.100"}, {"server_id": "172.16.0.101"}]},
        {"super_pod_id": "1", "server_list": [{"server_id": "172.16.0.102"}, {"server_id": "172.16.0.103"}]},
    ]
    assert validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2") == []


def test_a3_same_sdid_in_one_super_pod(a3_table):
    """HCCL: "devices have same superDeviceId[...] in superPod[...]"."""
    a3_table["server_list"][1]["device"][2]["super_device_id"] = "0"
    problems = [str(p) for p in validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2")]
    assert_problem(problems, server=("172.16.0.101", 1), device=2, words=("super_device_id 0", "super pod 0"))


def test_a3_the_same_sdid_in_two_super_pods_is_fine(a3_table):
    # Servers 0 and 2 both use SDIDs 0..3, but in different super pods.
    assert validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2") == []


def test_a3_missing_sdid_and_missing_pod(a3_table):
    del a3_table["server_list"][3]["device"][1]["super_device_id"]
    a3_table["super_pod_list"][1]["server_list"].pop(0)
    problems = [str(p) for p in validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2")]
    assert_problem(problems, server=("172.16.0.103", 3), device=1, words=("super_device_id", "spod-info"))
    assert_problem(problems, server=("172.16.0.102", 2), words=("no super pod",))


def test_a3_without_super_pod_list(a3_table):
    del a3_table["super_pod_list"]
    problems = [str(p) for p in validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2")]
    assert_problem(problems, words=("super_pod_list",))


# --------------------------------------------------------------------------
# Judged as HCCL's reader and each engine's reader judge them (sources in
# ascend_inference/ranktable.py and docs/formats.md §3e)
# --------------------------------------------------------------------------

def engine_rules(stack: str) -> RankTableOptions:
    """The options the engine module really gives (not a copy in the test)."""
    from ascend_inference.stackfile import load_stack

    spec = load_stack(stack).spec
    return spec.engine_plugin.rank_table_options(spec)


@pytest.fixture(scope="module")
def mindie_rules() -> RankTableOptions:
    return engine_rules("tp16-mindie")


@pytest.fixture(scope="module")
def lmdeploy_rules() -> RankTableOptions:
    return engine_rules("tp16-lmdeploy")


@pytest.mark.parametrize("field, text", [("device_id", "²"), ("rank_id", "¹⁵"), ("rank_id", "١٥"),
                                         ("device_id", "٣"), ("rank_id", "1a"), ("rank_id", " 3"),
                                         ("rank_id", "-1"), ("rank_id", "99999999999")])
def test_numbers_hccls_stoull_refuses(table, field, text):
    """str.isdigit() takes "²" and "¹⁵" (int() then raises), int() reads "١٥";
    HCCL's std::stoull reads ASCII digits only, up to 0xFFFFFFFF."""
    table["server_list"][1]["device"][2][field] = text
    problems = problems_of(table)
    assert_problem(problems, server=(WORKER, 1), device=2, words=(f"{field} '{text}'", "ASCII digits"))


def test_digits_with_leading_zeros_are_hccls_numbers(table):
    """stoull reads "08" as 8: HCCL accepts it, so does the check."""
    table["server_list"][1]["device"][0]["rank_id"] = "08"
    assert problems_of(table) == []


def test_mixed_ip_families_are_refused(table):
    """HCCL (config.cc CheckRankIpFamily): "device ip family ... is not same as others"."""
    table["server_list"][1]["device"][4]["device_ip"] = "2001:db8::5"
    assert_problem(problems_of(table), server=(WORKER, 1), device=4,
                   words=("2001:db8::5 is IPv6", "IPv4", "is not same as others"))


def test_mixed_ip_families_on_one_server_are_hccls_business_only_with_several(table):
    """HCCL checks the families only when the table has more than one server."""
    single = {**table, "server_list": table["server_list"][:1], "server_count": "1"}
    single["server_list"][0]["device"][4]["device_ip"] = "2001:db8::5"
    assert problems_of(single, server_count=1) == []


def test_comma_separated_device_ips_are_accepted(table):
    """HCCL splits device_ip on commas (GetSingleDeviceIp -> SplitString)."""
    for n, device in enumerate(d for s in table["server_list"] for d in s["device"]):
        device["device_ip"] += f",198.51.100.{101 + n}"
    assert problems_of(table) == []


def test_comma_separated_device_ips_each_checked(table):
    devices = table["server_list"][1]["device"]
    devices[1]["device_ip"] += ",198.51.100.300"
    problems = problems_of(table)
    assert_problem(problems, server=(WORKER, 1), device=1, words=("'198.51.100.300'", "not an IP address"))
    # GetDeviceList: as many addresses on every device as on the first.
    assert_problem(problems, server=(WORKER, 1), device=1, words=("2 device IPs", "has 1"))
    devices[1]["device_ip"] = f"{devices[1]['device_ip'].split(',')[0]},{devices[0]['device_ip']}"
    assert_problem(problems_of(table), server=(WORKER, 1), device=1, words=("already used",))


def test_missing_server_count_is_hccls_to_count(table):
    """HCCL warns and counts server_list (GetServerList); noted, not refused."""
    del table["server_count"]
    problems, notes = notes_of(table)
    assert problems == []
    assert any("no server_count" in n and "MindIE requires it" in n for n in notes), notes


def test_missing_server_count_refused_for_mindie_only(table, mindie_rules, lmdeploy_rules):
    """MindIE-LLM's ReadRanktableData reads server_count itself; LMDeploy never reads it."""
    del table["server_count"]
    assert_problem(stack_problems(table, rules=mindie_rules), words=("server_count: missing", "mindie", '"2"'))
    assert stack_problems(table, rules=lmdeploy_rules) == []


def test_version_as_a_json_number_is_named_as_such(table):
    table["version"] = 1.0
    problems = problems_of(table)
    assert_problem(problems, words=("version: is the JSON number 1.0", "only as a string", '"version": "1.0"'))
    assert not any("missing" in p for p in problems), problems


def test_server_id_as_a_json_number_is_named_as_such(table):
    table["server_list"][1]["server_id"] = 12
    problems = problems_of(table)
    assert_problem(problems, words=("server_list[1].server_id: is the JSON number 12", '"server_id": "12"'))
    assert not any("missing" in p for p in problems), problems


def test_null_rank_id_is_named_as_null(table):
    table["server_list"][0]["device"][1]["rank_id"] = None
    assert_problem(problems_of(table), server=(MASTER, 0), device=1, words=("rank_id is null",))


def test_a_wrong_container_ip_when_the_stack_declares_none(table, mindie_rules):
    """MindIE-LLM (InitFromJson) finds its own server by container_ip ==
    MIES_CONTAINER_IP, which is the node's address when the stack declares
    no container_ip: node1 would find no entry."""
    assert STACK_SERVERS[1].container_ip is None
    table["server_list"][1]["container_ip"] = "192.0.2.99"
    assert_problem(stack_problems(table, rules=mindie_rules), server=(WORKER, 1),
                   words=("container_ip 192.0.2.99", "looks itself up by 192.0.2.12", "no entry"))


def test_a_declared_container_ip_is_what_mindie_looks_up(table, mindie_rules):
    servers = [STACK_SERVERS[0], StackServer("node1", WORKER, container_ip="172.17.0.2")]
    assert_problem(stack_problems(table, rules=mindie_rules, servers=servers), server=(WORKER, 1),
                   words=("container_ip 192.0.2.12", "looks itself up by 172.17.0.2", "its container_ip"))
    table["server_list"][1]["container_ip"] = "172.17.0.2"
    assert stack_problems(table, rules=mindie_rules, servers=servers) == []


def test_mindie_reads_one_device_ip(table, mindie_rules, lmdeploy_rules):
    """MindIE-LLM's CheckParam -> CheckIp: one address, not 0.0.0.0; LMDeploy passes device_ip on to HCCL."""
    for n, device in enumerate(d for s in table["server_list"] for d in s["device"]):
        device["device_ip"] += f",198.51.100.{101 + n}"
    assert_problem(stack_problems(table, rules=mindie_rules), server=(MASTER, 0), device=0,
                   words=("has 2 addresses", "mindie reads it as one address"))
    assert stack_problems(table, rules=lmdeploy_rules) == []
    table["server_list"][0]["device"][0]["device_ip"] = "0.0.0.0"
    assert_problem(stack_problems(table, rules=mindie_rules), server=(MASTER, 0), device=0,
                   words=("0.0.0.0", "refuses"))


def test_mindie_finds_its_master_by_the_text_0(table, mindie_rules, lmdeploy_rules):
    """HCCL reads "00" as rank 0; MindIE-LLM's FillServerEle compares with "0"."""
    table["server_list"][0]["device"][0]["rank_id"] = "00"
    assert problems_of(table) == []
    assert_problem(stack_problems(table, rules=mindie_rules), server=(MASTER, 0), device=0,
                   words=("'00'", 'text "0"'))
    assert stack_problems(table, rules=lmdeploy_rules) == []


def test_mindie_wants_as_many_devices_on_every_server(table, mindie_rules):
    table["server_list"][1]["device"].pop()
    assert_problem(stack_problems(table, rules=mindie_rules, world_size=15), server=(WORKER, 1),
                   words=("7 devices", "lists 8", "as many on every server"))


def test_mindie_rank_ids_stop_at_511(mindie_rules):
    """CheckRankId: 0..511. 33 servers of 16 NPUs have ranks up to 527."""
    servers = [{"server_id": f"10.0.{n}.1", "device_ips": [f"10.1.{n}.{d + 1}" for d in range(16)]}
               for n in range(33)]
    big = rank_table_for(servers, 16, version="1.0", with_container_ip=True)
    stack = [StackServer(f"node{n}", s["server_id"]) for n, s in enumerate(servers)]
    problems = stack_problems(big, rules=mindie_rules, world_size=33 * 16, servers=stack)
    assert_problem(problems, server=("10.0.32.1", 32), device=0, words=("rank_id 512", "0..511"))
    assert not any("rank_id 511" in p for p in problems), problems


def test_lmdeploy_gives_rank_k_to_the_kth_device_listed(table, lmdeploy_rules, mindie_rules):
    """ray_executor.py: worker k sits on the server of the k-th device listed
    and joins HCCL as rank k; a rank on another server's place breaks it.
    Within one server any order works (the worker opens its device's place)."""
    first, second = table["server_list"]
    first["device"][3]["rank_id"], second["device"][4]["rank_id"] = "12", "3"
    assert problems_of(table) == []  # HCCL accepts any order
    assert_problem(stack_problems(table, rules=lmdeploy_rules), server=(MASTER, 0), device=3,
                   words=("rank_id 12", "server then device order"))
    assert stack_problems(table, rules=mindie_rules) == []
    first["device"][3]["rank_id"], second["device"][4]["rank_id"] = "3", "12"
    first["device"][1]["rank_id"], first["device"][2]["rank_id"] = "2", "1"
    assert stack_problems(table, rules=lmdeploy_rules) == []


def test_lmdeploy_opens_the_npu_at_the_devices_place(table, lmdeploy_rules, mindie_rules):
    """HCCL reads device_id in any order; LMDeploy opens NPU <place in the list>."""
    devices = table["server_list"][1]["device"]
    devices[0]["device_id"], devices[1]["device_id"] = "1", "0"
    assert problems_of(table) == []
    assert_problem(stack_problems(table, rules=lmdeploy_rules), server=(WORKER, 1),
                   words=("device_id '1' is listed at place 0", "lmdeploy opens"))
    assert stack_problems(table, rules=mindie_rules) == []


# Rank table 1.2: HCCL's GetSingleSuperPod / GetSingleSuperPodSever / CheckSuperPodInfo.



# --- table shapes HCCL cannot read, each named where it is (issue 24: branch coverage) -------------

def _set(path: tuple, value):
    def change(table):
        target = table
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop(path: tuple):
    def change(table):
        target = table
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


BROKEN_SHAPES = [
    ("empty server_list", _set(("server_list",), []),
     "server_list: is a list, but it must be a non-empty list of servers"),
    ("a server that is no object", _set(("server_list", 1), "192.0.2.12"),
     "server_list[1]: is '192.0.2.12', but each server is an object with server_id and device"),
    ("a server without server_id", _drop(("server_list", 1, "server_id")),
     "server_list[1].server_id: missing (fix: set it to the node's IP)"),
    ("a server without devices", _set(("server_list", 1, "device"), []),
     "server_list[1].device: server 192.0.2.12 has no devices"),
    ("a server with more devices than NPUs",
     lambda t: t["server_list"][1]["device"].append(dict(t["server_list"][1]["device"][0])),
     "server_list[1].device: server 192.0.2.12 lists 9 devices but the node has 8"),
    ("a device that is no object", _set(("server_list", 1, "device", 2), "0"),
     "server_list[1].device[2]: server 192.0.2.12 device 2 is '0', but each device is an object"),
    ("a device without device_ip", _drop(("server_list", 1, "device", 2, "device_ip")),
     "server_list[1].device[2].device_ip: server 192.0.2.12 device 2: missing"),
    ("a rank_id that is no number", _set(("server_list", 1, "device", 2, "rank_id"), "ten"),
     "server_list[1].device[2].rank_id: server 192.0.2.12 device 2: rank_id 'ten' is not a number"),
]


@pytest.mark.parametrize(("what", "change", "problem"), BROKEN_SHAPES, ids=[c[0] for c in BROKEN_SHAPES])
def test_a_broken_table_shape_is_named(table, what, change, problem):
    change(table)
    assert any(p.startswith(f"rank_table.json: {problem}") for p in problems_of(table)), problems_of(table)


def test_a_table_without_any_rank_id_checks_no_rank_numbering(table):
    for server in table["server_list"]:
        for device in server["device"]:
            del device["rank_id"]
    problems = problems_of(table)
    assert len(problems) == 16 and all(".rank_id: " in p and p.endswith(': missing (fix: add "rank_id")')
                                       for p in problems), problems


def test_a_version_hccl_reads_but_not_this_chip_generation(table):
    assert problems_of(table, version="1.2") == [
        "rank_table.json: version: is '1.0' but this chip generation reads version '1.2' "
        "(fix: set \"version\": \"1.2\")"]


def a3_problems(a3_table) -> list[str]:
    return [str(p) for p in validate_rank_table(a3_table, source="a3", devices_per_node=4, version="1.2")]


def test_a3_super_pod_server_missing_from_server_list(a3_table):
    a3_table["super_pod_list"][1]["server_list"].append({"server_id": "172.16.0.199"})
    assert_problem(a3_problems(a3_table), words=("super_pod_list[1].server_list[2].server_id",
                                                 "172.16.0.199 is not in server_list"))


def test_a3_two_super_pods_with_one_id(a3_table):
    a3_table["super_pod_list"][1]["super_pod_id"] = "0"
    assert_problem(a3_problems(a3_table), words=("super_pod_list[1].super_pod_id", "listed twice",
                                                 "super_pod_list[0]"))


def test_a3_empty_super_pod_id(a3_table):
    a3_table["super_pod_list"][0]["super_pod_id"] = ""
    problems = a3_problems(a3_table)
    assert_problem(problems, words=("super_pod_list[0].super_pod_id", "is empty"))
    # Its servers are not reported again as in no super pod.
    assert not any("in no super pod" in p for p in problems), problems


def test_a3_a_server_listed_twice_in_one_pod_is_accepted(a3_table):
    """HCCL looks each member up in server_list and sets the pod again: harmless."""
    a3_table["super_pod_list"][0]["server_list"].append({"server_id": "172.16.0.100"})
    assert a3_problems(a3_table) == []


def test_a3_a_server_in_two_pods_is_refused(a3_table):
    """HCCL would silently keep the last pod; the table contradicts itself."""
    a3_table["super_pod_list"][1]["server_list"].append({"server_id": "172.16.0.100"})
    assert_problem(a3_problems(a3_table), words=("172.16.0.100 is in super pod 0", "and in 1"))


def test_a3_unhashable_member_is_a_clean_refusal(a3_table):
    a3_table["super_pod_list"][0]["server_list"][0] = {"server_id": ["172.16.0.100"]}
    assert_problem(a3_problems(a3_table), words=("super_pod_list[0].server_list[0].server_id", "a list"))


def test_a3_super_device_id_in_superscript(a3_table):
    a3_table["server_list"][0]["device"][1]["super_device_id"] = "¹"
    assert_problem(a3_problems(a3_table), server=("172.16.0.100", 0), device=1,
                   words=("super_device_id", "ASCII digits"))


def test_a3_a_super_pod_entry_without_id_or_servers(a3_table):
    a3_table["super_pod_list"][1] = {"server_list": [{"server_id": "172.16.0.102"}]}
    problems = a3_problems(a3_table)
    assert "a3: super_pod_list[1].super_pod_id: missing (fix: use the Super Pod ID `npu-smi info -t spod-info` " \
           "prints)" in problems


def test_a3_a_server_in_two_super_pods(a3_table):
    a3_table["super_pod_list"][1]["server_list"].append({"server_id": "172.16.0.100"})
    assert ("a3: super_pod_list[1].server_list[2].server_id: server 172.16.0.100 is in super pod 0 "
            "(super_pod_list[0]) and in 1; HCCL would silently keep it in the last (fix: put each server in one "
            "super pod)") in a3_problems(a3_table)


def test_a3_a_host_ip_that_is_no_address(a3_table):
    a3_table["server_list"][2]["host_ip"] = "node2"
    assert a3_problems(a3_table) == ["a3: server_list[2].host_ip: server 172.16.0.102: host_ip 'node2' is not an "
                                     "IP address (fix: use the node's address, or drop host_ip)"]


def test_a3_servers_and_devices_that_are_no_objects_are_named_once(a3_table):
    a3_table["server_list"][3]["device"][1] = "1"
    a3_table["server_list"].append("172.16.0.104")
    problems = a3_problems(a3_table)
    assert any(p.startswith("a3: server_list[3].device[1]: server 172.16.0.103 device 1 is '1', but each device is "
                            "an object") for p in problems), problems
    assert any(p.startswith("a3: server_list[4]: is '172.16.0.104', but each server is an object") for p in problems)
    assert not any("super_device_id" in p or "super pod" in p for p in problems)


# Found by mutation testing (tools/mutation.py, docs/testing.md): a message
# names a device by its device_id, not by its place in the list; and device
# counts are compared by value, also above 256 (CPython keeps one object of
# each small int only, so an identity test passes below that).

def test_a_device_is_named_by_its_device_id_not_its_place(table):
    devices = table["server_list"][1]["device"]
    devices[0], devices[3] = devices[3], devices[0]
    devices[0]["device_ip"] = "not-an-ip"
    problems = problems_of(table)
    assert problems == [f"rank_table.json: server_list[1].device[0].device_ip: server {WORKER} device 3: "
                        "'not-an-ip' is not an IP address (fix: use the address `hccn_tool -i N -ip -g` prints)"]


def test_as_many_devices_on_every_server_is_compared_by_count_above_256_too():
    servers = [{"server_id": f"10.0.0.{i + 1}",
                "device_ips": [str(ipaddress.IPv4Address(f"172.{16 + i}.0.1") + d) for d in range(300)]}
               for i in range(2)]
    big = rank_table_for(servers, 300, version="1.0")
    rules = RankTableOptions("an engine", same_devices_per_server=True)
    stack = [StackServer(f"node{i}", s["server_id"]) for i, s in enumerate(servers)]
    assert stack_problems(big, rules=rules, world_size=600, servers=stack) == []
    big["server_list"][1]["device"].pop()
    assert stack_problems(big, rules=rules, world_size=599, servers=stack) == [
        "brought.json: server_list[1].device: server 10.0.0.2 lists 299 devices but server 10.0.0.1 lists 300; "
        "an engine requires as many on every server (fix: list the same number of NPUs on every server)"]


def test_control_characters_in_a_message_are_escaped_by_their_code():
    assert one_line("a\tb\x85c\u2028d") == "a\\x09b\\x85c\\u2028d"


@pytest.mark.parametrize("text, parts", [("a,", ["a"]), ("a,b,", ["a", "b"]), (",a", ["", "a"]), ("a", ["a"])])
def test_device_ip_is_split_as_hccl_splits_it(text, parts):
    assert split_device_ip(text) == parts


def test_a_missing_version_is_fixed_with_the_chips_version(a3_table):
    del a3_table["version"]
    assert a3_problems(a3_table)[0] == ("a3: version: missing; without it HCCL reads the table in its older "
                                        "'Standard' format (fix: add \"version\": \"1.2\")")


def test_a_server_without_devices_is_told_so(table):
    del table["server_list"][1]["device"]
    assert problems_of(table) == [f"rank_table.json: server_list[1].device: server {WORKER} has no devices (fix: "
                                  "list the server's NPUs: \"device\": [{\"device_id\": \"0\", \"device_ip\": ..., "
                                  "\"rank_id\": ...}, ...])"]


def test_a_rank_beyond_the_table_names_the_ranks_to_use(table):
    table["server_list"][1]["device"][7]["rank_id"] = "16"
    assert problems_of(table) == [f"rank_table.json: rank_id: server {WORKER} device 7: rank_id '16' is beyond the 16 "
                                  "ranks of the table (rank 15 is unused) (fix: number the ranks 0..15)"]


def test_a3_a_super_pod_list_that_is_a_string(a3_table):
    a3_table["super_pod_list"] = "0"
    assert a3_problems(a3_table) == ["a3: super_pod_list: is '0', but it must be a non-empty list of super pods "
                                     "(fix: add \"super_pod_list\": [{\"super_pod_id\": \"0\", \"server_list\": "
                                     "[{\"server_id\": ...}]}])"]


def test_a3_a_super_pod_entry_that_is_no_object_does_not_stop_the_next(a3_table):
    a3_table["super_pod_list"].insert(0, "0")
    a3_table["server_list"][1]["device"][1]["super_device_id"] = "4"  # as device 0's: still found
    assert a3_problems(a3_table) == ["a3: super_pod_list[0]: is '0', but each super pod is an object with "
                                     "super_pod_id and server_list (fix: write {\"super_pod_id\": \"0\", "
                                     "\"server_list\": [{\"server_id\": ...}]})",
                                     "a3: server_list[1].device[1].super_device_id: server 172.16.0.101 device 1 has "
                                     "super_device_id 4, already used by server 172.16.0.101 device 0 in super pod 0 "
                                     "(fix: re-read the SDIDs with `npu-smi info -t spod-info`)"]


def test_a3_an_unknown_member_does_not_stop_the_pods_next_members(a3_table):
    a3_table["super_pod_list"][0]["server_list"].insert(0, {"server_id": "172.16.0.199"})
    a3_table["server_list"][1]["device"][1]["super_device_id"] = "4"  # as device 0's: still found
    problems = a3_problems(a3_table)
    assert len(problems) == 2 and "super_pod_list[0].server_list[0].server_id: server 172.16.0.199" in problems[0]
    assert "server 172.16.0.101 device 1 has super_device_id 4, already used by" in problems[1]


def test_a3_a_server_in_two_super_pods_names_the_first_pods_id_and_place(a3_table):
    pods = a3_table["super_pod_list"]
    pods[0]["super_pod_id"], pods[1]["super_pod_id"] = "9", "7"
    pods[1]["server_list"].append({"server_id": "172.16.0.100"})
    assert ("a3: super_pod_list[1].server_list[2].server_id: server 172.16.0.100 is in super pod 9 "
            "(super_pod_list[0]) and in 7; HCCL would silently keep it in the last (fix: put each server in one "
            "super pod)") in a3_problems(a3_table)


def test_a3_a_server_that_is_no_object_does_not_stop_the_sdid_check_of_the_next(a3_table):
    a3_table["server_list"].insert(1, "172.16.0.104")
    a3_table["server_list"][4]["device"][0]["super_device_id"] = "5"
    problems = a3_problems(a3_table)
    assert any("server 172.16.0.103 device 1 has super_device_id 5, already used by server 172.16.0.103 device 0"
               in p for p in problems), problems


def test_a_rank_on_the_next_servers_first_place_is_refused_where_ranks_follow_the_listing(table):
    rules = RankTableOptions("vllm", ranks_follow_the_listing=True)
    first, second = table["server_list"][0]["device"][7], table["server_list"][1]["device"][0]
    first["rank_id"], second["rank_id"] = second["rank_id"], first["rank_id"]
    problems = stack_problems(table, rules=rules)
    assert [p.split(": ")[1] for p in problems] == ["server_list[0].device[7].rank_id",
                                                    "server_list[1].device[0].rank_id"], problems


def test_a_declared_device_ip_that_sorts_above_the_tables_is_still_compared(table):
    table["server_list"][0]["device"][4]["device_ip"] = "198.51.100.10"  # declared: 198.51.100.5
    assert stack_problems(table) == [
        f"brought.json: server_list[0].device[4].device_ip: server {MASTER} device 4 has device_ip 198.51.100.10, "
        "but stack Pulumi.s.yaml declares 198.51.100.5 for node0 device 4 (fix: use the address `hccn_tool -i N "
        "-ip -g` prints on that node, in both places)"]


def test_the_first_server_is_compared_with_the_master_by_value_and_whichever_sorts_first(table):
    read = json.loads(json.dumps(table))  # a brought table's strings are other objects than the stack's
    assert stack_problems(read, rules=LMDEPLOY) == []
    stack = [StackServer("node0", WORKER), StackServer("node1", MASTER)]  # the master sorts above the first server
    assert stack_problems(read, rules=LMDEPLOY, servers=stack) == [
        f"brought.json: server_list[0].device[0].rank_id: rank 0 is server {MASTER} device 0, but the stack's master "
        f"is node0 ({WORKER}); lmdeploy makes the server holding rank 0 its master (fix: give rank_id 0 to a device "
        f"of {WORKER})",
        f"brought.json: server_list[0].server_id: the first server is {MASTER}, but lmdeploy requires the first "
        f"server to be Ray's head, the stack's master node0 ({WORKER}) (fix: list the master first)"]


def test_a_server_count_outside_the_engines_range_is_counted_in_the_plural(table):
    rules = RankTableOptions("an engine", server_count_range=(1, 1))
    assert stack_problems(table, rules=rules) == [
        "brought.json: server_count: 2 servers, but an engine accepts 1 to 1 in one rank table (fix: use 1 to 1 "
        "servers)"]


# Found by mutation testing of lines 1-300 (tools/mutation.py --lines 1-300,
# docs/testing.md): each test below fails with the mutant it names applied.

@pytest.mark.parametrize("text, number", [
    ("4294967295", 0xFFFFFFFF),     # the largest: `<= MAX` -> `<`, `!=`; 10 digits -> `< 10`, `<= 9`; MAX - 1
    ("4294967296", None),           # one above: `<= MAX` -> `is not`; MAX + 1
    ("0004294967295", 0xFFFFFFFF),  # leading zeros do not count as digits
    ("99999999999", None),          # 11 digits
])
def test_hccl_reads_numbers_up_to_0xffffffff(text, number):
    assert hccl_number(text) == number


def test_a_message_is_cut_after_400_characters_not_at_them():
    assert one_line("x" * 400) == "x" * 400
    assert one_line("x" * 401) == "x" * 400 + "..."


def test_a_json_number_of_more_than_199_bits_is_shown_as_long():
    assert json_kind(2**198) == f"the JSON number {2**198}"  # 199 bits
    assert json_kind(2**199) == "the JSON number (long)"     # 200 bits
    assert json_kind(2**200) == "the JSON number (long)"     # 201 bits


def test_the_canonical_text_is_indented_by_four_and_keeps_non_ascii():
    assert rank_table_json({"server_id": ["nœud"]}) == '{\n    "server_id": [\n        "nœud"\n    ]\n}\n'


def test_an_empty_device_ip_is_no_address():
    assert split_device_ip("") == []


def test_a_1_0_table_has_no_host_ip_nor_super_pod_fields():
    servers = make_servers(2, 2)
    built = rank_table_for(servers, 2, version="1.0")
    assert [sorted(s) for s in built["server_list"]] == [["device", "server_id"]] * 2
    assert sorted(built) == ["server_count", "server_list", "status", "version"]
    assert {k for s in built["server_list"] for d in s["device"] for k in d} == {"device_id", "device_ip", "rank_id"}


def test_more_servers_than_the_stack_has_nodes_is_refused(table):
    assert problems_of(table, server_count=1) == [
        "rank_table.json: server_list: has 2 servers but the stack has 1 nodes (fix: list every node once, master "
        "first)"]


def test_server_counts_are_compared_by_value_above_256_too():
    servers = [{"server_id": f"10.0.{i // 250}.{i % 250 + 1}", "device_ips": [f"172.16.{i // 250}.{i % 250 + 1}"]}
               for i in range(300)]
    big = rank_table_for(servers, 1, version="1.0")
    assert validate_rank_table(big, source="big.json", devices_per_node=1, version="1.0", server_count=300) == []


def test_a_boolean_server_id_is_fixed_as_a_string_not_as_a_number(table):
    table["server_list"][1]["server_id"] = True
    assert problems_of(table)[0] == ("rank_table.json: server_list[1].server_id: is the JSON boolean true, but HCCL "
                                     "reads server_id only as a string (fix: write \"server_id\" as a JSON string)")


def test_a_server_with_an_empty_server_id_is_named_by_its_place(table):
    table["server_list"][1]["server_id"] = ""
    del table["server_list"][1]["container_ip"]
    assert problems_of(table)[:2] == [
        "rank_table.json: server_list[1].server_id: is empty (fix: set it to the node's IP)",
        "rank_table.json: server_list[1].container_ip: server_list[1] has no container_ip, which MindIE's service "
        "needs (fix: add \"container_ip\" (the server's IP unless the container has its own))"]


def test_a_server_that_is_no_object_does_not_stop_the_checks_of_the_next(table):
    table["server_list"].insert(0, "192.0.2.10")
    table["server_count"] = "3"
    table["server_list"][2]["device"][3]["device_ip"] = "not-an-ip"
    assert problems_of(table, server_count=3) == [
        "rank_table.json: server_list[0]: is '192.0.2.10', but each server is an object with server_id and device "
        "(fix: write {\"server_id\": \"<node IP>\", \"device\": [...]})",
        f"rank_table.json: server_list[2].device[3].device_ip: server {WORKER} device 3: 'not-an-ip' is not an IP "
        "address (fix: use the address `hccn_tool -i N -ip -g` prints)"]


def test_a_server_id_of_63_characters_is_accepted_and_of_64_named_by_its_first_20(table):
    table["server_list"][1]["server_id"] = "n" * 63
    assert problems_of(table) == []
    table["server_list"][1]["server_id"] = "abcdefghijklmnopqrstuvwxyz" + "n" * 38
    assert problems_of(table)[0] == ("rank_table.json: server_list[1].server_id: server abcdefghijklmnopqrst... is "
                                     "64 characters; HCCL allows 63 (fix: use the node's IP)")


# Found by mutation testing of lines 301-550 (tools/mutation.py --lines 301-550).

def test_a_server_without_devices_does_not_stop_the_checks_of_the_next(table):
    table["server_list"][0]["device"] = []
    table["server_list"][1]["device"][3]["device_ip"] = "not-an-ip"
    problems = problems_of(table)
    assert problems[0].startswith(f"rank_table.json: server_list[0].device: server {MASTER} has no devices")
    assert (f"rank_table.json: server_list[1].device[3].device_ip: server {WORKER} device 3: 'not-an-ip' is not an "
            "IP address (fix: use the address `hccn_tool -i N -ip -g` prints)") in problems


def test_an_ipv4_host_ip_after_an_ipv6_one_is_refused(a3_table):
    a3_table["server_list"][0]["host_ip"] = "2001:db8::100"
    problems = a3_problems(a3_table)
    assert len(problems) == 3 and all("is IPv4 but server 172.16.0.100's is IPv6" in p for p in problems), problems


def test_fewer_device_ips_than_the_first_device_has_are_refused(table):
    for device in (d for s in table["server_list"] for d in s["device"]):
        device["device_ip"] += "," + device["device_ip"].replace("198.51.100.", "198.51.101.")
    assert problems_of(table) == []
    table["server_list"][1]["device"][2]["device_ip"] = "198.51.100.19"
    assert problems_of(table) == [
        f"rank_table.json: server_list[1].device[2].device_ip: server {WORKER} device 2 has 1 device IP but server "
        f"{MASTER} device 0 has 2; HCCL wants as many on every device (fix: give every device the same number of "
        "comma-separated addresses)"]


def test_a_bad_address_among_several_is_shown_with_its_device_ip_and_the_next_still_checked(table):
    for device in (d for s in table["server_list"] for d in s["device"]):
        device["device_ip"] += "," + device["device_ip"].replace("198.51.100.", "198.51.101.")
    table["server_list"][1]["device"][2]["device_ip"] = "bad,198.51.100.1"  # the second: device 0's of the master
    assert problems_of(table) == [
        f"rank_table.json: server_list[1].device[2].device_ip: server {WORKER} device 2: 'bad' (in "
        "'bad,198.51.100.1') is not an IP address (fix: use the address `hccn_tool -i N -ip -g` prints; separate "
        "several with commas, without spaces)",
        f"rank_table.json: server_list[1].device[2].device_ip: server {WORKER} device 2 has device IP 198.51.100.1, "
        f"already used by server {MASTER} device 0 (fix: every NPU has its own IP; re-read them with `hccn_tool -i N "
        "-ip -g`)"]


def test_a3_a_super_pod_id_of_63_characters_is_accepted_and_of_64_refused(a3_table):
    a3_table["super_pod_list"][1]["super_pod_id"] = "p" * 63
    assert a3_problems(a3_table) == []
    a3_table["super_pod_list"][1]["super_pod_id"] = "p" * 64
    assert a3_problems(a3_table) == ["a3: super_pod_list[1].super_pod_id: is 64 characters; HCCL allows 63 (fix: use "
                                     "the Super Pod ID `npu-smi info -t spod-info` prints)"]


def test_a3_a_member_without_a_string_server_id_does_not_stop_the_pods_next_members(a3_table):
    a3_table["super_pod_list"][0]["server_list"].insert(0, {"server_id": 5})
    a3_table["server_list"][1]["device"][1]["super_device_id"] = "4"  # as device 0's: still found
    problems = a3_problems(a3_table)
    assert len(problems) == 2 and "super_pod_list[0].server_list[0].server_id: is the JSON number 5" in problems[0]
    assert "server 172.16.0.101 device 1 has super_device_id 4, already used by" in problems[1]


def test_a3_a_device_that_is_no_object_does_not_stop_the_sdid_check_of_the_next(a3_table):
    a3_table["server_list"][1]["device"][0] = "0"
    a3_table["server_list"][1]["device"][2]["super_device_id"] = "5"  # as device 1's: still found
    problems = a3_problems(a3_table)
    assert ("a3: server_list[1].device[2].super_device_id: server 172.16.0.101 device 2 has super_device_id 5, "
            "already used by server 172.16.0.101 device 1 in super pod 0 (fix: re-read the SDIDs with `npu-smi info "
            "-t spod-info`)") in problems, problems


def test_an_ipv6_host_ip_after_an_ipv4_one_is_refused(a3_table):
    a3_table["server_list"][1]["host_ip"] = "2001:db8::101"
    assert a3_problems(a3_table) == [
        "a3: server_list[1].host_ip: server 172.16.0.101: host_ip 2001:db8::101 is IPv6 but server 172.16.0.100's is "
        "IPv4; HCCL refuses mixed families (fix: give every server a host_ip of the same family)"]


def test_a_device_that_is_no_object_does_not_stop_the_checks_of_the_servers_next_devices(table):
    table["server_list"][1]["device"][0] = "0"
    table["server_list"][1]["device"][3]["device_ip"] = "not-an-ip"
    problems = problems_of(table)
    assert problems[0].startswith(f"rank_table.json: server_list[1].device[0]: server {WORKER} device 0 is '0', but "
                                  "each device is an object")
    assert (f"rank_table.json: server_list[1].device[3].device_ip: server {WORKER} device 3: 'not-an-ip' is not an "
            "IP address (fix: use the address `hccn_tool -i N -ip -g` prints)") in problems


@pytest.mark.parametrize("device_id", ["8", "9"])
def test_a_device_id_at_or_beyond_the_nodes_npus_is_refused(table, device_id):
    table["server_list"][1]["device"][7]["device_id"] = device_id
    assert problems_of(table) == [
        f"rank_table.json: server_list[1].device[7].device_id: server {WORKER} device 7: device_id '{device_id}' "
        "is not an NPU of the server (0..7) (fix: device_id is the NPU's number on its server, as `npu-smi info` "
        "lists it)"]


def test_a3_a_super_pod_without_servers_or_with_a_text_for_them(a3_table):
    del a3_table["super_pod_list"][1]["server_list"]
    assert a3_problems(a3_table)[0] == (
        "a3: super_pod_list[1].server_list: super pod 1 lists no servers (fix: list the pod's servers: "
        "\"server_list\": [{\"server_id\": ...}, ...])")
    a3_table["super_pod_list"][1]["server_list"] = "172.16.0.102"
    assert a3_problems(a3_table)[0] == (
        "a3: super_pod_list[1].server_list: is '172.16.0.102', but it must be a list of {\"server_id\": ...} (fix: "
        "list the pod's servers: \"server_list\": [{\"server_id\": ...}, ...])")


def test_ipv4_device_ips_after_an_ipv6_one_are_refused(table):
    table["server_list"][0]["device"][0]["device_ip"] = "2001:db8::1"
    problems = problems_of(table)
    assert len(problems) == 15 and problems[0] == (
        f"rank_table.json: server_list[0].device[1].device_ip: server {MASTER} device 1: device IP 198.51.100.2 is "
        f"IPv4 but server {MASTER} device 0's is IPv6; HCCL refuses a table of several servers whose device IPs mix "
        "families (\"device ip family ... is not same as others\") (fix: use the NPUs' addresses of one family "
        "(`hccn_tool -i N -ip -g`, or -inet6))"), problems


def test_a_device_entry_that_is_no_list_is_named_as_such(table):
    table["server_list"][1]["device"] = "0"
    assert problems_of(table)[0] == (
        f"rank_table.json: server_list[1].device: server {WORKER}: device is '0', not a list of devices (fix: list "
        "the server's NPUs: \"device\": [{\"device_id\": \"0\", \"device_ip\": ..., \"rank_id\": ...}, ...])")


def test_an_empty_device_ip_of_a_single_server_counts_as_one_address():
    single = rank_table_for([{"server_id": MASTER, "device_ips": ["", "198.51.100.2"]}], 2, version="1.0")
    assert validate_rank_table(single, source="t", devices_per_node=2, version="1.0", server_count=1) == []


@pytest.mark.parametrize("rank_id", ["16", "17"])
def test_every_rank_at_or_beyond_the_tables_is_refused(table, rank_id):
    table["server_list"][1]["device"][7]["rank_id"] = rank_id
    assert problems_of(table) == [f"rank_table.json: rank_id: server {WORKER} device 7: rank_id '{rank_id}' is beyond "
                                  "the 16 ranks of the table (rank 15 is unused) (fix: number the ranks 0..15)"]


@pytest.mark.parametrize("server_list", [None, []])
def test_a3_a_super_pod_without_servers_is_named_by_its_id_and_the_next_pod_still_checked(a3_table, server_list):
    pods = a3_table["super_pod_list"]
    pods[0]["super_pod_id"] = "7"
    pods[0]["server_list"] = server_list
    pods[1]["server_list"].append({"server_id": "172.16.0.199"})
    assert a3_problems(a3_table)[:2] == [
        "a3: super_pod_list[0].server_list: super pod 7 lists no servers (fix: list the pod's servers: "
        "\"server_list\": [{\"server_id\": ...}, ...])",
        "a3: super_pod_list[1].server_list[2].server_id: server 172.16.0.199 is not in server_list; HCCL refuses it "
        "(\"server_id ... is not found in server_list\") (fix: list the server in server_list too, or drop it from "
        "the super pod)"]


def test_a3_the_members_of_a_pod_with_a_refused_id_are_still_looked_up(a3_table):
    pods = a3_table["super_pod_list"]
    pods[0]["super_pod_id"] = ""
    pods[0]["server_list"].append({"server_id": "172.16.0.199"})
    assert a3_problems(a3_table) == [
        "a3: super_pod_list[0].super_pod_id: is empty; HCCL refuses an empty super_pod_id (fix: use the Super Pod ID "
        "`npu-smi info -t spod-info` prints)",
        "a3: super_pod_list[0].server_list[2].server_id: server 172.16.0.199 is not in server_list; HCCL refuses it "
        "(\"server_id ... is not found in server_list\") (fix: list the server in server_list too, or drop it from "
        "the super pod)"]


def test_a3_a_missing_super_device_id_and_one_that_is_a_number(a3_table):
    del a3_table["server_list"][0]["device"][1]["super_device_id"]
    a3_table["server_list"][0]["device"][2]["super_device_id"] = 2
    assert a3_problems(a3_table) == [
        "a3: server_list[0].device[1].super_device_id: server 172.16.0.100 device 1: version 1.2 needs "
        "super_device_id as a string of ASCII digits (fix: use the SDID `npu-smi info -t spod-info -i NPU -c CHIP` "
        "prints)",
        "a3: server_list[0].device[2].super_device_id: server 172.16.0.100 device 2: version 1.2 needs "
        "super_device_id as a string of ASCII digits, not the JSON number 2 (fix: use the SDID `npu-smi info -t "
        "spod-info -i NPU -c CHIP` prints)"]


def test_devices_and_addresses_are_counted_by_value_above_256_too():
    """CPython keeps one object of each small int only: an identity test passes below 257."""
    many = rank_table_for([{"server_id": MASTER, "device_ips": [str(ipaddress.IPv4Address("172.16.0.1") + d)
                                                                for d in range(300)]}], 300, version="1.0")
    assert validate_rank_table(many, source="t", devices_per_node=300, version="1.0", server_count=1) == []
    addresses = [",".join(str(ipaddress.IPv4Address(f"172.{16 + d}.0.1") + a) for a in range(300)) for d in range(2)]
    several = rank_table_for([{"server_id": MASTER, "device_ips": addresses}], 2, version="1.0")
    assert validate_rank_table(several, source="t", devices_per_node=2, version="1.0", server_count=1) == []


# Found by mutation testing of lines 551-733 (tools/mutation.py --lines 551-733).

def test_the_rules_of_an_engine_that_names_none_require_neither_container_ip_nor_as_many_devices(table):
    # brought_table.py passes `container_ip` to validate_rank_table as require_container_ip.
    assert RankTableOptions().container_ip is False
    table["server_list"][1]["device"].pop()
    assert stack_problems(table, rules=RankTableOptions(), world_size=15) == []


def test_fewer_ranks_than_the_world_size_are_refused(table):
    assert stack_problems(table, world_size=32) == [
        "brought.json: server_list: the table has 16 ranks but the stack's plan has world size 32 (fix: list as many "
        "devices as the plan uses (tp x pp x dp))"]


def test_a_rank_above_the_engines_highest_names_how_many_ranks_to_use(table):
    # An odd highest rank: max_rank_id | 1 and ^ 1 give another number than + 1.
    assert stack_problems(table, rules=RankTableOptions("e", max_rank_id=13)) == [
        f"brought.json: server_list[1].device[{d}].rank_id: server {WORKER} device {d}: rank_id {d + 8}, but e accepts "
        "0..13 (fix: use at most 14 ranks)" for d in (6, 7)]


def test_a_device_id_below_its_place_is_refused_where_ranks_follow_the_listing(table):
    devices = table["server_list"][1]["device"]
    devices[2]["device_id"], devices[3]["device_id"] = "3", "2"
    problems = stack_problems(table, rules=RankTableOptions("vllm", ranks_follow_the_listing=True))
    assert [p.split(": ")[1] for p in problems] == ["server_list[1].device[2].device_id",
                                                    "server_list[1].device[3].device_id"], problems


def test_ranks_and_places_are_compared_by_value_above_256_too():
    many = rank_table_for([{"server_id": MASTER, "device_ips": [str(ipaddress.IPv4Address("172.16.0.1") + d)
                                                                for d in range(300)]}], 300, version="1.0")
    rules = RankTableOptions("vllm", ranks_follow_the_listing=True, max_devices_per_server=300)
    assert stack_problems(many, rules=rules, world_size=300, servers=[StackServer("node0", MASTER)]) == []


def test_an_empty_device_ip_is_no_second_address_for_an_engine_that_reads_one():
    single = rank_table_for([{"server_id": MASTER, "device_ips": ["", "198.51.100.2"]}], 2, version="1.0")
    rules = RankTableOptions("e", single_device_ip=True)
    assert stack_problems(single, rules=rules, world_size=2, servers=[StackServer("node0", MASTER)]) == []


def test_a_server_that_is_no_node_does_not_stop_the_checks_of_the_next(table):
    table["server_list"][0]["server_id"] = "192.0.2.99"
    table["server_list"][1]["device"][4]["device_ip"] = "198.51.100.99"
    declared = tuple(f"198.51.100.{d + 17}" for d in range(8))
    stack = [StackServer("node0", MASTER), StackServer("node1", WORKER, declared)]
    problems = stack_problems(table, rules=RankTableOptions("e"), servers=stack)
    assert (f"brought.json: server_list[1].device[4].device_ip: server {WORKER} device 4 has device_ip 198.51.100.99, "
            "but stack Pulumi.s.yaml declares 198.51.100.21 for node1 device 4 (fix: use the address `hccn_tool -i N "
            "-ip -g` prints on that node, in both places)") in problems, problems


def test_the_container_ip_an_engine_finds_itself_by_is_compared_by_value_either_way(table):
    rules = RankTableOptions("mindie", container_ip_finds_the_server=True)
    read = json.loads(json.dumps(table))  # a brought table's strings are other objects than the stack's
    assert stack_problems(read, rules=rules) == []
    read["server_list"][1]["container_ip"] = "10.0.0.1"  # sorts below the node's address
    assert stack_problems(read, rules=rules) == [
        f"brought.json: server_list[1].container_ip: server {WORKER} has container_ip 10.0.0.1, but mindie on node1 "
        f"looks itself up by {WORKER} (its address, since the stack declares no container_ip) and would find no "
        f"entry for its server (fix: set \"container_ip\": \"{WORKER}\", or declare nodes[].container_ip: 10.0.0.1 "
        "if the container has that address)"]


def test_a_server_count_at_either_end_of_the_engines_range_is_accepted(table):
    assert stack_problems(table, rules=RankTableOptions("e", server_count_range=(2, 2))) == []
    assert stack_problems(table, rules=RankTableOptions("e", server_count_range=(1, 2))) == []


def test_the_devices_per_server_are_refused_above_the_engines_most_only(table):
    assert stack_problems(table, rules=RankTableOptions("e", max_devices_per_server=8)) == []
    assert stack_problems(table, rules=RankTableOptions("e", max_devices_per_server=7)) == [
        f"brought.json: server_list[{i}].device: server {server} lists 8 devices; e accepts at most 7 (fix: split the "
        "devices over more servers)" for i, server in enumerate((MASTER, WORKER))]


def test_a_later_server_with_more_devices_than_the_first_is_refused(table):
    table["server_list"][0]["device"].pop()
    assert stack_problems(table, rules=RankTableOptions("e", same_devices_per_server=True), world_size=15) == [
        f"brought.json: server_list[1].device: server {WORKER} lists 8 devices but server {MASTER} lists 7; e requires "
        "as many on every server (fix: list the same number of NPUs on every server)"]


def test_a_device_ip_that_is_no_address_is_left_to_validate_rank_table_by_the_single_address_rule(table):
    # check_rank_table_for_stack's callers validate first (validate_rank_table names it); on its own it is no
    # unspecified address and no traceback.
    table["server_list"][1]["device"][4]["device_ip"] = "not-an-ip"
    assert stack_problems(table, rules=RankTableOptions("e", single_device_ip=True)) == []


def test_the_rules_of_an_engine_that_names_none_take_any_server_order_and_container_ip(table):
    table["server_list"].reverse()  # rank 0 stays on the master, now listed second
    table["server_list"][0]["container_ip"] = "10.0.0.5"  # the stack declares none for the worker
    assert stack_problems(table, rules=RankTableOptions()) == []


def test_a_servers_devices_after_one_on_a_node_without_declared_ips_are_still_checked(table):
    table["server_list"][1]["device"][3]["device_ip"] = "198.51.100.20,198.51.100.99"
    assert stack_problems(table, rules=RankTableOptions("e", single_device_ip=True)) == [
        f"brought.json: server_list[1].device[3].device_ip: server {WORKER} device 3: device_ip "
        "'198.51.100.20,198.51.100.99' has 2 addresses; e reads it as one address (fix: keep one address per device)"]
