"""Pure tier: the steps that run inside a started container before Ray or
the engine (container-check, MindIE's config-edit and its undo).

The rendered scripts run here for real under bash with this machine's
python3, on files in a temporary directory standing in for the container's;
their one-line reports go through the same judges the program uses.
"""
from __future__ import annotations

import copy
import inspect
import json
import subprocess
from pathlib import Path

import pytest

from ascend_inference import config_edit
from ascend_inference.config_edit import apply_edits, edit_in_place, missing_paths, parse_path
from ascend_inference.errors import NodeFactError
from ascend_inference.incontainer import judge_config_edit, judge_container_check, judge_pyacl_install
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template
from tests.conftest import FIXTURES

pytestmark = pytest.mark.pure

DEFAULT = json.loads((FIXTURES / "mindie_config.default.json").read_text())


def mindie_edits(node: int = 1) -> list[list]:
    loaded = load_stack("tp16-mindie")
    edit = loaded.spec.engine_plugin.config_edit(render_node(loaded, node).ctx)
    return [list(e) for e in edit.edits]


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)


# --- the edit list, as a pure function over a config.json ----------------

def test_paths_parse_into_keys_and_list_indexes():
    assert parse_path("BackendConfig.ModelDeployConfig.ModelConfig[0].modelName") == [
        "BackendConfig", "ModelDeployConfig", "ModelConfig", 0, "modelName"]
    assert parse_path("a[1][2].b") == ["a", 1, 2, "b"]
    with pytest.raises(ValueError, match="bad config path"):
        parse_path("a..b")


def test_every_runbook_edit_exists_in_mindies_default_config():
    assert missing_paths(DEFAULT, mindie_edits()) == []


def test_a_key_the_image_lacks_is_named_not_added():
    # MindIE 1.0.RC3's config.json has no interCommTLSEnabled (docs/formats.md §3b).
    older = copy.deepcopy(DEFAULT)
    del older["ServerConfig"]["interCommTLSEnabled"]
    del older["BackendConfig"]["ModelDeployConfig"]["ModelConfig"]
    edits = mindie_edits()
    assert missing_paths(older, edits) == [
        "ServerConfig.interCommTLSEnabled",
        "BackendConfig.ModelDeployConfig.ModelConfig[0].modelName",
        "BackendConfig.ModelDeployConfig.ModelConfig[0].modelWeightPath",
        "BackendConfig.ModelDeployConfig.ModelConfig[0].worldSize"]
    with pytest.raises(ValueError, match=r"no such key: ServerConfig\.interCommTLSEnabled, "):
        apply_edits(older, edits)


def test_edits_keep_every_key_they_do_not_set():
    # A key only the image's MindIE version has (not in the bundled default).
    image = copy.deepcopy(DEFAULT)
    image["ServerConfig"]["someNewerKey"] = {"kept": True}
    image["BackendConfig"]["ScheduleConfig"]["maxIterTimes"] = 1
    edited = apply_edits(image, [["BackendConfig.ScheduleConfig.maxIterTimes", 8192]])
    assert edited["ServerConfig"]["someNewerKey"] == {"kept": True}
    assert edited["BackendConfig"]["ScheduleConfig"]["maxIterTimes"] == 8192
    image["BackendConfig"]["ScheduleConfig"]["maxIterTimes"] = 8192
    assert edited == image


# --- edit in place: idempotent, undoable, nothing written on a missing key --

def test_edit_in_place_keeps_the_original_and_is_idempotent(tmp_path):
    target, edits, original = tmp_path / "config.json", tmp_path / "edits.json", tmp_path / "config.json.orig"
    image = copy.deepcopy(DEFAULT)
    image["ServerConfig"]["someNewerKey"] = 7
    target.write_text(json.dumps(image))
    edits.write_text(json.dumps({"edits": [["ServerConfig.port", 2025], ["ServerConfig.httpsEnabled", False]]}))
    first = edit_in_place(str(target), str(edits), str(original))
    assert first == {"target": str(target), "missing": [], "edited": ["ServerConfig.port", "ServerConfig.httpsEnabled"]}
    assert json.loads(original.read_text()) == image
    after_first = target.read_bytes()
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    edit_in_place(str(target), str(edits), str(original))
    assert target.read_bytes() == after_first and json.loads(original.read_text()) == image
    # An edit the stack no longer makes goes back to the image's value.
    edits.write_text(json.dumps({"edits": [["ServerConfig.port", 2025]]}))
    edit_in_place(str(target), str(edits), str(original))
    assert json.loads(target.read_text())["ServerConfig"]["httpsEnabled"] is True
    assert json.loads(target.read_text())["ServerConfig"]["someNewerKey"] == 7


