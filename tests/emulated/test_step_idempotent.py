"""Every remote step kind, run twice, leaves the node as running it once
(issue 26: a step that ran but was not recorded, because the CLI was cut or
the network went, is run again by the next `pulumi up`).

The steps are the program's own: each one's script is read from the graph
the program builds under the SDK's mocks (ascendctl.preview.stack.record_stack,
tests/step_script.py), for the stack pointed at this cluster exactly as
`python -m emulator configure` points it (emulator/userpath.py
machine_settings). They run over the system `ssh` on node0 as pulumi-command
runs them (`bash -s`, the script on stdin), in the program's order, with no
`pulumi`: that keeps this module cheap. For each step the node's state (the
files the program writes, with modes and hashes; the containers and images;
the processes, on the node and in its containers) after the second run must
be the state after the first; the same for its undo (`delete`), run twice
after every step has run.

The container itself is the docker provider's resource, not a script: it is
made here from the program's recorded inputs with the docker stand-in's own
translation to `docker create` (emulator/plugins/docker.py `_flag_args`), so
the steps that run in it find it; a create that ran but was not recorded is
what `ascendctl leftovers` removes (docs/recovery.md).
"""
from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.values import Secret
from emulator import image as imagelib
from emulator.plugins.docker import _flag_args
from emulator.userpath import machine_settings, sandbox_file, write_sandbox
from tests.emulated.conftest import node_ssh, own_cluster
from tests.step_script import step_script, undo_script

pytestmark = pytest.mark.emulated

NODE = "node0"
# Each stack's node0 steps in the program's order (the create order of `pulumi up`): every
# kind of step the program runs on a node, the host's and the container's. The first
# in-container step of each finds the container made (CONTAINER_FIRST).
STEPS = {
    "tp16-vllm-mindspore": ["node0-weights", "node0-env", "node0-name-free", "cluster-verified", "node0-mounts",
                            "node0-container-check", "node0-ray-head", "node0-serve"],
    "tp16-mindie": ["node0-fix-tls", "node0-weights", "node0-image", "node0-env", "node0-file-1",
                    "node0-name-free", "node0-rank-table", "node0-mounts", "node0-config-edit"],
}
CONTAINER_FIRST = {"tp16-vllm-mindspore": "node0-container-check", "tp16-mindie": "node0-config-edit"}
# The steps with an undo (`delete`), in the order `pulumi destroy` runs them; the others
# are checks, or keep their work on delete (weights, a loaded image, the TLS switch).
UNDOS = [("tp16-vllm-mindspore", step) for step in ("node0-serve", "node0-ray-head", "cluster-verified", "node0-env")] \
    + [("tp16-mindie", step) for step in ("node0-config-edit", "node0-rank-table", "node0-file-1", "node0-env")]
# Where the program writes on a node, besides the stack's directory (/etc/ascend-inference/STACK):
# the rank table MindIE reads (its stack's `rank_table_path`), the image tar's directory, and
# the emulated devices' settings (`hccn_tool -tls -s` writes the node's faults.json, emulator/faults.py).
SETTLE_READS = 5
HOST_PATHS = ["/etc/ascend-inference", "/data/hm", "/data/images", "/run/ascemu/faults.json"]
# What the in-container steps edit in the container: MindIE's config.json and its kept original.
CONTAINER_PATHS = ["/usr/local/Ascend/mindie/latest/mindie-service/conf"]

