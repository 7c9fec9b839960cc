"""Every remote step kind, run twice, leaves the node as running it once
(issue 26: a step that ran but was not recorded, because the CLI was cut or
the network went, is run again by the next `pulumi up`).

The steps are the program's own: each one's script is read from the graph
the program builds under the SDK's mocks (ascendctl.preview.stack.record_stack,
tests/step_script.py), for the stack pointed at this cluster exactly as
`python -m emulator configure` points it (emulator/userpath.py
machine_settings). They run over the system `ssh` on their node as
pulumi-command runs them (`bash -s`, the script on stdin), in the program's
order, with no `pulumi`: that keeps this module cheap. For each step the
node's state (the files the program writes, with modes and hashes; the
containers and images; the processes, on the node and in its containers)
after the second run must be the state after the first; the same for its
undo (`delete`), run twice after the stack's steps have run, in the order
`pulumi destroy` runs them. One stack at a time: its steps, then its undos.

The steps that start something are also looked at as a user would: Ray's
worker start (node1) leaves one raylet on each node and the program's own
`ray status` check finding both nodes' 16 NPUs; MindIE's engine start on
each node leaves one engine process there and the same pid file.

The containers themselves are the docker provider's resources, not scripts
(GPUStack's server and workers are such containers): each is made here from
the program's recorded inputs with the docker stand-in's own translation to
`docker create` (emulator/plugins/docker.py `_flag_args`), so the steps that
run in it find it; a create that ran but was not recorded is what `ascendctl
leftovers` removes (docs/recovery.md). GPUStack's host steps run here; its
server's secret readers and backends step need the real GPUStack server
running, which is not started here (docs/recovery.md says why).
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
VLLM, MINDIE, GPUSTACK = "tp16-vllm-mindspore", "tp16-mindie", "dp4-ep32-gpustack"
# Each stack's steps in the program's order (the create order of `pulumi up`): every kind
# of step the program runs on a node, the host's and the container's, on the node its name
# says (node0, the master, for the cluster-wide ones). The first in-container step of each
# finds its container made (CONTAINER_FIRST); NODE_READY says what the other node has from
# the program before a step there or one that needs it.
STEPS = {
    VLLM: ["node0-weights", "node0-env", "node0-name-free", "cluster-verified", "node0-mounts",
           "node0-container-check", "node0-ray-head", "node1-ray-worker", "node0-serve"],
    MINDIE: ["node0-fix-tls", "node0-weights", "node0-image", "node0-env", "node0-file-1",
             "node0-name-free", "node0-rank-table", "node0-mounts", "node0-config-edit", "node0-serve", "node1-serve"],
    # GPUStack's server and workers are containers (the provider's), its model the program's
    # dynamic resource: its remote steps are the host's, the server's two secret readers and
    # the backends step (its create does nothing; its undo removes the model's backends).
    # The readers and the backends step need the real server running: not here (docs/recovery.md).
    GPUSTACK: ["node0-weights", "node0-env", "node0-file-1", "node0-name-free", "cluster-verified", "node0-mounts"],
}
CONTAINER_FIRST = {VLLM: "node0-container-check", MINDIE: "node0-config-edit"}
# (stack, step) -> node1's own steps, run once before it: node1 joins node0's Ray (a TP16
# engine needs the 16 NPUs of both nodes, and one that exits for want of them is rightly
# started again by the engine start's second run); MindIE's daemons start on every node,
# each once its node has its files, rank table, container and config edit.
NODE_READY = {
    (VLLM, "node1-ray-worker"): ["node1-env", "node1-container"],
    (MINDIE, "node0-serve"): ["node1-fix-tls", "node1-weights", "node1-image", "node1-env", "node1-file-1",
                              "node1-rank-table", "node1-mounts", "node1-container", "node1-config-edit"],
}
# What `pulumi up` runs right after an engine start, run here after its first run: the
# readiness wait, so that the node is looked at once the engine has done starting (its log,
# Ray's workers). Not after the second run: its requests would add lines to the engine's log.
# (MindIE's master is ready only once node1's daemon has joined: after node1's start.)
READY_AFTER = {(VLLM, "node0-serve"): "serving-ready", (MINDIE, "node1-serve"): "serving-ready"}
# The steps with an undo (`delete`), in the order `pulumi destroy` runs them; the others
# are checks, or keep their work on delete (weights, a loaded image, the TLS switch).
UNDOS = {
    VLLM: ["node0-serve", "node1-ray-worker", "node0-ray-head", "cluster-verified", "node0-env"],
    MINDIE: ["node1-serve", "node0-serve", "node0-config-edit", "node0-rank-table", "node0-file-1", "node0-env"],
    GPUSTACK: ["node0-file-1", "cluster-verified", "node0-env"],
}
# What a stack's first nodes need to fit this 2-node cluster, as `pulumi config set --path`
# would make them (test_gpustack_rollout.py's shape): DP2 x TP8 x EP16, W8A8 weights.
SHAPES = {GPUSTACK: ["model.quantization=w8a8", "parallel.dp=2", "parallel.ep=16"]}
# The engine process each stack's serving start leaves on its node (one, after either run).
ENGINE_PROCESS = {VLLM: "vllm-mindspore serve", MINDIE: "mindieservice_daemon"}
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
    # Nothing from a container without `find`: docker's error is on stdout.
    def run(*a):
        done = subprocess.run(["docker", "exec", name, *a], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""
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
        args = re.sub(r"[0-9a-f]{8,}|\d+", "#", args)
        # A Ray worker started again in the head's session numbers its files in it
        # (raylet.1.out, plasma_store.1): still one of each.
        args = re.sub(r"([a-z_]+)\.#(?=\.(?:out|err|log)\b| |$)", r"\1", args)
        procs.append(args)
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
    """name -> recorded inputs of the stack's resources, the stack pointed at `cluster`
    (a stack of more nodes cut to the cluster's, as PulumiRollout `nodes` does)."""
    base = load_stack(stack)
    count = len(cluster.nodes)
    config = dict(base.raw_config)
    config[f"{NAMESPACE}:nodes"] = config[f"{NAMESPACE}:nodes"][:count]
    for change in SHAPES.get(stack, []):
        config = apply_change(config, change, base.file)
    for key, value in machine_settings(base, cluster, node_count=count).items():
        config = apply_change(config, f"{key.removeprefix(NAMESPACE + ':')}={value}", base.file)
    return {r.name: plain(r.inputs) for r in record_stack(loaded_with_config(base, config)).resources}


def node_of(step: str) -> str:
    """The node a step runs on: the one its name starts with, else the master."""
    first = step.split("-", 1)[0]
    return first if first.startswith("node") else NODE


def snapshot(cluster, node: str = NODE) -> dict:
    """The node's state once settled: read until two reads in a row find the same state
    (a Ray just started may still be starting its agents, an engine writing its first log
    lines), at most SETTLE_READS reads."""
    state = read_state(cluster, node)
    for _ in range(SETTLE_READS - 1):
        again = read_state(cluster, node)
        if again == state:
            return again
        state = again
    return state


def read_state(cluster, node: str) -> dict:
    done = cluster.ssh(node, "python3 - " + shlex.join([json.dumps(HOST_PATHS), json.dumps(CONTAINER_PATHS)]),
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


def assert_same(once: dict, twice: dict, what: str) -> None:
    found = differences(once, twice)
    assert not found, f"{what}: after the second run, (only after the first, only after the second): " \
                      + json.dumps(found, indent=1)


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


def node_ready(cluster, stack: str, inputs: dict, steps: list[str]) -> None:
    """The program's own steps of another node, each run once (its container made as the
    provider makes it), after what the stack finds there before them."""
    node = node_of(steps[0])
    stack_ready(cluster, stack, node)
    for step in steps:
        if step == f"{node}-container":
            create_container(cluster, stack, inputs[step], node)
        else:
            run_script(cluster, step_script(inputs[step]), node)


@pytest.fixture(scope="module")
def rendered(cluster):
    return {stack: rendered_steps(stack, cluster) for stack in STEPS}


def looked_at(cluster, inputs: dict, stack: str, step: str, output: str, state: dict) -> dict:
    """What a user sees of a step that starts something, beyond the node's state (`state`)."""
    if step == "node1-ray-worker":
        # One raylet on each node, and the program's own check: both nodes' NPUs in `ray status`.
        raylets = {node: sum(p.split()[0].endswith("/raylet") for p in found["processes"])
                   for node, found in (("node0", snapshot(cluster, "node0")), ("node1", state))}
        return {"raylets": raylets, "ray status": json.loads(run_script(cluster, step_script(inputs["ray-verify"])))}
    if step.endswith("-serve"):
        # One engine process on the node, its pid (the pid file's) the same.
        started = json.loads(output.strip().splitlines()[-1])
        return {"engines": sum(ENGINE_PROCESS[stack] in p for p in state["processes"]), "pid": started["pid"]}
    return {}


# The cases in the order they run: each stack's steps, then their undos, stack after stack.
CASES = [(stack, action, step) for stack in STEPS
         for action, steps in (("run", STEPS[stack]), ("undo", UNDOS[stack])) for step in steps]


@pytest.mark.parametrize(("stack", "action", "step"), CASES, ids=[f"{s}:{a}:{t}" for s, a, t in CASES])
def test_a_step_or_its_undo_run_twice_leaves_the_node_as_run_once(cluster, rendered, stack, action, step):
    inputs = rendered[stack]
    node = node_of(step)
    if action == "undo":
        undo = undo_script(inputs[step])
        assert undo, f"{stack} {step} has no undo"
        before = snapshot(cluster, node)
        run_script(cluster, undo, node)
        once = snapshot(cluster, node)
        run_script(cluster, undo, node)
        twice = snapshot(cluster, node)
        assert_same(once, twice, f"{stack} {step}'s undo")
        assert differences(before, once), f"{stack} {step}: its undo changed nothing"
        return
    if step == STEPS[stack][0] and stack != GPUSTACK:
        stack_ready(cluster, stack)
    if step == CONTAINER_FIRST.get(stack):
        # The provider's create, once (its rerun is the provider's: see the module's doc).
        create_container(cluster, stack, inputs["node0-container"])
    if (stack, step) in NODE_READY:
        node_ready(cluster, stack, inputs, NODE_READY[stack, step])
    script = step_script(inputs[step])
    first = run_script(cluster, script, node)
    if (stack, step) in READY_AFTER:
        run_script(cluster, step_script(inputs[READY_AFTER[stack, step]]))
    once = snapshot(cluster, node)
    seen_once = looked_at(cluster, inputs, stack, step, first, once)
    second = run_script(cluster, script, node)
    twice = snapshot(cluster, node)
    seen_twice = looked_at(cluster, inputs, stack, step, second, twice)
    assert_same(once, twice, f"{stack} {step}")
    assert seen_once == seen_twice, f"{stack} {step}"
    if step == "node1-ray-worker":
        assert seen_once["raylets"] == {"node0": 1, "node1": 1}
        assert seen_once["ray status"] == {"npu": 16, "nodes": 2}
    elif step.endswith("-serve"):
        assert seen_once["engines"] == 1, f"{stack} {step}"
