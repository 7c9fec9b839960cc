"""Values in a recorded graph that are not plain data: secrets (never printed),
preview unknowns ("known after apply"), whole-resource references, and the
masked JSON form every printout uses. Everything else in the package builds on
these; nothing here knows about the Pulumi SDK."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SECRET_MASK = "[secret]"
UNKNOWN_TEXT = "(known after apply)"


class Secret:
    """A secret value.  ``repr``/``str`` never show the value; compare with ``==``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:  # values may be unhashable; secrets are rarely dict keys
        return hash(("secret", json.dumps(_plain(self.value), sort_keys=True, default=str)))

    def __repr__(self) -> str:
        return f"Secret({SECRET_MASK})"

    __str__ = __repr__


class Unknown:
    """A value that a real ``pulumi preview`` would show as "(known after apply)"."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unknown)

    def __hash__(self) -> int:
        return hash("pulumi-unknown")

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


@dataclass(frozen=True)
class ResourceReference:
    """An input that is a whole resource (sent by URN)."""

    urn: str
    id: str | None = None


def _plain(value: Any) -> Any:
    """Plain-JSON form for hashing only (NOT masked; never print this)."""
    if isinstance(value, Secret):
        return {"$secret": _plain(value.value)}
    if isinstance(value, Unknown):
        return {"$unknown": True}
    if isinstance(value, ResourceReference):
        return {"$resource": value.urn}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def masked(value: Any) -> Any:
    """JSON-safe form with every secret replaced by a marker and unknowns marked."""
    if isinstance(value, Secret):
        return {"$secret": SECRET_MASK}
    if isinstance(value, Unknown):
        return {"$unknown": UNKNOWN_TEXT}
    if isinstance(value, ResourceReference):
        return {"$resource": value.urn}
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


def is_asset_or_archive(value: dict[str, Any]) -> bool:
    """An asset or archive decoded from the wire: compared and printed as one value."""
    return len(value) == 1 and next(iter(value)) in ("$asset", "$archive")
