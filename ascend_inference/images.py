"""The container image: what each engine's image carries (and where its
version is read), the versions found in it, and the cross-node rules.

Runbook 000 asks for the same image (and so the same CANN) on every node, and
the runbooks run unpinned `:latest` tags, which docker compares by name only.
The image check (templates/image-check.sh.j2) reads, per node, the image id
(`docker image inspect`) and the engine and CANN versions inside the image
(`docker run --rm --entrypoint /bin/sh IMAGE -c <probe>`: shell builtins only,
so any image with a /bin/sh answers, no Python needed). `check_images` then
refuses a node whose image differs from the master's, or whose versions are
not the stack's, with one line naming node, found and expected.

The engine version also decides the env the engine gets (the engine's
`env_era`): vllm-mindspore renamed its variables in 0.4.0, so an env rendered
for one side of that line fails on the other. The check refuses an image from
the other side even when `container.engine_version` is not set.

Pure: no Pulumi import.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ascend_inference.errors import NodeFactError

# Where pip puts packages in the engines' images: the Debian/Ubuntu and
# openEuler Pythons, the /usr/local/Python-3.11 of the vLLM-MindSpore images
# (its docs' MINDFORMERS_MODEL_CONFIG path lives there), conda and --user.
SITE_DIRS = (
    "/usr/local/lib/python3*/site-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/usr/lib/python3*/site-packages",
    "/usr/lib/python3/dist-packages",
    "/usr/local/Python-3*/lib/python3*/site-packages",
    "/usr/local/python3*/lib/python3*/site-packages",
    "/opt/conda/lib/python3*/site-packages",
    "/opt/conda/envs/*/lib/python3*/site-packages",
    "/root/.local/lib/python3*/site-packages",
)

# CANN's install record inside the image (docs/formats.md, the version files):
# the ascend-toolkit layout up to CANN 8.3, /usr/local/Ascend/cann from 8.5.
CANN_INFO = (
    "/usr/local/Ascend/ascend-toolkit/latest/*-linux/ascend_toolkit_install.info",
    "/usr/local/Ascend/ascend-toolkit/latest/ascend_toolkit_install.info",
    "/usr/local/Ascend/cann/*-linux/ascend_toolkit_install.info",
)


@dataclass(frozen=True)
class EnginePackage:
    """Where an engine's version is read inside its image: a pip
    distribution's `NAME-VERSION.dist-info` directory, or a `key: version`
    line of a version file. Each engine declares its own (`image_package`)."""

    label: str
    dist: str | None = None
    version_file: str | None = None
    version_key: str | None = None


VERSION_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")


def image_tag(image: str) -> str:
    """The tag of an image reference ("" for none or a digest): `repo:a2-v0.14.0` -> `a2-v0.14.0`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def version_tuple(text: str) -> tuple[int, ...]:
    """The leading numbers of a version: `0.4.0rc1` -> (0, 4, 0), `2.0.T3` -> (2, 0)."""
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(numbers)


@dataclass(frozen=True)
class ImageFacts:
    """One node's image check output."""

    node: str
    image: str
    id: str
    engine_version: str
    cann_version: str

    @classmethod
    def from_output(cls, stdout: str) -> ImageFacts:
        data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return cls(node=data["node"], image=data["image"], id=data["id"],
                   engine_version=data.get("engine_version", ""), cann_version=data.get("cann_version", ""))

    def to_json(self) -> dict[str, str]:
        return {"image": self.image, "id": self.id, "engine_version": self.engine_version,
                "cann_version": self.cann_version}


@dataclass(frozen=True)
class ImageExpectations:
    image: str
    # The engine's package (EnginePlugin.image_package).
    package: EnginePackage
    engine_version: str | None
    cann_version: str | None
    # Which env an engine of a version takes (EnginePlugin.env_era; None: the
    # runbooks' version). Images whose era differs from the rendered one are refused.
    env_era: Callable[[str | None], str]
    # The version the env was rendered for: engine_version, or the one the
    # image tag names (EnginePlugin.engine_version); None: not known.
    rendered_version: str | None = None
    # (what, fix) when a found version is outside a window the stack needs
    # (EnginePlugin.version_refusal); None: inside every window.
    refusal: Callable[[str], tuple[str, str] | None] = lambda version: None


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def check_images(found: list[ImageFacts], expect: ImageExpectations) -> list[NodeFactError]:
    """Every node's image against the master's and the stack's versions."""
    errors: list[NodeFactError] = []
    if not found:
        return errors
    master = found[0]
    for facts in found:
        mine = _version_errors(facts, expect)
        if not mine and facts.id != master.id:
            # Same versions, another image: the plain id difference. (Another
            # version is the clearer line, and implies another image.)
            mine.append(NodeFactError(
                facts.node, "image", f"{facts.image} is sha256:{short_id(facts.id)}, {master.node} has "
                f"sha256:{short_id(master.id)} (a tag is compared by name only)",
                "load the same image on every node (docker save on one node, docker load on the others, or "
                "container.image_tar), or pin the image by digest"))
        errors += mine
    return errors


