"""`python -m ascendctl validate --stack NAME --rank-table FILE`: a rank table
the user brings, checked against HCCL's rules, the engine's limits and the
stack, through the CLI as a user runs it.

The tables are built the way Ascend's own tools write them (mindspore-ai/models
`utils/hccl_tools/`): `hccl_tools.py` writes one file per server
(`server_id` = the host IP, `device` = [{device_id, device_ip, rank_id}],
`host_nic_ip: "reserve"`, version "1.0", status "completed"); `merge_hccl.py`
concatenates them in the order given and renumbers `rank_id` from 0. Runbook
001 then adds `container_ip` per server by hand for MindIE.
"""
from __future__ import annotations

import json

import pytest
import yaml

from ascend_inference.brought_table import found_sdid_problems, load_brought_table
from ascend_inference.errors import StackError
from ascend_inference.render import declared_device_ips, rank_table
from ascend_inference.stackfile import load_stack
from tests.conftest import NS, STACKS_DIR, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure


def stack_nodes(stack: str) -> list[dict]:
    config = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config["ascend-inference:nodes"]


def hccl_tools_file(server_ip: str, device_ips: list[str], first: int = 0, last: int = 8) -> dict:
    """One server's table, as `hccl_tools.py --device_num "[first,last)" --server_ip IP` writes it."""
    devices = [{"device_id": str(d), "device_ip": device_ips[d], "rank_id": str(rank)}
               for rank, d in enumerate(range(first, last))]
    return {"version": "1.0", "server_count": "1",
            "server_list": [{"server_id": server_ip, "device": devices, "host_nic_ip": "reserve"}],
            "status": "completed"}


def merge_hccl(files: list[dict]) -> dict:
    """`merge_hccl.py a.json b.json`: servers in argument order, ranks renumbered."""
    table = {"version": "1.0", "server_count": str(sum(int(f["server_count"]) for f in files)), "server_list": []}
    rank = 0
    for f in files:
        for server in f["server_list"]:
            for device in server["device"]:
                device["rank_id"] = str(rank)
                rank += 1
        table["server_list"].extend(f["server_list"])
    table["status"] = "completed"
    return table


def tools_table(stack: str, *, container_ip: bool) -> dict:
    table = merge_hccl([hccl_tools_file(n["host"], n["device_ips"]) for n in stack_nodes(stack)])
    if container_ip:  # runbook 001's hand fix
        for server in table["server_list"]:
            server["container_ip"] = server["server_id"]
    return table


def validate(tmp_path, stack: str, table) -> tuple[int, str, str]:
    path = tmp_path / "brought.json"
    path.write_text(table if isinstance(table, str) else json.dumps(table, indent=4))
    result = run_cli("validate", "--stack", stack, "--rank-table", path)
    return result.returncode, result.stdout, result.stderr


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("stack, container_ip", [("tp16-mindie", True), ("tp16-lmdeploy", False)])
def test_the_tables_ascends_tools_make_are_accepted(tmp_path, stack, container_ip):
    code, out, err = validate(tmp_path, stack, tools_table(stack, container_ip=container_ip))
    assert code == 0, err
    assert f"brought.json: ok for stack {stack}" in out
    assert "note:" not in out


def test_mindie_without_the_hand_added_container_ip(tmp_path):
    code, _, err = validate(tmp_path, "tp16-mindie", tools_table("tp16-mindie", container_ip=False))
    assert code == 3
    assert "container_ip" in err and "192.0.2.11" in err and "Traceback" not in err


def test_servers_merged_in_the_wrong_order(tmp_path):
    """`merge_hccl.py node1.json node0.json`: rank 0 lands on the worker."""
    nodes = stack_nodes("tp16-lmdeploy")
    table = merge_hccl([hccl_tools_file(n["host"], n["device_ips"]) for n in reversed(nodes)])
    code, _, err = validate(tmp_path, "tp16-lmdeploy", table)
    assert code == 3
    assert "rank 0 is server 192.0.2.12 device 0, but the stack's master is node0 (192.0.2.11)" in err
    assert "the first server is 192.0.2.12" in err and "Ray's head" in err


