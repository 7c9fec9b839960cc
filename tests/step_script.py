"""What a remote step runs, read from its recorded inputs: `remote_step` sends
the script on stdin with the short command `bash -s` (so pulumi-command's
failure text quotes that, not the script); a step that takes data on stdin
gets a secret stdin (its script, then the data) and its script, in the clear,
as the last of its triggers (components/common.py)."""
from __future__ import annotations

from typing import Any

from components.common import SCRIPT_ON_STDIN, UNDO_CLOSE, UNDO_ON_STDIN, UNDO_OPEN


def takes_data(inputs: dict[str, Any]) -> bool:
    """A step whose stdin is its script followed by data (a secret, not the plain script)."""
    return inputs.get("create") == SCRIPT_ON_STDIN and not isinstance(inputs.get("stdin"), str)


def _undo_and_rest(stdin: str) -> tuple[str | None, str]:
    """A step's stdin split into its undo (None without one) and the rest."""
    if not stdin.startswith(UNDO_OPEN):
        return None, stdin
    undo, close, rest = stdin[len(UNDO_OPEN):].partition(UNDO_CLOSE)
    assert close, "an undo with no end on a step's stdin"
    return undo, rest


def step_script(inputs: dict[str, Any]) -> Any:
    """A remote step's script (None for a resource that is no remote step)."""
    if inputs.get("create") != SCRIPT_ON_STDIN:
        return None
    if takes_data(inputs):
        return inputs["triggers"][-1]
    stdin = inputs.get("stdin")
    return _undo_and_rest(stdin)[1] if isinstance(stdin, str) else stdin


def undo_script(inputs: dict[str, Any]) -> Any:
    """The undo a remote step runs (`bash -s undo` with the step's stdin, which opens with it)."""
    if inputs.get("delete") != UNDO_ON_STDIN:
        return inputs.get("delete")
    stdin = inputs.get("stdin")
    stdin = getattr(stdin, "value", stdin)  # a step that takes data: its stdin is a secret
    return _undo_and_rest(stdin)[0] if isinstance(stdin, str) else stdin