# The node's state as one JSON document: files (path -> "mode sha256", directories
# "mode dir"), containers, images, and the processes on the node (which include the
# containers' own) as their command lines with numbers and ids blanked: a Ray or an
# engine restarted in its place has new ports, session names and pids (Ray's settings
# come base64-encoded: blanked whole), and is still one of its kind. The ssh session
# running this is left out.
SNAPSHOT = r'''
import hashlib, json, os, re, subprocess, sys
paths, container_paths = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def file_entry(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{os.lstat(path).st_mode:o} {digest.hexdigest()}"
def host_tree(roots):
    out = {}
    for root in roots:
        if os.path.isfile(root):
            out[root] = file_entry(root)
            continue
        for top, _dirs, files in os.walk(root):
            out[top] = f"{os.lstat(top).st_mode:o} dir"
            out.update({os.path.join(top, f): file_entry(os.path.join(top, f)) for f in files})
    return out
def container_tree(name, roots):
    run = lambda *a: subprocess.run(["docker", "exec", name, *a], capture_output=True, text=True).stdout
    out = {f"{name}:{p}": f"{m} {k}" for p, k, m in
           (l.split("\t") for l in run("find", *roots, "-printf", "%p\t%y\t%m\n").splitlines())}
    for line in run("find", *roots, "-type", "f", "-exec", "sha256sum", "{}", "+").splitlines():
        digest, path = line.split(None, 1)
        out[f"{name}:{path}"] += " " + digest
    return out
state = {"files": host_tree([p for p in paths if os.path.exists(p)])}
docker = lambda *a: subprocess.run(["docker", *a], capture_output=True, text=True, check=True).stdout.split("\n")
state["containers"] = sorted(l for l in docker("ps", "-a", "--format", "{{.Names}} {{.Image}} {{.State}}") if l)
state["images"] = sorted(l for l in docker("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}") if l)
for name in [l.split()[0] for l in state["containers"] if l.endswith(" running")]:
    state["files"].update(container_tree(name, container_paths))
mine, pid = set(), os.getpid()
while pid > 1:
    mine.add(pid)
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
procs = []
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) in mine:
        continue
    try:
        args = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue
    if args and not args.startswith(("sshd: ", "docker ")):
        # Ray passes its settings base64-encoded (`--config_list=...`, the session name in them).
        args = re.sub(r"=[A-Za-z0-9+/]{24,}={0,2}(?= |$)", "=<encoded>", args)
        procs.append(re.sub(r"[0-9a-f]{8,}|\d+", "#", args))
state["processes"] = sorted(procs)
print(json.dumps(state, sort_keys=True))
'''


def plain(value: Any) -> Any:
    """Recorded inputs as a provider receives them: secret wrappers removed."""
    if isinstance(value, Secret):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def rendered_steps(stack: str, cluster) -> dict[str, dict]:
    """name -> recorded inputs of the stack's resources, the stack pointed at `cluster`."""
    base = load_stack(stack)
    config = base.raw_config
    for key, value in machine_settings(base, cluster).items():
        config = apply_change(config, f"{key.removeprefix(NAMESPACE + ':')}={value}", base.file)
    return {r.name: plain(r.inputs) for r in record_stack(loaded_with_config(base, config)).resources}


def snapshot(cluster) -> dict:
    """The node's state once its processes are settled: read until two reads in a row
    find the same processes (a Ray just started may still be starting its agents), at
    most SETTLE_READS reads."""
    state = read_state(cluster)
    for _ in range(SETTLE_READS - 1):
        again = read_state(cluster)
        if again["processes"] == state["processes"]:
            return again
        state = again
    return state


def read_state(cluster) -> dict:
    done = cluster.ssh(NODE, "python3 - " + shlex.join([json.dumps(HOST_PATHS), json.dumps(CONTAINER_PATHS)]),
                       input=SNAPSHOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_script(cluster, script: str, node: str = NODE) -> str:
    """A step's script as pulumi-command runs it: `bash -s` over ssh, the script on stdin."""
    done = cluster.ssh(node, "bash -s", input=script, timeout=600)
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def differences(first: dict, second: dict) -> dict:
    """What differs between two snapshots, per part: (only in the first, only in the second)."""
    out = {}
    for part in first:
        a, b = first[part], second[part]
        if isinstance(a, dict):
            a, b = [f"{k} {v}" for k, v in a.items()], [f"{k} {v}" for k, v in b.items()]
        only_a = [x for x in a if x not in b] + [x for x in set(a) if a.count(x) > b.count(x)]
        only_b = [x for x in b if x not in a] + [x for x in set(b) if b.count(x) > a.count(x)]
        if only_a or only_b:
            out[part] = (sorted(set(only_a)), sorted(set(only_b)))
    return out


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "idempotent", prefix="ptidem", subnet=246) as c:
        write_sandbox(c)
        yield c