def test_a_device_ip_typed_wrong(tmp_path):
    table = tools_table("tp16-lmdeploy", container_ip=False)
    table["server_list"][1]["device"][5]["device_ip"] = "198.51.100.99"
    code, _, err = validate(tmp_path, "tp16-lmdeploy", table)
    assert code == 3
    line = one_error(err)
    assert "server_list[1].device[5].device_ip" in line
    assert "server 192.0.2.12 device 5 has device_ip 198.51.100.99" in line
    assert "declares 198.51.100.22 for node1 device 5" in line


def test_devices_four_to_seven_accepted_by_hccl_but_not_the_plans_world_size(tmp_path):
    """A table of devices 4-7 is valid for HCCL (noted), but tp16 needs 16
    ranks, and LMDeploy would open NPUs 0-3 (the place in the list) for it."""
    nodes = stack_nodes("tp16-lmdeploy")
    table = merge_hccl([hccl_tools_file(n["host"], n["device_ips"], 4, 8) for n in nodes])
    code, _, err = validate(tmp_path, "tp16-lmdeploy", table)
    assert code == 3 and "Traceback" not in err
    lines = err.splitlines()
    assert all(line.startswith("error: ") for line in lines), err
    assert any("8 ranks but the stack's plan has world size 16" in line for line in lines), err
    assert any("server_list[1].device[0].device_id: server 192.0.2.12: device_id '4' is listed at place 0" in line
               and "lmdeploy opens" in line for line in lines), err


def test_not_json(tmp_path):
    code, _, err = validate(tmp_path, "tp16-mindie", '{"server_count": "2",\n  "server_list": [}')
    assert code == 3
    line = one_error(err)
    assert "brought.json: (file): is not JSON (line 2" in line


def test_a_stack_without_a_rank_table(tmp_path):
    code, _, err = validate(tmp_path, "tp16-vllm-mindspore", tools_table("tp16-lmdeploy", container_ip=False))
    assert code == 3
    line = one_error(err)
    assert "Pulumi.tp16-vllm-mindspore.yaml: ascend-inference:engine.kind" in line
    assert "uses no HCCL rank table" in line


# --------------------------------------------------------------------------
# network.rank_table_file: the stack uses a table the user brings
# --------------------------------------------------------------------------

def stack_using(tmp_path, stack: str, table, *, file_name: str = "brought.json"):
    """A copy of `stack` whose network.rank_table_file names `table`, written
    beside the stack file (the path is relative to it)."""
    doc = load_stack_doc(stack)
    doc["config"][f"{NS}network"] = {**doc["config"].get(f"{NS}network", {}), "rank_table_file": file_name}
    if table is not None:
        (tmp_path / file_name).write_text(json.dumps(table, indent=4))
    return write_stack(tmp_path, f"{stack}-brought", doc)


def test_a_stack_with_the_tools_table_validates_and_renders_it(tmp_path):
    table = tools_table("tp16-mindie", container_ip=True)
    path = stack_using(tmp_path, "tp16-mindie", table)
    assert run_cli("validate", "--stack", path).returncode == 0
    out = tmp_path / "out"
    assert run_cli("render", "--stack", path, "--out", out).returncode == 0
    assert json.loads((out / "rank_table.json").read_text()) == table
    on_node = out / "node1" / "files" / "data" / "hm" / "hccl_2s_16p.json"
    assert json.loads(on_node.read_text()) == table
    assert oct(on_node.stat().st_mode & 0o777) == "0o640"


def test_a_broken_brought_table_stops_validate(tmp_path):
    table = tools_table("tp16-mindie", container_ip=True)
    table["server_list"][1]["device"][5]["device_ip"] = "198.51.100.99"
    result = run_cli("validate", "--stack", stack_using(tmp_path, "tp16-mindie", table))
    assert result.returncode == 3
    line = one_error(result.stderr)
    assert "brought.json: server_list[1].device[5].device_ip" in line and "declares 198.51.100.22" in line


def test_a_missing_brought_table_names_the_key(tmp_path):
    result = run_cli("validate", "--stack", stack_using(tmp_path, "tp16-lmdeploy", None, file_name="nowhere.json"))
    assert result.returncode == 3
    line = one_error(result.stderr)
    assert f"{NS}network.rank_table_file: " in line and "nowhere.json cannot be read" in line


