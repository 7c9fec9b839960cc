"""`python -m ascendctl render`: what is written where, with which modes,
that it is written whole or not at all, that every script is valid bash, that
files the container reads are visible in it, and that secrets never leak."""
from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from tests.conftest import NS, STACKS, container_mount_for, load_stack_doc, pin_host_keys, run_cli, write_stack

pytestmark = pytest.mark.pure

USES_RANK_TABLE = {"tp16-mindie", "tp16-lmdeploy", "tp32-a3-mindie"}
PER_NODE_VARIABLES = {
    "tp16-vllm-mindspore": set(),
    "tp16-mindie": {"MIES_CONTAINER_IP"},
    "dp4-ep32-gpustack": set(),
    "tp8-pp2-300iduo": set(),
    "tp16-lmdeploy": {"HCCL_IF_IP"},
    "tp32-a3-mindie": {"MIES_CONTAINER_IP"},
    "dp2-tp8-ep16-vllm-ascend": {"HCCL_IF_IP"},
    "dp4-tp8-ep32-vllm-ascend": {"HCCL_IF_IP"},
    "tp16-vllm-ascend-ray": {"HCCL_IF_IP"},
}


def node_names(stack: str) -> list[str]:
    return [n["name"] for n in load_stack_doc(stack)["config"][NS + "nodes"]]


def exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = shlex.split(line)[1].partition("=")
            out[name] = value
    return out


def docker_mounts(line: str) -> list[str]:
    tokens = shlex.split(line)
    return [tokens[i + 1] for i, t in enumerate(tokens) if t == "-v"]


def docker_line(directory, node) -> str:
    text = (directory / node / "docker-run.sh").read_text()
    return next(line for line in text.splitlines() if line.startswith("docker run"))


# --------------------------------------------------------------------------
# Layout of the output
# --------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_plan_json(rendered, stack):
    plan = json.loads((rendered[stack] / "plan.json").read_text())
    for key in ("world_size", "tp", "pp", "dp", "ep", "nodes", "ranks", "pp_layer_split", "memory"):
        assert key in plan, f"plan.json of {stack} has no {key}"
    names = node_names(stack)
    assert [n["name"] for n in plan["nodes"]] == names
    assert plan["nodes"][0]["role"] == "master"
    # 8 NPUs a node; 16 dies on Atlas A3.
    per_node = 16 if stack == "tp32-a3-mindie" else 8
    assert plan["world_size"] == per_node * len(names) == len(plan["ranks"])
    assert plan["tp"] * plan["pp"] * plan["dp"] == plan["world_size"]
    assert [r["rank"] for r in plan["ranks"]] == list(range(plan["world_size"]))
    assert sum(plan["pp_layer_split"]) == 61 and len(plan["pp_layer_split"]) == plan["pp"]
    assert plan["memory"]["fits"] is True
    for key in ("weights_gb", "required_gb", "usable_gb", "available_for_weights_gb"):
        assert isinstance(plan["memory"][key], (int, float))


@pytest.mark.parametrize("stack", STACKS)
def test_rank_table_only_for_engines_that_use_one(rendered, stack):
    assert (rendered[stack] / "rank_table.json").exists() == (stack in USES_RANK_TABLE)
    plan = json.loads((rendered[stack] / "plan.json").read_text())
    assert (plan["rank_table_path"] is not None) == (stack in USES_RANK_TABLE)


@pytest.mark.parametrize("stack", STACKS)
def test_every_node_gets_its_files(rendered, stack):
    names = node_names(stack)
    top = sorted(p.name for p in rendered[stack].iterdir())
    assert top == sorted([".ascend-inference-render.json", "plan.json", *names,
                          *(["rank_table.json"] if stack in USES_RANK_TABLE else [])])
    for index, node in enumerate(names):
        base = rendered[stack] / node
        assert (base / "env.sh").is_file()
        assert (base / "docker-run.sh").is_file()
        scripts = {p.stem for p in (base / "scripts").glob("*.sh")}
        assert {"preflight", "weights", "image", "peer-ping"} <= scripts, scripts
        assert ("smoke" in scripts) == (index == 0), f"smoke test runs from the master only: {node} {scripts}"


@pytest.mark.parametrize("stack", sorted(USES_RANK_TABLE))
def test_rank_table_files_are_0640(rendered, stack):
    tables = [rendered[stack] / "rank_table.json", *rendered[stack].glob("*/files/**/*.json")]
    tables = [t for t in tables if "server_list" in t.read_text()]
    assert len(tables) == 1 + len(node_names(stack))
    for table in tables:
        assert table.stat().st_mode & 0o777 == 0o640, f"{table} is {oct(table.stat().st_mode & 0o777)}"


@pytest.mark.parametrize("stack", STACKS)
def test_scripts_are_executable(rendered, stack):
    for script in [*rendered[stack].glob("*/scripts/*.sh"), *rendered[stack].glob("*/docker-run.sh")]:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


