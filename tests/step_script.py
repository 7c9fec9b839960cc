"""What a remote step runs, read from its recorded inputs: `remote_step` sends
the script on stdin with the short command `bash -s` (so pulumi-command's
failure text quotes that, not the script), except for a step that takes data
on stdin, whose script stays its command (components/common.py)."""
from __future__ import annotations

from typing import Any

from components.common import SCRIPT_ON_STDIN


def step_script(inputs: dict[str, Any]) -> Any:
    if inputs.get("create") == SCRIPT_ON_STDIN:
        return inputs.get("stdin")
    return inputs.get("create")
