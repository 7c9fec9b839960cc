"""The SDK versions the offline preview was written and checked against, and
the import-time check that the installed ones are those.

The recorder reads the SDK's registration requests below its public mock API
(see `sdk.py`) and the diff mirrors the providers' update-or-replace rules
(see `providers.py`); both are only right for the versions pinned here and in
requirements.txt. This module imports no Pulumi code, so the check can run
before anything that a different SDK might break."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

# Keep equal to the pins in requirements.txt (a test compares them).
PINNED_VERSIONS = {
    "pulumi": "3.272.0",
    "pulumi-command": "1.2.1",
    "pulumi-docker": "4.11.2",
}


class SdkVersionMismatch(Exception):
    """The installed Pulumi SDK or provider SDK is not the pinned version."""


def installed_versions() -> dict[str, str | None]:
    """Installed version of each pinned distribution (None when not installed)."""
    found: dict[str, str | None] = {}
    for name in PINNED_VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def check_sdk_versions(installed: Mapping[str, str | None] | None = None) -> None:
    """Raise SdkVersionMismatch, with a one-line message naming what is
    installed, what is needed and how to fix it, unless every pinned
    distribution is installed at its pinned version."""
    installed = installed_versions() if installed is None else installed
    wrong = [f"{name}=={needed} (installed: {installed.get(name) or 'none'})"
             for name, needed in PINNED_VERSIONS.items() if installed.get(name) != needed]
    if wrong:
        raise SdkVersionMismatch("the offline preview needs " + ", ".join(wrong)
                                 + "; run `pip install -r requirements.txt`")
