"""The base every stack-file model derives from: strict, closed, immutable.

Strict so that `tp: "16"` is an error rather than a silent cast; closed
(`extra="forbid"`) so that a misspelt key is reported instead of ignored.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
