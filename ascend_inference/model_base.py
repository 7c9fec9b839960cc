"""The base every stack-file model derives from: strict, closed, immutable.

Strict so that `tp: "16"` is an error rather than a silent cast; closed
(`extra="forbid"`) so that a misspelt key is reported instead of ignored.

One relaxation, because the stack file is also written by the Pulumi CLI:
`pulumi config set --path` stores only booleans and integers as typed values
and everything else as a string. So `engine.cache_max_entry_count 0.5` arrives
as the string "0.5", and `engine.device_port 16667` as the integer 16667. A
number field takes a string that is a decimal number, a string field takes an
integer; nothing else is cast (an integer field still refuses "16", which the
CLI never writes).
"""
from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _kinds(annotation: Any) -> set[type]:
    """The plain types a field accepts: float, str, ... (through Optional,
    Annotated and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    return {annotation} if isinstance(annotation, type) else set()


def as_cli_typed(kinds: set[type], value: Any) -> Any:
    """A value as the schema wants it, where the CLI's typing made it a string
    or an integer; anything else is returned unchanged for pydantic to judge."""
    if float in kinds and int not in kinds and isinstance(value, str) and _DECIMAL.match(value.strip()):
        return float(value)
    if str in kinds and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# The error type of `invalid`; stackfile turns it into a Problem with its fix.
INVALID_VALUE = "stack_value"
# Between message and fix in an `invalid` error. Not a context value: pydantic
# fills `{name}` in a message from the context, and a message quotes the
# user's value, which may contain such braces.
FIX_SEPARATOR = "\n(fix) "


def invalid(message: str, fix: str) -> PydanticCustomError:
    """Raise this from a field validator to report `message` with a specific
    `fix` (a plain ValueError only gets a generic "see docs/stack-file.md")."""
    return PydanticCustomError(INVALID_VALUE, message + FIX_SEPARATOR + fix)


class StrictModel(BaseModel):
    # No infinite or NaN number: `weights_gb: .inf` would overflow the
    # memory plan's arithmetic (`int(inf)`) instead of being refused.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _cli_typed_values(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {key: as_cli_typed(_kinds(fields[key].annotation), value) if key in fields else value
                for key, value in data.items()}
