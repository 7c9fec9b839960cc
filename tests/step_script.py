"""What a remote step runs, read from its recorded inputs: `remote_step` sends
the script on stdin with the short command `bash -s` (so pulumi-command's
failure text quotes that, not the script); a step that takes data on stdin
gets a secret stdin (its script, then the data) and its script, in the clear,
as the last of its triggers (components/common.py)."""
from __future__ import annotations

from typing import Any

from components.common import SCRIPT_ON_STDIN, UNDO_READS_STDIN


def takes_data(inputs: dict[str, Any]) -> bool:
    """A step whose stdin is its script followed by data (a secret, not the plain script)."""
    return inputs.get("create") == SCRIPT_ON_STDIN and not isinstance(inputs.get("stdin"), str)


def step_script(inputs: dict[str, Any]) -> Any:
    """A remote step's script (None for a resource that is no remote step)."""
    if inputs.get("create") != SCRIPT_ON_STDIN:
        return None
    if takes_data(inputs):
        return inputs["triggers"][-1]
    return inputs.get("stdin")


def undo_script(inputs: dict[str, Any]) -> Any:
    """The undo a remote step runs, without the line that reads the stdin it is sent."""
    delete = inputs.get("delete")
    if isinstance(delete, str):
        return delete.removeprefix(UNDO_READS_STDIN)
    return delete
