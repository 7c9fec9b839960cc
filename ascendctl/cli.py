"""Offline commands: no Pulumi CLI, no cluster, no network.

    python -m ascendctl validate --stack NAME [--rank-table FILE]
    python -m ascendctl render   --stack NAME --out DIR
    python -m ascendctl preview  --stack NAME
    python -m ascendctl diff     --stack NAME --set KEY=VALUE ...
    python -m ascendctl stacks

Exit status: 0 on success, 2 when the stack has problems (one line each,
naming the stack file, the key and the fix; never a traceback), 3 when
`preview` or `diff` find a Pulumi SDK other than the pinned one installed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ascend_inference.errors import NodeFactError, StackError
from ascendctl.preview.versions import SdkVersionMismatch

if TYPE_CHECKING:
    from ascend_inference.loaded import LoadedStack

EXIT_STACK_PROBLEM = 2
EXIT_WRONG_SDK = 3


DEFAULT_STACK = "tp16-mindie"


def _stack_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=DEFAULT_STACK, metavar="NAME|FILE",
                        help="a stack name from stacks/ or a path to a Pulumi.<name>.yaml "
                             f"(default: {DEFAULT_STACK})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ascendctl",
        description="Plan, render, preview and diff ascend-inference stacks offline "
                    "(no Pulumi CLI, no NPU and no SSH needed). Real rollouts: `pulumi up`.",
        epilog="Exit status 2 means the stack file has problems; each is printed as "
               "'<file>: <key>: <what is wrong> (fix: <how>)'.")
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
                       description="Run the Pulumi program under pulumi.runtime mocks and print every "
                                   "resource (type, name, parent, dependencies, inputs; secrets masked), "
                                   "like `pulumi preview`.")
    _stack_arg(p)
    p.add_argument("--json", action="store_true", help="print the recorded graph as JSON")
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
        return EXIT_STACK_PROBLEM
    except NodeFactError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STACK_PROBLEM
    except SdkVersionMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_WRONG_SDK
    except BrokenPipeError:  # e.g. `... | head`
        return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import load_stack

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
    missing = [k for k in spec.secret_keys() if k not in loaded.secrets_present]
    if missing:
        print("  secrets not set yet (needed by `pulumi up`): "
              + ", ".join(f"ascend-inference:{k}" for k in missing))
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
    # (`--out ~` must not delete a home directory).
    if out.is_dir() and any(out.iterdir()) and not (out / "plan.json").is_file():
        return (f"render --out {out}: is a directory with other content (no plan.json from an earlier render), "
                "and render replaces DIR as a whole (fix: pass a new or empty directory, or one render wrote)")
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
        return EXIT_STACK_PROBLEM
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


def cmd_stacks(args: argparse.Namespace) -> int:
    from ascend_inference.stackfile import stack_names

    for name in stack_names():
        print(name)
    return 0


COMMANDS = {"validate": cmd_validate, "render": cmd_render, "preview": cmd_preview, "diff": cmd_diff,
            "stacks": cmd_stacks}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
