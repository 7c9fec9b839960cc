"""Judging what the in-container steps report (container-check, config-edit).

The scripts run inside a started container and print one JSON line; the
program reads it here, on the control host, as it reads preflight's output
(facts.py): a contradiction is one NodeFactError line naming the node, what
was found and what is needed. Pure: no Pulumi import.
"""
from __future__ import annotations

import json
from typing import Any

from ascend_inference.errors import NodeFactError

# Runbook 000 ("安装 pyACL"): where pyACL comes from when the image lacks it.
PYACL_FIX = ("set container.nnrt_run to CANN's Ascend-cann-nnrt_<version>_linux-<arch>.run on every node "
             "(pyACL is then installed from it in the container, as runbook 000 does), "
             "or use an image that has pyACL")


def _report(node: str, step: str, stdout: str | None) -> dict[str, Any]:
    lines = (stdout or "").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict):
        raise NodeFactError(node, step, f"printed no report (last line: {lines[-1][:120] if lines else 'none'!r})",
                            "run the step's script by hand in the container (`ascendctl render` writes it)")
    return report


def judge_container_check(node: str, container: str, stdout: str | None) -> None:
    """Raise on the first thing container-check found wrong in the container."""
    report = _report(node, f"container {container} check", stdout)
    fact = f"container {container}"
    if not report.get("python3", False):
        raise NodeFactError(node, fact, "has no python3 on its PATH (the engine and Ray run on it)",
                            "use the engine's own image (container.image)")
    acl = report.get("acl")
    if acl not in (None, "ok"):
        raise NodeFactError(node, fact, f"cannot import acl ({acl}); runbook 000 installs pyACL for Ray on Ascend",
                            PYACL_FIX)
    for name, found in sorted((report.get("files") or {}).items()):
        path = found.get("path") or ""
        if not path:
            raise NodeFactError(node, fact, f"{name} is not set in the env file, the engine reads the file it names",
                                f"set engine.env.{name}, or leave the engine's default")
        if not found.get("exists"):
            raise NodeFactError(node, fact, f"{name} names {path}, which does not exist in the container",
                                "point engine.mindformers_model_config at the predict yaml inside the image, "
                                "mount it with container.mounts, or set engine.write_mindformers_yaml: true")


def judge_config_edit(node: str, image: str, label: str, stdout: str | None,
                      stack_keys: dict[str, str] | None = None) -> None:
    """Raise when config-edit found the image's file absent or lacking a key
    the stack sets (`stack_keys`: edit path -> the stack key that sets it)."""
    report = _report(node, f"{label} edit", stdout)
    target = report.get("target", "")
    if report.get("absent"):
        raise NodeFactError(node, label, f"image {image} has no {target}",
                            "set engine.install_path to where the image installs MindIE")
    missing = list(report.get("missing") or [])
    if missing:
        keys = ", ".join(f"{m} (set by {stack_keys[m]})" if stack_keys and m in stack_keys else m for m in missing)
        raise NodeFactError(node, label, f"image {image}'s {target} has no key {keys}; nothing was changed",
                            "use a MindIE image whose config.json has the key (runbook 001's 2.0 image does): "
                            "a MindIE that lacks it does not read the setting")


def judge_pyacl_install(node: str, container: str, nnrt_run: str, stdout: str | None) -> None:
    """Raise when pyacl-install could not install pyACL from the nnrt .run."""
    report = _report(node, f"container {container} pyACL install", stdout)
    if report.get("error"):
        raise NodeFactError(node, f"container {container}",
                            f"cannot import acl, and installing pyACL from {nnrt_run} failed: {report['error']}",
                            "check that container.nnrt_run is CANN's Ascend-cann-nnrt_<version>_linux-<arch>.run "
                            "for this node's architecture, present on every node")