# --------------------------------------------------------------------------
# Env files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_env_files_identical_but_for_declared_per_node_variables(rendered, stack):
    names = node_names(stack)
    texts = {n: (rendered[stack] / n / "env.sh").read_text() for n in names}
    declared = set()
    for node, text in texts.items():
        match = re.search(r"Identical on every node except: (.*)\.$", text, re.M)
        assert match, f"{node}/env.sh does not declare its per-node variables"
        declared = set() if match.group(1) == "nothing" else {v.strip() for v in match.group(1).split(",")}
        assert declared == PER_NODE_VARIABLES[stack], node
    first = exports(texts[names[0]])
    for node in names[1:]:
        other = exports(texts[node])
        assert set(other) == set(first), node
        differing = {k for k in first if first[k] != other[k]}
        assert differing == declared, f"{node}: {differing} differ, declared {declared}"
    # Apart from the header naming the node, the files are the same text.
    def body(text):
        return "\n".join(line for line in text.splitlines()
                         if not line.startswith("# Environment for stack")
                         and not any(line.startswith(f"export {v}=") for v in declared))
    assert len({body(t) for t in texts.values()}) == 1


# --------------------------------------------------------------------------
# Every script is valid bash
# --------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_script_passes_bash_n(rendered, stack):
    files = sorted([*rendered[stack].glob("*/scripts/*.sh"), *rendered[stack].glob("*/docker-run.sh"),
                    *rendered[stack].glob("*/env.sh")])
    assert files
    bad = {}
    for file in files:
        result = subprocess.run(["bash", "-n", str(file)], capture_output=True, text=True)
        if result.returncode != 0:
            bad[str(file.relative_to(rendered[stack]))] = result.stderr.strip()
    assert not bad, bad


@pytest.mark.parametrize("stack", STACKS)
def test_scripts_are_strict(rendered, stack):
    for script in rendered[stack].glob("*/scripts/*.sh"):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text, script


# --------------------------------------------------------------------------
# What runs inside the container can see and write what it needs
# --------------------------------------------------------------------------

# Env variables that name a file the engine reads inside the container.
FILE_VARIABLES = ("MINDFORMERS_MODEL_CONFIG", "RANKTABLEFILE", "RANK_TABLE_FILE", "ASCEND_RANK_TABLE_FILE_PATH")


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_files_the_container_reads_are_mounted(rendered, stack):
    """A file the program writes on the node and the engine reads in the
    container through an env variable must be visible there at that path."""
    for node in node_names(stack):
        env = exports((rendered[stack] / node / "env.sh").read_text())
        mounts = docker_mounts(docker_line(rendered[stack], node))
        for variable in FILE_VARIABLES:
            path = env.get(variable)
            if path is None or not (rendered[stack] / node / "files" / path.lstrip("/")).is_file():
                continue  # not written by the program (e.g. the image's own yaml)
            assert container_mount_for(path, mounts) is not None, (
                f"{stack} {node}: {variable}={path} is written on the host but no -v mount shows it "
                f"in the container; mounts: {mounts}")


@pytest.mark.parametrize("stack", STACKS)
def test_env_file_is_visible_in_the_container(rendered, stack):
    """Container scripts `source <remote_dir>/env.sh`."""
    for node in node_names(stack):
        mounts = docker_mounts(docker_line(rendered[stack], node))
        for script in (rendered[stack] / node / "scripts").glob("*.sh"):
            for path in re.findall(r"^source (\S+/env\.sh)$", script.read_text(), re.M):
                assert container_mount_for(path, mounts) is not None, f"{script.name}: {path} not mounted"


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-mindie", "tp8-pp2-300iduo", "tp16-lmdeploy"])
def test_serve_run_dir_is_writable_in_the_container(rendered, stack):
    """serve-start runs inside the container and writes its pid and log files
    under run_dir: that directory must not sit on a read-only mount."""
    for node in node_names(stack):
        script = rendered[stack] / node / "scripts" / "serve-start.sh"
        if not script.exists():
            continue
        match = re.search(r"^run_dir=(\S+)$", script.read_text(), re.M)
        assert match, script
        run_dir = match.group(1)
        mount = container_mount_for(run_dir, docker_mounts(docker_line(rendered[stack], node)))
        assert mount is None or not mount.endswith(":ro"), (
            f"{stack} {node}: serve-start writes {run_dir}/serve.pid and its log, but {run_dir} is under the "
            f"read-only mount -v {mount}")


# --------------------------------------------------------------------------
# Replacing the output directory
# --------------------------------------------------------------------------

def snapshot(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_render_replaces_an_existing_directory_whole(tmp_path, rendered):
    out = tmp_path / "out"
    (out / "node9" / "scripts").mkdir(parents=True)
    (out / "plan.json").write_text("{}")  # an earlier render's directory, with files this one does not write
    (out / "stale.txt").write_text("old")
    (out / "node9" / "scripts" / "old.sh").write_text("echo old")
    (out / ".ascend-inference-render.json").write_text(json.dumps(
        {"render_id": "0" * 32, "files": ["plan.json", "stale.txt", "node9/scripts/old.sh"]}))
    result = run_cli("render", "--stack", "tp16-mindie", "--out", out)
    assert result.returncode == 0, result.stderr
    assert not (out / "stale.txt").exists() and not (out / "node9").exists()
    assert snapshot(out) == snapshot(rendered["tp16-mindie"])


def test_failing_render_leaves_the_existing_directory_untouched(tmp_path):
    out = tmp_path / "out"
    first = run_cli("render", "--stack", "tp16-lmdeploy", "--out", out)
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    doc = load_stack_doc("tp16-lmdeploy")
    doc["config"][NS + "parallel"]["tp"] = 8
    bad = write_stack(tmp_path, "bad", doc)
    result = run_cli("render", "--stack", bad, "--out", out)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert snapshot(out) == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("out", bad.name)]
    assert leftovers == [], f"staging left behind: {leftovers}"