def test_an_engine_without_rank_table_refuses_the_key(tmp_path):
    table = tools_table("tp16-lmdeploy", container_ip=False)
    result = run_cli("validate", "--stack", stack_using(tmp_path, "tp16-vllm-mindspore", table))
    assert result.returncode == 3
    line = one_error(result.stderr)
    assert f"{NS}network.rank_table_file: engine vllm-mindspore uses no HCCL rank table" in line


def test_found_device_ips_that_differ_from_the_brought_table():
    """At rollout the table is checked against what preflight found."""
    from ascend_inference.brought_table import found_ip_problems
    from ascend_inference.stackfile import load_stack

    loaded = load_stack("tp16-lmdeploy")
    table = tools_table("tp16-lmdeploy", container_ip=False)
    found = {n.name: list(n.device_ips or []) for n in loaded.spec.nodes}
    assert found_ip_problems(table, loaded.spec, loaded.plan, "brought.json", found) == []
    found["node1"][2] = "198.51.100.77"
    [problem] = found_ip_problems(table, loaded.spec, loaded.plan, "brought.json", found)
    assert "server 192.0.2.12 device 2 has device_ip 198.51.100.19" in str(problem)
    assert "preflight found 198.51.100.77 on node1 device 2" in str(problem)


# --------------------------------------------------------------------------
# Through the CLI: the cases of issue 23 a user meets first
# --------------------------------------------------------------------------

def test_a_wrong_container_ip_on_a_stack_that_declares_none(tmp_path):
    """tp16-mindie declares no container_ip, so each node's MIES_CONTAINER_IP
    is its address; MindIE on node1 would find no entry for its server."""
    assert all("container_ip" not in n for n in stack_nodes("tp16-mindie"))
    table = tools_table("tp16-mindie", container_ip=True)
    table["server_list"][1]["container_ip"] = "192.0.2.99"
    code, _, err = validate(tmp_path, "tp16-mindie", table)
    assert code == 3
    line = one_error(err)
    assert "brought.json: server_list[1].container_ip: server 192.0.2.12 has container_ip 192.0.2.99" in line
    assert "looks itself up by 192.0.2.12" in line and "no entry" in line
    assert 'set "container_ip": "192.0.2.12"' in line


def test_no_server_count_is_a_note_for_lmdeploy_and_a_refusal_for_mindie(tmp_path):
    table = tools_table("tp16-lmdeploy", container_ip=False)
    del table["server_count"]
    code, out, err = validate(tmp_path, "tp16-lmdeploy", table)
    assert code == 0, err
    assert "note:" in out and "no server_count" in out
    table = tools_table("tp16-mindie", container_ip=True)
    del table["server_count"]
    code, _, err = validate(tmp_path, "tp16-mindie", table)
    assert code == 3
    line = one_error(err)
    assert "brought.json: server_count: missing; mindie reads server_count itself" in line
    assert 'add "server_count": "2"' in line


def test_a_superscript_rank_id_is_one_clean_line(tmp_path):
    table = tools_table("tp16-lmdeploy", container_ip=False)
    table["server_list"][0]["device"][2]["rank_id"] = "²"
    code, _, err = validate(tmp_path, "tp16-lmdeploy", table)
    assert code == 3
    line = one_error(err)
    assert "server_list[0].device[2].rank_id: server 192.0.2.11 device 2: rank_id '²' is not a number" in line


@pytest.mark.parametrize("text, words", [("[" * 100_000, "nested too deeply"),
                                         ('{"server_count": ' + "9" * 5000 + "}", "is not JSON")])
def test_json_python_cannot_read_is_one_clean_line(tmp_path, text, words):
    code, _, err = validate(tmp_path, "tp16-lmdeploy", text)
    assert code == 3
    assert words in one_error(err)


# --- a brought rank table 1.2 (Atlas A3) against the SDIDs preflight found --------

def a3_table_and_found():
    """tp32-a3-mindie's table built from SDIDs as preflight reports them, and those SDIDs."""
    loaded = load_stack("tp32-a3-mindie")
    found = {n.name: {"super_pod_id": "0", "super_device_ids": [str(1000 * i + d) for d in range(16)]}
             for i, n in enumerate(loaded.spec.nodes)}
    # Through JSON, as a brought table is read: its strings are not preflight's objects.
    return loaded, json.loads(json.dumps(rank_table(loaded, declared_device_ips(loaded), found))), found


