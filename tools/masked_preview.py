"""A pull request comment from `pulumi preview --json`: what changes, and
which inputs change, never their values (rendered scripts, env files and
rank tables are not posted where anyone may read them).

    pulumi preview --json --stack S > preview.json
    python3 tools/masked_preview.py preview.json STACK > comment.md

Reads the documented fields of the engine's JSON preview (`steps[].op`,
`steps[].urn`, `steps[].diffReasons`, `changeSummary`); anything else in the
file is ignored, so no value can reach the comment.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SHOWN_OPS = ("create", "update", "replace", "create-replacement", "delete", "delete-replaced")


def summary(document: dict, stack: str) -> str:
    lines = [f"### `pulumi preview` of {stack}", ""]
    counts = document.get("changeSummary") or {}
    lines.append(", ".join(f"{op}: {n}" for op, n in sorted(counts.items())) or "no changes")
    lines += ["", "| op | resource | inputs that differ |", "|---|---|---|"]
    for step in document.get("steps") or []:
        op = str(step.get("op", ""))
        if op not in SHOWN_OPS:
            continue
        name = str(step.get("urn", "")).rsplit("::", 1)[-1]
        reasons = ", ".join(sorted(str(r) for r in step.get("diffReasons") or []))
        lines.append(f"| {op} | `{name}` | {reasons or '-'} |")
    lines += ["", "Values are not shown here: run `python3 -m ascendctl diff` or `pulumi preview --diff` locally."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: masked_preview.py PREVIEW.json STACK", file=sys.stderr)
        return 2
    try:
        document = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"error: {argv[0]}: not a `pulumi preview --json` output ({error})", file=sys.stderr)
        return 2
    print(summary(document if isinstance(document, dict) else {}, argv[1]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