def test_render_is_deterministic(tmp_path, rendered):
    for stack in STACKS:
        out = tmp_path / stack
        assert run_cli("render", "--stack", stack, "--out", out).returncode == 0
        assert snapshot(out) == snapshot(rendered[stack]), stack


def test_render_into_a_new_nested_directory(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    result = run_cli("render", "--stack", "tp16-vllm-mindspore", "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "plan.json").is_file()


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------

CIPHERTEXT = "v1:Q2lwaGVyVGV4dE5ldmVyU2hvd25JblJlbmRlcmVkRmlsZXM="
TOKEN = "tok-3b9f0c1e-never-in-files"


@pytest.mark.parametrize("stack", ["tp16-mindie", "dp4-ep32-gpustack"])
def test_secrets_never_appear_in_rendered_files(tmp_path, stack):
    doc = load_stack_doc(stack)
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    path = write_stack(tmp_path, stack, pin_host_keys(doc))
    out = tmp_path / "out"
    result = run_cli("render", "--stack", path, "--out", out,
                     env={"GPUSTACK_TOKEN": TOKEN, "GPUSTACK_API_KEY": TOKEN})
    assert result.returncode == 0, result.stderr
    for name, content in snapshot(out).items():
        text = content.decode("utf-8", "replace")
        assert CIPHERTEXT not in text and CIPHERTEXT.split(":", 1)[1] not in text, name
        assert TOKEN not in text, name
        assert "PRIVATE KEY-----" not in text, name
    assert TOKEN not in result.stdout + result.stderr
    # The validate summary does not echo the secret either.
    checked = run_cli("validate", "--stack", path, "--require-secrets")
    assert checked.returncode == 0, checked.stderr
    assert CIPHERTEXT not in checked.stdout + checked.stderr


def test_gpustack_token_is_only_a_variable_reference(rendered):
    for node in node_names("dp4-ep32-gpustack")[1:]:
        line = docker_line(rendered["dp4-ep32-gpustack"], node)
        tokens = shlex.split(line)
        # An env variable the container takes from docker's caller, never an argument.
        assert "--token" not in tokens and "$GPUSTACK_TOKEN" not in line
        assert tokens[tokens.index("GPUSTACK_TOKEN") - 1] == "-e"


def test_gpustack_server_args_reach_only_the_server_container(tmp_path):
    """Extra `gpustack start` flags go to the server only, after the program's own."""
    doc = load_stack_doc("dp4-ep32-gpustack")
    doc["config"][NS + "engine"]["server_args"] = ["--disable-update-check"]
    path = write_stack(tmp_path, "gs2", doc)
    out = tmp_path / "out"
    done = run_cli("render", "--stack", str(path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert docker_line(out, "node0").endswith(
        "gpustack/gpustack:v2.3.0 --enable-worker --worker-name node0 --disable-update-check")
    assert "--disable-update-check" not in docker_line(out, "node1")


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-mindie", "dp2-tp8-ep16-vllm-ascend"])
def test_the_smoke_request_says_its_body_is_json(rendered, stack):
    """curl's -d alone sends application/x-www-form-urlencoded, which the engines' OpenAI
    servers do not read as JSON. Found by mutation testing: the headers' loop emptied
    (`for name, value in []`) passed every test."""
    script = (rendered[stack] / "node0" / "scripts" / "smoke.sh").read_text()
    assert "-H 'Content-Type: application/json' -d " in script, script


def test_smoke_request_is_the_runbooks_and_always_valid_json(rendered, tmp_path):
    """Runbook 000 asks "I am", runbook 003 "Mindspore is"; the body is JSON
    even when the model path holds a quote."""
    import json as json_module

    def body(script: str) -> dict:
        return json_module.loads(script.split("-d '", 1)[1].split("' http", 1)[0].replace("'\\''", "'"))

    assert body((rendered["tp16-vllm-mindspore"] / "node0" / "scripts" / "smoke.sh").read_text())["prompt"] == "I am"
    assert body((rendered["tp8-pp2-300iduo"] / "node0" / "scripts" / "smoke.sh").read_text())["prompt"] == (
        "Mindspore is")
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][NS + "model"]["path"] = '/data/models/r1 "w8a8"'
    path = write_stack(tmp_path, "quoted", doc)
    out = tmp_path / "out"
    assert run_cli("render", "--stack", path, "--out", out).returncode == 0
    assert body((out / "node0" / "scripts" / "smoke.sh").read_text())["model"] == '/data/models/r1 "w8a8"'
