"""Config values as the Pulumi CLI types them.

`pulumi config set --path` stores only booleans and integers typed, and keeps
a key that already holds a string a string (both seen with the real CLI in
tests/realengine). The schema reads those per field, and the offline
`diff --set` types its values the same way, so both paths agree."""
from __future__ import annotations

import pytest

from ascend_inference.errors import StackError
from ascend_inference.stackfile import load_stack, read_config
from ascendctl.preview.config import apply_change, cli_typed
from tests.conftest import STACKS_DIR, load_stack_doc, write_stack

pytestmark = pytest.mark.pure

NS = "ascend-inference"


@pytest.mark.parametrize("raw,current,expected", [
    ("0.5", None, "0.5"),            # a float is stored as a string
    ("128", None, 128),
    ("-3", None, -3),
    ("true", None, True),
    ("false", 1, False),
    ("16668", "16667", "16668"),     # the key holds a string: it stays one
    ("text", None, "text"),
    ("[a, b]", None, ["a", "b"]),    # the one extension: YAML for a list or a node
    ('{"name": "n"}', None, {"name": "n"}),
])
def test_cli_typed_follows_the_cli(raw, current, expected):
    assert cli_typed(raw, current) == expected


def test_float_as_string_and_int_as_string_field_are_accepted(tmp_path):
    doc = load_stack_doc("tp16-lmdeploy")
    engine = doc["config"][f"{NS}:engine"]
    engine["cache_max_entry_count"] = "0.5"      # as `config set --path ... 0.5` writes it
    engine["device_port"] = 16668                # as `config set --path ... 16668` writes a new key
    loaded = load_stack(str(write_stack(tmp_path, "typed", doc)))
    assert loaded.spec.engine.cache_max_entry_count == 0.5
    assert loaded.spec.engine.device_port == "16668"


@pytest.mark.parametrize("key,value,message", [
    ("cache_max_entry_count", "lots", "valid number"),   # not a decimal number: still refused
    ("cache_max_entry_count", True, "valid number"),     # a boolean is no number
    ("eager_mode", "yes", "valid boolean"),               # only the CLI's true/false are booleans
])
def test_other_strings_are_still_refused(tmp_path, key, value, message):
    doc = load_stack_doc("tp16-lmdeploy")
    doc["config"][f"{NS}:engine"][key] = value
    with pytest.raises(StackError) as raised:
        load_stack(str(write_stack(tmp_path, "bad", doc)))
    assert message in str(raised.value) and f"{NS}:engine.{key}" in str(raised.value)


def test_integer_fields_stay_strict(tmp_path):
    doc = load_stack_doc("tp16-lmdeploy")
    doc["config"][f"{NS}:parallel"]["tp"] = "16"   # the CLI never writes this; a hand edit might
    with pytest.raises(StackError) as raised:
        load_stack(str(write_stack(tmp_path, "bad", doc)))
    assert f"{NS}:parallel.tp" in str(raised.value)


def test_offline_set_types_like_the_cli():
    path = STACKS_DIR / "Pulumi.tp16-lmdeploy.yaml"
    config = read_config(path)
    changed = apply_change(config, "engine.cache_max_entry_count=0.5", str(path))
    assert changed[f"{NS}:engine"]["cache_max_entry_count"] == "0.5"
    changed = apply_change(config, "engine.device_port=16668", str(path))
    assert changed[f"{NS}:engine"]["device_port"] == "16668"
    changed = apply_change(config, "engine.max_num_seqs=64", str(path))
    assert changed[f"{NS}:engine"]["max_num_seqs"] == 64


def test_offline_set_one_past_the_end_of_a_list_appends_like_the_cli():
    """`pulumi config set --path 'ns:nodes[2].name' node2` on a 2-node stack adds a
    third node: the offline `--set` does the same, key by key."""
    path = STACKS_DIR / "Pulumi.tp16-lmdeploy.yaml"
    changed = apply_change(read_config(path), "nodes[2].name=node2", str(path))
    changed = apply_change(changed, "nodes[2].device_ips[0]=198.51.100.33", str(path))
    assert changed[f"{NS}:nodes"][2] == {"name": "node2", "device_ips": ["198.51.100.33"]}
    with pytest.raises(StackError, match="no such path"):
        apply_change(read_config(path), "nodes[3].name=node3", str(path))
