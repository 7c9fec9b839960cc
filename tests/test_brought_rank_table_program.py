"""`network.rank_table_file` under the program (the SDK's mocks): the table
the user brings is the one every node's rank-table step installs."""
from __future__ import annotations

import base64
import json
import lzma

import pytest

from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import record_stack
from tests.step_script import step_script
from tests.test_brought_rank_table import stack_using, tools_table

pytestmark = pytest.mark.graph


def installed_table(script: str) -> dict:
    """The table a rank-table install script writes (plain heredoc or xz+base64)."""
    body = script.split("<<'", 1)[1].split("\n", 1)[1]
    marker = script.split("<<'", 1)[1].split("'", 1)[0]
    text = body.split(marker, 1)[0]
    if "base64 -d" in script:
        text = lzma.decompress(base64.b64decode(text)).decode()
    return json.loads(text)


def test_every_node_installs_the_brought_table(tmp_path):
    table = tools_table("tp16-lmdeploy", container_ip=False)
    table["server_list"][0]["host_nic_ip"] = "reserve"  # the tools' field, kept as brought
    loaded = load_stack(str(stack_using(tmp_path, "tp16-lmdeploy", table)))
    graph = record_stack(loaded, loaded.raw_config)
    copies = [r for r in graph.resources if r.name.endswith("-rank-table") and r.custom]
    assert [c.name for c in copies] == ["node0-rank-table", "node1-rank-table"]
    for copy in copies:
        assert installed_table(step_script(copy.inputs)) == table
