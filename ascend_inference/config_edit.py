"""Edit a JSON config file in place: set given keys at their paths, keep the rest.

Runbook 001 §6.2 edits 16 keys of the MindIE image's own `conf/config.json`
(with `vi` or `sed`); whatever else the image's version has stays as it is.
This module does the same on the JSON itself. An edit is `[path, value]`,
the path in the form `BackendConfig.ModelDeployConfig.ModelConfig[0].modelName`.
A path the file does not have is an error, never a key added silently: a key
that a MindIE version renamed or dropped would otherwise be ignored by it.

Stdlib only and importing nothing of this package: the config-edit script
(templates/config-edit.sh.j2) carries this file's source and runs it with the
container's own `python3`, so the code tested here is the code that runs.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any

# `name` or `name[0]` (a list element), one segment of a dotted path.
_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]+)(?P<indexes>(?:\[\d+\])*)$")


def parse_path(path: str) -> list[str | int]:
    """`A.B[0].c` -> ["A", "B", 0, "c"]."""
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if not match:
            raise ValueError(f"bad config path {path!r} at {segment!r}")
        steps.append(match.group("key"))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", match.group("indexes"))]
    return steps


def _has(node: Any, step: str | int) -> bool:
    if isinstance(step, int):
        return isinstance(node, list) and 0 <= step < len(node)
    return isinstance(node, dict) and step in node


def missing_paths(config: Any, edits: list[list[Any]]) -> list[str]:
    """The edit paths (in edit order) that `config` does not have."""
    missing = []
    for path, _value in edits:
        node = config
        for step in parse_path(path):
            if not _has(node, step):
                missing.append(path)
                break
            node = node[step]
    return missing


def apply_edits(config: Any, edits: list[list[Any]]) -> Any:
    """A copy of `config` with every edit set; ValueError naming the paths it lacks."""
    missing = missing_paths(config, edits)
    if missing:
        raise ValueError("no such key: " + ", ".join(missing))
    out = copy.deepcopy(config)
    for path, value in edits:
        steps = parse_path(path)
        node = out
        for step in steps[:-1]:
            node = node[step]
        node[steps[-1]] = value
    return out


def edit_file(original: str, edits_file: str, target: str) -> dict[str, Any]:
    """Apply `edits_file` (`{"edits": [[path, value], ...]}`) to the JSON in
    `original` and write the result to `target` atomically, mode 640 (runbook
    001 §6.3 keeps MindIE's files 640). Nothing is written when a path is
    missing. Returns what was done, for the step's output."""
    with open(original, encoding="utf-8") as f:
        config = json.load(f)
    with open(edits_file, encoding="utf-8") as f:
        edits = json.load(f)["edits"]
    missing = missing_paths(config, edits)
    if missing:
        return {"target": target, "missing": missing, "edited": []}
    text = json.dumps(apply_edits(config, edits), indent=4, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"target": target, "missing": [], "edited": [path for path, _ in edits]}


def edit_in_place(target: str, edits_file: str, original: str) -> dict[str, Any]:
    """Keep the image's own file as `original` (first run only: a rerun edits
    the same original again, so it is idempotent and a key dropped from the
    edits goes back to the image's value), then write the edited copy over
    `target`. When a path is missing nothing is left behind."""
    if not os.path.isfile(target):
        return {"target": target, "absent": True, "missing": [], "edited": []}
    kept_now = not os.path.exists(original)
    if kept_now:
        shutil.copy2(target, original)
    result = edit_file(original, edits_file, target)
    if result["missing"] and kept_now:
        os.unlink(original)
    return result


def main(argv: list[str]) -> int:
    """`python3 - TARGET EDITS ORIGINAL`: prints one JSON line (read by the program)."""
    target, edits_file, original = argv
    print(json.dumps(edit_in_place(target, edits_file, original)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
