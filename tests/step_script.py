"""What a remote step runs, read from its recorded inputs: `remote_step` sends
the script on stdin with the short command `bash -s` (so pulumi-command's
failure text quotes that, not the script), except for a step that takes data
on stdin, whose script stays its command (components/common.py)."""
from __future__ import annotations

from typing import Any

from components.common import SCRIPT_ON_STDIN, UNDO_READS_STDIN


def step_script(inputs: dict[str, Any]) -> Any:
    if inputs.get("create") == SCRIPT_ON_STDIN:
        return inputs.get("stdin")
    return inputs.get("create")


def undo_script(inputs: dict[str, Any]) -> Any:
    """The undo a remote step runs, without the line that reads the stdin it is sent."""
    delete = inputs.get("delete")
    if isinstance(delete, str):
        return delete.removeprefix(UNDO_READS_STDIN)
    return delete