def _version_errors(facts: ImageFacts, expect: ImageExpectations) -> list[NodeFactError]:
    """The node's engine and CANN versions against the stack's."""
    errors: list[NodeFactError] = []
    package = expect.package
    key = "ascend-inference:container"
    label = f"image {facts.image} has {package.label}"
    refused = expect.refusal(facts.engine_version) if facts.engine_version else None
    if refused is not None:
        # Outside a window: the one line that matters (another version than
        # the declared one follows from it, and its fix would not help).
        what, fix = refused
        errors.append(NodeFactError(facts.node, "engine version", f"image {facts.image}: {what}", fix))
    elif expect.engine_version is not None:
        if facts.engine_version != expect.engine_version:
            errors.append(NodeFactError(
                facts.node, "engine version",
                f"{label} {facts.engine_version or '(none found)'}, the stack expects "
                f"{expect.engine_version} ({key}.engine_version)",
                f"set {key}.engine_version to {facts.engine_version}" if facts.engine_version else
                f"use an image with {package.label} {expect.engine_version}"))
    elif facts.engine_version:
        mine, rendered = expect.env_era(facts.engine_version), expect.env_era(expect.rendered_version)
        if mine != rendered:
            errors.append(NodeFactError(
                facts.node, "engine version",
                f"{label} {facts.engine_version} ({mine}), the env is rendered for {rendered} "
                f"({key}.engine_version is not set)",
                f"set {key}.engine_version to {facts.engine_version}"))
    if expect.cann_version is not None and facts.cann_version != expect.cann_version:
        errors.append(NodeFactError(
            facts.node, "CANN in the image",
            f"image {facts.image} has CANN {facts.cann_version or '(none found)'}, the stack expects "
            f"{expect.cann_version} ({key}.cann_version)",
            f"set {key}.cann_version to {facts.cann_version}" if facts.cann_version else
            f"use an image with CANN {expect.cann_version}"))
    return errors


def probe_script(package: EnginePackage) -> str:
    """The /bin/sh text run inside the image: prints `engine_version=V` and
    `cann_version=V` (empty when not found). Builtins only (globs, `read`,
    parameter expansion), so it needs nothing from the image but /bin/sh."""
    lines = ["e=", "c="]
    if package.dist:
        dist = package.dist
        globs = " ".join(f"{site}/{dist}-*.dist-info {site}/{dist}-*.egg-info" for site in SITE_DIRS)
        lines += [
            f"for d in {globs}; do",
            # An unmatched glob stays as it is written.
            "  [ -d \"$d\" ] || continue",
            f"  e=${{d##*/{dist}-}}; e=${{e%.dist-info}}; e=${{e%.egg-info}}; e=${{e%%-py*}}; break",
            "done",
        ]
    else:
        lines += [
            f"if [ -r {package.version_file} ]; then",
            f"  while IFS= read -r line || [ -n \"$line\" ]; do case $line in {package.version_key}:*)"
            " e=${line#*:};; esac; done < " + str(package.version_file),
            "fi",
        ]
    lines += [
        f"for f in {' '.join(CANN_INFO)}; do",
        "  [ -r \"$f\" ] || continue",
        "  while IFS= read -r line || [ -n \"$line\" ]; do case $line in version=*) c=${line#version=};; esac;"
        " done < \"$f\"",
        "  break",
        "done",
        # Word splitting trims the spaces a `key : value` line leaves.
        "set -- $e; e=${1:-}",
        "set -- $c; c=${1:-}",
        "echo \"engine_version=$e\"",
        "echo \"cann_version=$c\"",
    ]
    return "\n".join(lines) + "\n"