def test_edit_in_place_touches_nothing_when_a_key_is_missing(tmp_path):
    target, edits, original = tmp_path / "config.json", tmp_path / "edits.json", tmp_path / "config.json.orig"
    target.write_text(json.dumps(DEFAULT))
    before = target.read_bytes()
    edits.write_text(json.dumps({"edits": [["ServerConfig.port", 2025], ["ServerConfig.noSuchKey", 1]]}))
    result = edit_in_place(str(target), str(edits), str(original))
    assert result["missing"] == ["ServerConfig.noSuchKey"]
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "edits.json"]


# --- the rendered scripts, run for real -------------------------------------

def test_config_edit_script_carries_the_tested_module():
    loaded = load_stack("tp16-mindie")
    text = render_node(loaded, 0).scripts.config_edit.text
    assert inspect.getsource(config_edit) in text


def test_config_edit_and_restore_scripts_run(tmp_path):
    """config-edit on an image file with a key the bundled default lacks,
    twice, then config-restore: the image's own file comes back byte for byte."""
    target, edits_file = tmp_path / "conf" / "config.json", tmp_path / "config-edits.json"
    target.parent.mkdir()
    image = copy.deepcopy(DEFAULT)
    image["ServerConfig"]["onlyInThisImage"] = "kept"
    target.write_text(json.dumps(image, indent=4))
    target.chmod(0o640)
    own = target.read_bytes()
    edits = mindie_edits()
    edits_file.write_text(json.dumps({"file": str(target), "edits": edits}))
    context = {"purpose": "test", "stack": "s", "node": {"name": "node1"}, "label": "MindIE config.json",
               "target": str(target), "edits_file": str(edits_file)}
    edit = render_template("config-edit.sh.j2", source=inspect.getsource(config_edit), **context)
    restore = render_template("config-restore.sh.j2", **context)
    for _ in range(2):
        done = run(edit, tmp_path)
        assert done.returncode == 0, done.stderr
        judge_config_edit("node1", "mindie:test", "MindIE config.json", done.stdout)
    edited = json.loads(target.read_text())
    assert edited == apply_edits(image, edits)
    assert edited["ServerConfig"]["onlyInThisImage"] == "kept"
    done = run(restore, tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == own
    assert not (tmp_path / "conf" / "config.json.ascend-inference-orig").exists()
    assert run(restore, tmp_path).returncode == 0  # nothing kept: nothing to do


def test_config_edit_on_an_image_lacking_a_key_is_one_line(tmp_path):
    target, edits_file = tmp_path / "config.json", tmp_path / "config-edits.json"
    older = copy.deepcopy(DEFAULT)
    del older["BackendConfig"]["ScheduleConfig"]["maxIterTimes"]
    target.write_text(json.dumps(older))
    before = target.read_bytes()
    loaded = load_stack("tp16-mindie")
    edit = loaded.spec.engine_plugin.config_edit(render_node(loaded, 1).ctx)
    edits_file.write_text(edit.edits_json())
    script = render_template("config-edit.sh.j2", purpose="t", stack="s", node={"name": "node1"}, label=edit.label,
                             target=str(target), edits_file=str(edits_file), source=inspect.getsource(config_edit))
    done = run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    with pytest.raises(NodeFactError) as caught:
        judge_config_edit("node1", "mindie:1.0.RC3", edit.label, done.stdout, dict(edit.set_by))
    message = str(caught.value)
    assert message.startswith(
        f"node node1: MindIE config.json: image mindie:1.0.RC3's {target} has no key "
        "BackendConfig.ScheduleConfig.maxIterTimes (set by engine.max_iter_times); nothing was changed (fix: ")
    assert "\n" not in message
    assert target.read_bytes() == before


def container_check(tmp_path: Path, *, acl: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
    """container-check.sh with `tmp_path` as the stack directory (its env.sh)."""
    exports = "".join(f"export {k}={v}\n" for k, v in env.items())
    (tmp_path / "env.sh").write_text(exports)
    script = render_template("container-check.sh.j2", purpose="t", stack="s", node={"name": "node1"},
                             remote_dir=str(tmp_path), acl=acl, files_from_env=("MINDFORMERS_MODEL_CONFIG",))
    return run(script, tmp_path)


def test_container_check_passes_with_acl_and_the_yaml(tmp_path):
    site = tmp_path / "site-packages" / "acl"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (tmp_path / "predict.yaml").write_text("model: {}\n")
    done = container_check(tmp_path, acl=True, env={"PYTHONPATH": str(site.parent),
                                                     "MINDFORMERS_MODEL_CONFIG": str(tmp_path / "predict.yaml")})
    assert done.returncode == 0, done.stderr
    judge_container_check("node1", "vllm-ds", done.stdout)
    assert json.loads(done.stdout)["acl"] == "ok"


def test_container_without_acl_is_one_line(tmp_path):
    (tmp_path / "predict.yaml").write_text("model: {}\n")
    done = container_check(tmp_path, acl=True, env={"MINDFORMERS_MODEL_CONFIG": str(tmp_path / "predict.yaml")})
    assert done.returncode == 0, done.stderr
    with pytest.raises(NodeFactError) as caught:
        judge_container_check("node1", "vllm-ds", done.stdout)
    message = str(caught.value)
    assert message.startswith("node node1: container vllm-ds: cannot import acl (ModuleNotFoundError: No module "
                              "named 'acl'); runbook 000 installs pyACL for Ray on Ascend (fix: ")
    assert "container.nnrt_run" in message and "Ascend-cann-nnrt" in message and "\n" not in message


def test_a_missing_mindformers_yaml_is_one_line(tmp_path):
    done = container_check(tmp_path, acl=False, env={"MINDFORMERS_MODEL_CONFIG": "/nowhere/predict.yaml"})
    assert done.returncode == 0, done.stderr
    with pytest.raises(NodeFactError, match=r"^node node1: container vllm-ds: MINDFORMERS_MODEL_CONFIG names "
                                            r"/nowhere/predict\.yaml, which does not exist in the container"):
        judge_container_check("node1", "vllm-ds", done.stdout)


def test_an_unset_mindformers_yaml_is_one_line(tmp_path):
    done = container_check(tmp_path, acl=False, env={})
    with pytest.raises(NodeFactError, match=r"MINDFORMERS_MODEL_CONFIG is not set in the env file"):
        judge_container_check("node1", "vllm-ds", done.stdout)


@pytest.mark.parametrize("stdout", ["", "bash: python3: command not found\n", '{"python3": false}\n'])
def test_no_report_or_no_python_is_one_line(stdout):
    with pytest.raises(NodeFactError, match=r"^node node1: container vllm-ds"):
        judge_container_check("node1", "vllm-ds", stdout)


@pytest.mark.parametrize("stack,checks", [
    ("tp16-vllm-mindspore", {"acl": True, "files_from_env": ("MINDFORMERS_MODEL_CONFIG",)}),
    # vllm-mindspore 0.4.0 (the stack's pin) reads no predict yaml: nothing to look for.
    ("tp8-pp2-300iduo", {"acl": True, "files_from_env": ()}),
    ("tp16-lmdeploy", {"acl": True, "files_from_env": ()}),
    ("tp16-mindie", None),
    ("dp4-ep32-gpustack", None),
])
def test_which_stacks_check_what(stack, checks):
    """`import acl` by default where the cluster forms over Ray (runbook 000),
    the MindFormers yaml where vLLM-MindSpore reads one."""
    loaded = load_stack(stack)
    script = render_node(loaded, 0).scripts.container_check
    if checks is None:
        assert script is None
        return
    assert script is not None and script.place == "container"
    words = "1" if checks["acl"] else "0"
    assert f"python3 - {' '.join([words, *checks['files_from_env']])} <<" in script.text


# --- pyACL from the nnrt .run (container.nnrt_run) ---------------------------

NNRT = "/data/packages/Ascend-cann-nnrt_8.0.RC1_linux-aarch64.run"


def test_nnrt_run_adds_the_install_step_and_its_mount():
    from ascend_inference.render import PYACL_INSTALL_PATH
    from ascendctl.preview.config import apply_change
    from ascendctl.preview.stack import loaded_with_config

    base = load_stack("tp16-mindie")
    ld = loaded_with_config(base, apply_change(base.raw_config, f"container.nnrt_run={NNRT}", base.file))
    node = render_node(ld, 0)
    install, remove, check = node.scripts.pyacl_install, node.scripts.pyacl_remove, node.scripts.container_check
    assert install is not None and remove is not None and check is not None
    assert install.place == remove.place == check.place == "container"
    assert f"run={NNRT}" in install.text and f"install_path={PYACL_INSTALL_PATH}" in install.text
    # nnrt_run turns the acl check on for an engine that does not check by default.
    assert "python3 - 1 <<" in check.text
    assert f"{NNRT}:{NNRT}:ro" in node.container.docker_run_line()


def test_a_failed_pyacl_install_is_one_line():
    report = json.dumps({"installed": "no", "error": f"{NNRT} holds no run_package/Ascend-pyACL_*.run"})
    with pytest.raises(NodeFactError) as caught:
        judge_pyacl_install("node1", "vllm-ds", NNRT, report + "\n")
    message = str(caught.value)
    assert message.startswith(f"node node1: container vllm-ds: cannot import acl, and installing pyACL from {NNRT} "
                              f"failed: {NNRT} holds no run_package/Ascend-pyACL_*.run (fix: ")
    assert "\n" not in message
    judge_pyacl_install("node1", "vllm-ds", NNRT, json.dumps({"installed": "no", "reason": "acl imports already"}))
