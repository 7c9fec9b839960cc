"""Offline commands: no Pulumi CLI, no cluster, no network.

    python -m ascendctl validate --stack NAME [--rank-table FILE]
    python -m ascendctl render   --stack NAME --out DIR
    python -m ascendctl preview  --stack NAME
    python -m ascendctl diff     --stack NAME --set KEY=VALUE ...
    python -m ascendctl graph    --stack NAME [--set KEY=VALUE ...] [--format svg|dot|mermaid] [--out FILE]
    python -m ascendctl stacks
    python -m ascendctl hostkeys --stack NAME [--write]

Exit status (EXIT_STATUS below, printed by --help, docs/cli.md): 0 on
success; 2 a usage error (argparse's own, and a `render --out` that cannot be
written); 3 the stack has problems (one line each, naming the stack file, the
key and the fix; never a traceback); 4 a node's facts contradict the stack
(one line naming the node); 5 `preview` or `diff` find a Pulumi SDK other
than the pinned one installed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from ascend_inference.errors import NodeFactError, StackError
from ascendctl.preview.versions import SdkVersionMismatch

if TYPE_CHECKING:
    from ascend_inference.loaded import LoadedStack

EXIT_USAGE = 2  # argparse exits with 2 on a usage error; a bad `render --out` is one too
EXIT_BAD_STACK = 3
EXIT_NODE_FAILURE = 4
EXIT_WRONG_SDK = 5

# What each exit status means, as --help prints it (and docs/cli.md lists it).
EXIT_STATUS = (
    (0, "success"),
    (EXIT_USAGE, "usage error: an unknown command or option, a missing value, a `render --out` that cannot "
                 "be written"),
    (EXIT_BAD_STACK, "the stack has problems, each printed as '<file>: <key>: <what is wrong> (fix: <how>)'"),
    (EXIT_NODE_FAILURE, "a node's facts contradict the stack or another node, printed as "
                        "'node <name>: <fact>: <what is wrong> (fix: <how>)'; `hostkeys`: a node did not answer"),
    (EXIT_WRONG_SDK, "preview/diff: the installed Pulumi SDK is not the pinned one (fix: "
                     "pip install -r requirements.txt)"),
)
# `graph --format svg` without Graphviz: the DOT was written instead.
EXIT_GRAPH_FALLBACK = 1


DEFAULT_STACK = "tp16-mindie"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def project_version() -> str:
    """The `version` of pyproject.toml's [project] table: the project is a
    Pulumi program run from its checkout, not an installed distribution, so
    there is no package metadata to ask."""
    import tomllib

    try:
        with PYPROJECT.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        return f"unknown ({PYPROJECT}: {error})"


def _stack_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=DEFAULT_STACK, metavar="NAME|FILE",
                        help="a stack name from stacks/ or a path to a Pulumi.<name>.yaml "
                             f"(default: {DEFAULT_STACK})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ascendctl",
        description="Plan, render, preview and diff ascend-inference stacks offline\n"
                    "(no Pulumi CLI, no NPU and no SSH needed). Real rollouts: `pulumi up`.",
        epilog="exit status:\n" + "\n".join(
            textwrap.fill(meaning, width=88, initial_indent=f"  {code}  ", subsequent_indent="     ")
            for code, meaning in EXIT_STATUS),
        # Keeps the exit-status list one entry per line.
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}",
                        help="print the project's version (pyproject.toml) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a stack: keys, types, layout, memory fit, rank table",
                       description="Check a stack file and its parallel plan. Prints a one-line summary "
                                   "(world size, layout, memory fit) or every problem found.")
    _stack_arg(p)
    p.add_argument("--require-secrets", action="store_true",
                   help="also fail when a secret the stack names is not set (use in CI before `pulumi up`)")
    p.add_argument("--rank-table", type=Path, metavar="FILE",
                   help="also check an HCCL rank table you bring (e.g. merged by hand or by hccl_tools.py + "
                        "merge_hccl.py) against HCCL's rules, the engine's limits and this stack: its servers, "
                        "rank 0 on the master, declared device IPs, world size, version for the chip")

    p = sub.add_parser("render", help="write everything the nodes would receive into a directory",
                       description="Write DIR/plan.json, DIR/rank_table.json (engines that use one) and "
                                   "DIR/<node>/{env.sh, docker-run.sh, files/..., scripts/...}. "
                                   "The directory is replaced as a whole, never left half-written.")
    _stack_arg(p)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory, replaced as a whole (default: out/<stack>)")

    p = sub.add_parser("preview", help="the Pulumi resource tree, under the SDK's mocks",
                       description="Run the Pulumi program under pulumi.runtime mocks and print every step "
                                   "in rollout order (each node's steps, the cluster gate, each node's chain), "
                                   "per node, with dependencies, options and inputs, like `pulumi preview`: "
                                   "secrets as [secret], what only a rollout learns as output<string> "
                                   "(docs/cli.md).")
    _stack_arg(p)
    p.add_argument("--json", action="store_true",
                   help="print the recorded graph as JSON (the mocks' stand-ins kept, listed in after_apply)")
    p.add_argument("--no-inputs", action="store_true", help="print only the tree")

    p = sub.add_parser("diff", help="which resources a config change would update or replace, and why",
                       description="Preview the stack as it is and with KEY=VALUE changes applied "
                                   "(KEY is a dotted path under ascend-inference:, e.g. "
                                   "engine.max_num_seqs=128 or nodes[1].device_ips[0]=198.51.100.99), "
                                   "and print what would change.")
    _stack_arg(p)
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE", required=True,
                   help="a config change, typed as `pulumi config set --path` types it: true/false and integers "
                        "are typed, anything else is a string that the schema then reads (0.5 for a number); "
                        "a value starting with [ or { is YAML")

    p = sub.add_parser("graph", help="draw the resource graph: per-node lanes, the cluster gate, the serving chain",
                       description="Write the stack's resource graph: every step in a lane per node, the cluster "
                                   "gate, the cluster-wide serving steps, an arrow to each step from what it waits "
                                   "for (bold: the step is replaced when that one is). With --set, what the change "
                                   "replaces/updates is filled and the arrows carrying a replacement are red. SVG "
                                   "needs Graphviz's `dot` (Debian package graphviz); DOT and Mermaid need nothing.")
    _stack_arg(p)
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                   help="a config change to highlight, as for `diff` (repeatable)")
    p.add_argument("--format", choices=["svg", "dot", "mermaid"], default="svg", help="default: svg")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="where to write it, `-` for standard output (default: out/graph-<stack>.<format>)")

    p = sub.add_parser("hostkeys", help="collect the nodes' SSH host keys to pin them in the stack",
                       description="Ask every node (and the jump host) for its SSH host key with ssh-keyscan "
                                   "and print each key's SHA256 fingerprint, to compare with what the node's "
                                   "administrator reads (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`). "
                                   "Nothing is written unless --write is given. This command uses the network.")
    _stack_arg(p)
    p.add_argument("--write", action="store_true",
                   help="write the collected keys into the stack file (nodes[].host_key, ssh.jump_host_key)")
    p.add_argument("--timeout", type=int, default=5, metavar="SECONDS",
                   help="how long ssh-keyscan waits for each host (default 5; hosts are asked in parallel)")

    p = sub.add_parser("leftovers", help="list (and remove) what a stack left on its nodes outside its state",
                       description="List the containers (label ascend-inference/stack=<stack>) and the stack's "
                                   "directory (<paths.remote_dir>/<stack>) on every node that the stack's Pulumi "
                                   "state does not hold: after an `up` killed mid-way, a lost state or `pulumi "
                                   "stack rm --force` (docs/recovery.md). Nodes are reached with the system ssh "
                                   "and the pinned host keys. This command uses the network.")
    _stack_arg(p)
    p.add_argument("--state", metavar="FILE",
                   help="the stack's state, as `pulumi stack export` writes it (`-` for standard input); "
                        "without it the stack has no state: everything it left is listed")
    p.add_argument("--remove", action="store_true", help="also remove what is listed")

    sub.add_parser("stacks", help="list the stacks in stacks/",
                   description="List the stack names found in stacks/ (Pulumi.<name>.yaml), one per line.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StackError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_STACK
    except NodeFactError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NODE_FAILURE
    except SdkVersionMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_WRONG_SDK
    except BrokenPipeError:  # e.g. `... | head`
        return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import load_stack, set_secret_command

    loaded = load_stack(args.stack, require_secrets=args.require_secrets)
    plan, spec = loaded.plan, loaded.spec
    # A brought rank table is checked first, so its problems are all that is printed.
    notes = check_brought_rank_table(loaded, args.rank_table) if args.rank_table is not None else None
    print(f"{loaded.file}: ok")
    print(f"  {len(spec.nodes)} x {spec.hardware.profile} = world {plan.world_size}; "
          f"tp {plan.tp} pp {plan.pp} dp {plan.dp} ep {plan.ep}; engine {spec.engine.kind}")
    if plan.pp > 1:
        print(f"  pipeline layer split {','.join(map(str, plan.pp_layer_split))}")
    print(f"  memory: {plan.memory.summary()}")
    for line in spec.insecure_warnings():
        print(f"  {line}")
    # Not an error without --require-secrets, but `pulumi up` needs them: the
    # same fix as the error gives (stackfile.secret_not_set).
    for key in spec.secret_keys():
        if key not in loaded.secrets_present:
            print(f"  secret not set yet (needed by `pulumi up`): ascend-inference:{key} "
                  f"(fix: run `{set_secret_command(spec, key)}`)")
    if notes is not None:
        print(f"{args.rank_table}: ok for stack {loaded.name}")
        for line in notes:
            print(f"  note: {line}")
    return 0


def check_brought_rank_table(loaded: LoadedStack, path: Path) -> list[str]:
    """A rank table the user brings, checked as HCCL, the engine and the
    stack would check it. Raises StackError with every problem; returns notes
    (what HCCL accepts but differs from the tables this program writes)."""
    from ascend_inference.brought_table import load_brought_table

    _table, notes = load_brought_table(loaded.spec, loaded.plan, loaded.file, path,
                                       key="--rank-table")
    return notes

def out_dir_problem(out: Path) -> str | None:
    """Why `render --out DIR` cannot write DIR, as one line, or None.

    Checked before anything is written. Mode bits do not stop root, so the
    writability test is `os.access`, which also answers for read-only mounts
    and pseudo file systems (/proc) where even root cannot create files."""
    if out.exists() and not out.is_dir():
        return (f"render --out {out}: is an existing file, not a directory (fix: pass a directory path; "
                "render writes DIR/plan.json and DIR/<node>/..., replacing DIR as a whole)")
    # DIR is replaced as a whole: never a directory render did not write
    # (`--out ~` must not delete a home directory), nor one where something
    # was added after the render (render_stack checks again before deleting).
    from ascend_inference.render import foreign_content

    foreign = foreign_content(out)
    if foreign is not None:
        return (f"render --out {out}: is a directory that {foreign}, and render replaces DIR as a whole "
                "(fix: pass a new or empty directory, or one render wrote)")
    # The directory is created (with its parents) next to where it goes, so
    # the nearest existing ancestor must be a writable directory.
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return (f"render --out {out}: {ancestor} is a file, so no directory can be created under it "
                "(fix: pass a path whose parent is a directory)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (f"render --out {out}: cannot write to {ancestor} (fix: pass a directory you may write to, "
                "e.g. under your home or /tmp)")
    return None


def cmd_render(args: argparse.Namespace) -> int:
    from ascend_inference.render import render_stack
    from ascend_inference.stackfile import load_stack

    loaded = load_stack(args.stack)
    out = args.out or Path("out") / loaded.name
    problem = out_dir_problem(out)
    if problem is None:
        try:
            written = render_stack(loaded, out)
        except OSError as error:
            # What the checks above cannot foresee (a full disk, a race): still one line.
            problem = (f"render --out {out}: {error.strerror or error} ({error.filename or out}) "
                       "(fix: pass a directory you may create and write to)")
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"rendered stack {loaded.name} ({loaded.spec.engine.kind}, world {loaded.plan.world_size}) "
          f"into {out}: {len(written)} files")
    for path in written:
        print(f"  {path}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ascendctl.preview.stack import preview_stack

    print(preview_stack(args.stack, as_json=args.json, show_inputs=not args.no_inputs))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from ascendctl.preview.stack import diff_stack

    print(diff_stack(args.stack, args.changes))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import resolve_stack
    from ascendctl.preview.picture import GraphvizMissing, to_dot, to_mermaid, to_svg
    from ascendctl.preview.stack import picture_of

    picture = picture_of(args.stack, args.changes)
    suffix = {"svg": "svg", "dot": "dot", "mermaid": "mmd"}[args.format]
    out = args.out or Path("out") / f"graph-{resolve_stack(args.stack)[0]}.{suffix}"
    status = 0
    if args.format == "svg":
        try:
            text = to_svg(picture)
        except GraphvizMissing as missing:
            # Fall back to what needs nothing, and say so in one line.
            text, status = to_dot(picture), EXIT_GRAPH_FALLBACK
            if str(out) != "-":
                out = out.with_suffix(".dot")
            print(f"graph: {missing}; wrote DOT instead to {out} (render it with `dot -Tsvg`)", file=sys.stderr)
    else:
        text = to_dot(picture) if args.format == "dot" else to_mermaid(picture)
    if str(out) == "-":
        sys.stdout.write(text)
        return status
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as error:
        print(f"error: graph --out {out}: {error.strerror or error} (fix: pass a file path you may write)",
              file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}: {len(picture.steps)} steps in {len(picture.lanes)} lanes, {len(picture.edges)} arrows")
    return status


def cmd_stacks(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import stack_names

    for name in stack_names():
        print(name)
    return 0


def cmd_hostkeys(args: argparse.Namespace) -> int:
    from ascend_inference import host_keys
    from ascend_inference.spec import host_key_fingerprint
    from ascend_inference.stackfile import load_stack

    loaded = load_stack(args.stack)
    timeout = max(1, min(int(args.timeout), 60))
    points = host_keys.endpoints(loaded.spec)
    try:
        offered = host_keys.scan([(host, port) for _, host, port in points], timeout=timeout)
    except (OSError, subprocess.SubprocessError) as error:
        print(f"error: hostkeys: ssh-keyscan failed: {error} (fix: install the OpenSSH client)", file=sys.stderr)
        return EXIT_USAGE
    pinned = {f"nodes[{i}]": n.host_key for i, n in enumerate(loaded.spec.nodes)}
    pinned["ssh.jump_host"] = loaded.spec.ssh.jump_host_key
    collected: dict[str, str] = {}
    unanswered = 0
    for what, host, port in points:
        where = what.split()[0]
        key = host_keys.preferred(offered.get((host, port), []))
        if key is None:
            unanswered += 1
            print(f"{what} {host}:{port}: no answer within {timeout}s")
            continue
        collected[where] = key
        old = pinned.get(where)
        state = ("pinned" if old == key else f"CHANGED from {host_key_fingerprint(old)}" if old
                 and old.split()[0] == key.split()[0] else "new")
        print(f"{what} {host}:{port}: {key.split()[0]} {host_key_fingerprint(key)} ({state})")
    if not args.write:
        print("Compare each fingerprint with the node's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), "
              "then run again with --write.")
        return 0 if not unanswered else EXIT_NODE_FAILURE
    path = Path(loaded.file)
    try:
        text = host_keys.write_host_keys(path.read_text(encoding="utf-8"), collected)
    except ValueError as error:
        print(f"error: {loaded.file}: {error}", file=sys.stderr)
        return EXIT_BAD_STACK
    path.write_text(text, encoding="utf-8")
    print(f"wrote {len(collected)} host key(s) into {loaded.file}")
    return 0 if not unanswered else EXIT_NODE_FAILURE


def cmd_leftovers(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import load_stack
    from ascendctl import leftovers

    loaded = load_stack(args.stack)
    state = None
    if args.state:
        source = "standard input" if args.state == "-" else args.state
        try:
            text = sys.stdin.read() if args.state == "-" else Path(args.state).read_text(encoding="utf-8")
            state = leftovers.read_state(text, source)
        except (OSError, ValueError) as error:
            print(f"error: leftovers --state: {error} (fix: pulumi stack export > FILE)", file=sys.stderr)
            return EXIT_USAGE
    problems = leftovers.run(loaded.spec, loaded.name, state, args.remove, sys.stdout)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_NODE_FAILURE if problems else 0


COMMANDS = {"validate": cmd_validate, "render": cmd_render, "preview": cmd_preview, "diff": cmd_diff,
            "graph": cmd_graph, "stacks": cmd_stacks, "hostkeys": cmd_hostkeys, "leftovers": cmd_leftovers}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