def stack_ready(cluster, stack: str, node: str = NODE) -> None:
    """What the stack finds on a node before its steps: its image under its name (what a
    registry pull gives), or the image's tar at its path (runbook 001 loads it from there)."""
    c = load_stack(stack).spec.container
    image = shlex.quote(c.image)
    if c.image_tar:
        tar = shlex.quote(c.image_tar)
        node_ssh(cluster, node, f"mkdir -p $(dirname {tar}) && docker tag {imagelib.IMAGE} {image} && "
                                f"docker save -o {tar} {image} && docker rmi {image} >/dev/null")
    else:
        node_ssh(cluster, node, f"docker tag {imagelib.IMAGE} {image}")


def create_container(cluster, stack: str, inputs: dict, node: str = NODE) -> None:
    """`docker create` + `docker start` of the program's container, as the docker stand-in does.
    Its image is the stack's by name (under the mocks it is the image step's made-up id)."""
    sandbox = json.loads(sandbox_file(cluster).read_text())
    inputs = dict(inputs, image=load_stack(stack).spec.container.image)
    argv = _flag_args(inputs, sandbox, cluster.node(node).address, [inputs["image"]])
    ident = node_ssh(cluster, node, "docker create " + shlex.join(argv)).split()[-1]
    node_ssh(cluster, node, f"docker start {ident}")


def second_ray_node(cluster, stack: str, inputs: dict) -> None:
    """node1 joins node0's Ray (its env file, its container, its Ray worker, by the
    program's own steps): a TP16 engine needs the 16 NPUs of both nodes, and one that
    exits for want of them is rightly started again by the engine start's second run."""
    stack_ready(cluster, stack, "node1")
    run_script(cluster, step_script(inputs["node1-env"]), "node1")
    create_container(cluster, stack, inputs["node1-container"], "node1")
    run_script(cluster, step_script(inputs["node1-ray-worker"]), "node1")


CASES = [(stack, step) for stack, steps in STEPS.items() for step in steps]


@pytest.fixture(scope="module")
def rendered(cluster):
    return {stack: rendered_steps(stack, cluster) for stack in STEPS}


@pytest.mark.parametrize(("stack", "step"), CASES, ids=[f"{s}:{t}" for s, t in CASES])
def test_a_step_run_twice_leaves_the_node_as_run_once(cluster, rendered, stack, step):
    inputs = rendered[stack]
    if step == STEPS[stack][0]:
        stack_ready(cluster, stack)
    if step == CONTAINER_FIRST[stack]:
        # The provider's create, once (its rerun is the provider's: see the module's doc).
        create_container(cluster, stack, inputs["node0-container"])
    if step == "node0-serve":
        second_ray_node(cluster, stack, inputs)
    script = step_script(inputs[step])
    run_script(cluster, script)
    once = snapshot(cluster)
    run_script(cluster, script)
    twice = snapshot(cluster)
    assert differences(once, twice) == {}, f"{stack} {step}"


@pytest.mark.parametrize(("stack", "step"), UNDOS, ids=[f"{s}:{t}" for s, t in UNDOS])
def test_an_undo_run_twice_leaves_the_node_as_undone_once(cluster, rendered, stack, step):
    undo = undo_script(rendered[stack][step])
    assert undo, f"{stack} {step} has no undo"
    before = snapshot(cluster)
    run_script(cluster, undo)
    once = snapshot(cluster)
    run_script(cluster, undo)
    twice = snapshot(cluster)
    assert differences(once, twice) == {}, f"{stack} {step}"
    assert differences(before, once), f"{stack} {step}: its undo changed nothing"