def sdid_problems(table, loaded, found):
    return [f"{p.key}: {p.message}" for p in found_sdid_problems(table, loaded.spec, "brought.json", found)]


def test_a_brought_a3_table_with_the_found_sdids_passes():
    loaded, table, found = a3_table_and_found()
    assert sdid_problems(table, loaded, found) == []


def test_a_super_device_id_that_is_not_its_dies_sdid_is_named():
    loaded, table, found = a3_table_and_found()
    table["server_list"][1]["device"][3]["super_device_id"] = "1002"  # lower than the found 1003
    table["server_list"][0]["device"][5]["super_device_id"] = "9"     # higher than the found 5
    assert sdid_problems(table, loaded, found) == [
        "server_list[0].device[5].super_device_id: server 192.0.2.31 device 5 has super_device_id 9, "
        "but preflight found SDID 5 on node0 die 5",
        "server_list[1].device[3].super_device_id: server 192.0.2.32 device 3 has super_device_id 1002, "
        "but preflight found SDID 1003 on node1 die 3"]


def test_servers_and_devices_the_other_checks_refuse_are_skipped_not_fatal():
    # A server that is no node, a device_id past the node's dies or not a number: the table checks name
    # those; this check goes on to the servers after them.
    loaded, table, found = a3_table_and_found()
    table["server_list"].insert(0, {"server_id": "203.0.113.9", "device": [{"device_id": "0"}]})
    devices = table["server_list"][1]["device"]
    devices[0]["device_id"], devices[1]["device_id"], devices[3]["device_id"] = "99", "x", "16"  # dies 0..15
    devices[2]["super_device_id"] = "8"  # after the skipped devices, on the same server
    table["server_list"][2]["device"][0]["super_device_id"] = "7"
    assert sdid_problems(table, loaded, found) == [
        "server_list[1].device[2].super_device_id: server 192.0.2.31 device 2 has super_device_id 8, "
        "but preflight found SDID 2 on node0 die 2",
        "server_list[2].device[0].super_device_id: server 192.0.2.32 device 0 has super_device_id 7, "
        "but preflight found SDID 1000 on node1 die 0"]


def test_a_node_that_printed_no_spod_info_is_left_to_the_fact_checks():
    loaded, table, found = a3_table_and_found()
    table["server_list"][0]["device"][1]["super_device_id"] = "9"
    del found["node1"]  # its preflight printed no SDID: check_super_pod_facts names that node
    assert sdid_problems(table, loaded, found) == [
        "server_list[0].device[1].super_device_id: server 192.0.2.31 device 1 has super_device_id 9, "
        "but preflight found SDID 1 on node0 die 1"]


@pytest.mark.parametrize(("key", "drop"), [(None, "network.rank_table_file"), ("--rank-table", "--rank-table")])
def test_an_engine_without_a_rank_table_names_what_to_drop(tmp_path, key, drop):
    loaded = load_stack("tp16-vllm-mindspore")
    with pytest.raises(StackError) as raised:
        load_brought_table(loaded.spec, loaded.plan, loaded.file, tmp_path / "rank_table.json",
                           **({"key": key} if key else {}))
    assert raised.value.problems[0].fix.startswith(f"drop {drop}, or use an engine that reads one")


def test_a_table_above_16_mib_is_refused_before_it_is_read(tmp_path):
    # Found by mutation testing: MAX_RANK_TABLE_BYTES (16 MiB) -> 17 MiB, 16 + 2**20, ...
    # passed: no test reached the limit. A sparse file: nothing is written or read.
    loaded = load_stack("tp16-mindie")
    path = tmp_path / "rank_table.json"
    with path.open("wb") as big:
        big.truncate(16 * 2**20 + 1)
    with pytest.raises(StackError) as raised:
        load_brought_table(loaded.spec, loaded.plan, loaded.file, path)
    assert raised.value.problems[0].message == (f"{path} is 16,777,217 bytes, more than the 16,777,216 bytes allowed")
