"""Command line: `python -m emulator --help`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ascend_inference.errors import StackError

from . import image as imagelib
from .cluster import DEFAULT_STATE_DIR, Cluster
from .faults import FAULT_KEYS, FaultError, parse_assignment
from .node import ClusterError
from .nodefs import Layout, atlas_300i_duo
from .userpath import UserPathError

DESCRIPTION = """\
Emulated Huawei Ascend cluster on this machine, for trying the Pulumi program
(and its node scripts) before touching real servers, the way `kind` serves
Kubernetes users. Each node is a set of Linux namespaces with its own address
(198.18.0.10, .11, ...), hostname (ascend-node0, ...), a real sshd (root, key
only), a real dockerd with the local image ascemu/runtime:latest, fake
/dev/davinci0..7, and stand-ins for npu-smi, hccn_tool and the serving
engines. Needs root.

  python -m emulator up --nodes 2       bring up node0, node1
  python -m emulator status             what runs, per node
  python -m emulator ssh node0          a shell on node0 over ssh
  python -m emulator exec node1 -- npu-smi info
  python -m emulator fault node1 link_down=3 tls_on=0,1
  python -m emulator fault node1 --clear
  python -m emulator down               remove everything `up` made
"""

FAULT_HELP = "faults (KEY=VALUE; VALUE is JSON or a comma list):\n" + "\n".join(
    f"  {k:<20} {v[1]}" for k, v in FAULT_KEYS.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"where the cluster's state lives (default {DEFAULT_STATE_DIR}, "
                             "or $ASCEMU_STATE_DIR); every command takes it")
    # Accepted after the subcommand too (`up --state-dir X`); SUPPRESS keeps a
    # value given before the subcommand from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def add_parser(name, **kw):
        return add(name, parents=[common], **kw)
    sub.add_parser = add_parser

    p = sub.add_parser("up", help="bring up N nodes (reuses a healthy cluster of the same size)",
                       description="Bring up N emulated nodes. Idempotent: a healthy cluster of the same size "
                                   "in the state dir is reused; anything else is refused with what to do. "
                                   "On failure everything made so far is torn down.")
    p.add_argument("--nodes", "-n", type=int, default=2, help="number of nodes (default 2)")
    p.add_argument("--prefix", default="ascemu",
                   help="name prefix of the bridge (<prefix>-br0) and namespaces (<prefix>-nodeN)")
    p.add_argument("--subnet", type=int, default=0,
                   help="node network 198.18.SUBNET.0/24 (default 0); two clusters need different "
                        "--subnet and --prefix")
    p.add_argument("--hostname-pattern", default="ascend-node{i}",
                   help="hostname of node i (default ascend-node{i})")
    p.add_argument("--duplicate-hostname", action="store_true",
                   help="give node1 the same hostname as node0 (the duplicate-hostname fault)")
    p.add_argument("--model-dir", action="append", default=None,
                   help="model fixture directory on every node (repeatable; default /data/models/deepseek-r1)")
    p.add_argument("--hardware", choices=["800-a2", "300i-duo"], default="800-a2",
                   help="the servers emulated: 800-a2 (8 x 910B3 with a RoCE fabric, the default) or 300i-duo "
                        "(4 cards x 2 310P3, no fabric: no hccn_tool)")

    p = sub.add_parser("down", help="stop every node and remove everything `up` made (also after a failed up)")

    sub.add_parser("status", help="show nodes and their health; exit 1 if something is wrong")

    p = sub.add_parser("exec", help="run a command inside a node (no ssh): exec NODE -- CMD ...")
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER)

    p = sub.add_parser("ssh", help="ssh into a node with the cluster's key: ssh NODE [-- CMD ...]")
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER)

    p = sub.add_parser("fault", help="show, set or clear a node's injected faults",
                       epilog=FAULT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("node")
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--clear", action="store_true", help="remove all faults from the node")

    p = sub.add_parser("docker-env", help="print the env that points the host's docker CLI at a node "
                                          "(eval \"$(python -m emulator docker-env node0)\")")
    p.add_argument("node")

    sub.add_parser("docker-args", help="print the docker settings the stand-in docker plugin adds on the emulator "
                                       "(base mounts, --privileged substitute) as JSON")

    sub.add_parser("env", help="print the exports that point the real `pulumi` at this cluster "
                               "(eval \"$(python -m emulator env)\")",
                   description="Print `export` lines: the pinned pulumi CLI (tools/pulumi-toolchain.sh), the "
                               "test stand-ins for the command and docker plugins with their guard variable, "
                               "a file backend under the state dir, the emulator's throwaway passphrase and "
                               "the ssh wrapper docker's ssh:// uses. Then run pulumi as a user does.")

    p = sub.add_parser("configure", help="point the selected stack at this cluster (pulumi config set-all --path)",
                       description="Run inside the project after `pulumi stack select --create NAME`: sets the "
                                   "stack's node hosts, hostnames, pinned host keys, device IPs and model path to "
                                   "the emulated cluster's with `pulumi config set-all --path`, and the SSH key with "
                                   "`pulumi config set --secret`. Every other setting stays the stack's own.")
    p.add_argument("--stack", required=True, help="stack name (as in stacks/Pulumi.NAME.yaml)")
    p.add_argument("--model-path", default=None, help="the model directory on the nodes "
                                                      "(default the emulator's fixture)")

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StackError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except (ClusterError, FaultError, UserPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_up(args) -> int:
    layout = Layout(model_dirs=tuple(args.model_dir)) if args.model_dir else None
    hardware = atlas_300i_duo() if args.hardware == "300i-duo" else None
    cluster = Cluster.up(args.nodes, args.state_dir, prefix=args.prefix, subnet=args.subnet, layout=layout,
                         hostnames=[args.hostname_pattern.format(i=i) for i in range(args.nodes)],
                         duplicate_hostname=args.duplicate_hostname, hardware=hardware)
    print(f"\nstate: {cluster.cluster_file}")
    for node in cluster.nodes:
        print(f"  {node.name:<6} {node.address:<13} {node.hostname:<14} ssh {node.ssh_target}  "
              f"docker {node.docker_host}")
    print(f"ssh:    ssh -F {cluster.ssh_config_path} node0   (key {cluster.ssh_key_path})")
    print(f"image:  {cluster.image} on every node; containers need the base mounts "
          "(python -m emulator docker-args)")
    print("note:   --privileged is not possible here; use --cap-add ALL --cap-drop SYS_RESOURCE "
          "--security-opt seccomp=unconfined instead")
    return 0


def cmd_down(args) -> int:
    problems = Cluster.down_state_dir(args.state_dir)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_status(args) -> int:
    try:
        cluster = Cluster.load(args.state_dir)
    except ClusterError as exc:
        print(exc)
        return 3
    info = cluster.describe()
    print(f"cluster in {info['state_dir']}: {info['status']}, bridge {info['bridge']}, image {info['image']}")
    ok = info["status"] == "up"
    for n in info["nodes"]:
        healthy = n["alive"] and n["sshd"] and n["dockerd"]
        ok = ok and healthy
        print(f"  {n['name']:<6} {n['address']:<13} hostname={n['hostname']} holder={n['holder_pid']} "
              f"{'alive' if n['alive'] else 'GONE'} sshd={'ok' if n['sshd'] else 'DOWN'} "
              f"dockerd={'ok' if n['dockerd'] else 'DOWN'} faults={json.dumps(n['faults']) if n['faults'] else '-'}")
    return 0 if ok else 1


def _command(cmd: list[str]) -> list[str]:
    return cmd[1:] if cmd and cmd[0] == "--" else cmd


def cmd_exec(args) -> int:
    cluster = Cluster.load(args.state_dir)
    cmd = _command(args.cmd) or ["/bin/bash"]
    return subprocess.call(cluster.nsenter_argv(args.node) + cmd, env=dict(os.environ, HOME="/root"))


def cmd_ssh(args) -> int:
    cluster = Cluster.load(args.state_dir)
    argv = cluster.ssh_args(args.node) + _command(args.cmd)
    if not _command(args.cmd):
        argv.insert(1, "-t")  # an interactive shell wants a tty
    os.execvp(argv[0], argv)


def cmd_fault(args) -> int:
    cluster = Cluster.load(args.state_dir)
    if args.clear:
        faults = cluster.clear_faults(args.node)
    elif args.assignments:
        faults = cluster.set_fault(args.node, **dict(parse_assignment(a) for a in args.assignments))
    else:
        faults = cluster.faults(args.node)
    print(json.dumps({cluster.node(args.node).name: faults}, indent=2, sort_keys=True))
    return 0


def cmd_docker_env(args) -> int:
    cluster = Cluster.load(args.state_dir)
    env = cluster.docker_env(args.node)
    print(f"export DOCKER_HOST={env['DOCKER_HOST']}")
    print(f"export PATH={cluster.bin_dir}:$PATH  # an ssh wrapper that knows the emulator key")
    return 0


def cmd_docker_args(args) -> int:
    print(json.dumps({"image": imagelib.IMAGE,
                      "base_mounts": [m.__dict__ for m in imagelib.base_mounts()],
                      "base_run_args": imagelib.base_docker_args(),
                      "privileged_substitute": imagelib.privileged_substitute()}, indent=2))
    return 0


def cmd_env(args) -> int:
    from emulator import plugins, userpath

    cluster = Cluster.load(args.state_dir)
    env = userpath.environment(cluster)
    keys = ["PATH", "PULUMI_BACKEND_URL", "PULUMI_HOME", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_SKIP_UPDATE_CHECK",
            "ASCEMU_DOCKER_SANDBOX", *sorted(k for k in env if k.startswith("ASCEND_INFERENCE_STANDIN"))]
    if plugins.use_real_plugins():
        keys.append(plugins.REAL_PLUGINS_VARIABLE)
        env[plugins.REAL_PLUGINS_VARIABLE] = "1"
    print(userpath.export_lines(env, keys))
    return 0


def cmd_configure(args) -> int:
    from ascend_inference.stackfile import load_stack
    from emulator import userpath

    cluster = Cluster.load(args.state_dir)
    loaded = load_stack(args.stack)
    model = args.model_path or userpath.MODEL_FIXTURE
    for argv, stdin in userpath.configure_commands(loaded, cluster, model_path=model):
        shown = " ".join(a if "=" not in a else a.split("=", 1)[0] + "=..." for a in argv[:6])
        print(f"$ {shown}{' ...' if len(argv) > 6 else ''}{' < ' + str(cluster.ssh_key_path) if stdin else ''}")
        done = subprocess.run(argv, input=stdin, text=True)
        if done.returncode != 0:
            print(f"error: {argv[0]} {argv[1]} {argv[2]} failed (exit {done.returncode}): is a stack selected "
                  f"(pulumi stack select --create {loaded.name}) and is this the project directory?",
                  file=sys.stderr)
            return 1
    return 0


COMMANDS = {"env": cmd_env, "configure": cmd_configure,
            "up": cmd_up, "down": cmd_down, "status": cmd_status,
            "exec": cmd_exec, "ssh": cmd_ssh, "fault": cmd_fault, "docker-env": cmd_docker_env,
            "docker-args": cmd_docker_args}

if __name__ == "__main__":
    sys.exit(main())
