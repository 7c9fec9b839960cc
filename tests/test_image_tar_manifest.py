"""Pure tier: before `docker load`, the image step reads the tar's own
manifest (docker save's manifest.json, or an OCI index.json) and stops with
one line naming both when the tar holds another image than `container.image`
(runbook 001 loads `20T3-...tar` and runs another tag). The rendered script
runs for real with bash on tars built here; `docker` is a stand-in that
records what it is asked (reading a tar's manifest needs no docker)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure

IMAGE = "mindie:2.0.T9.B020-800I-A2-py3.11-openeuler24.03-lts-aarch64"

# `docker image inspect` answers only once `docker load` ran; every call is logged.
DOCKER_STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$DOCKER_LOG"
case "$1 $2" in
  "image inspect") [ -e "$DOCKER_LOG.loaded" ] || exit 1; [ "$3" = -f ] && echo sha256:loaded; exit 0 ;;
  "load -i") touch "$DOCKER_LOG.loaded"; echo "Loaded image: $IMAGE_IN_TAR"; exit 0 ;;
esac
echo "unexpected docker call: $*" >&2; exit 64
"""


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def docker_save_tar(path: Path, tags: list[str], *, oci_config_path: bool = False) -> str:
    """A tar in docker save's layout; returns the image id."""
    config = json.dumps({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    image_id = hashlib.sha256(config).hexdigest()
    config_name = f"blobs/sha256/{image_id}" if oci_config_path else f"{image_id}.json"
    with tarfile.open(path, "w") as archive:
        add(archive, config_name, config)
        add(archive, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": []}]).encode())
    return image_id


def oci_tar(path: Path, name: str) -> str:
    """A tar in the OCI image layout (index.json, no manifest.json); returns the image id."""
    config = json.dumps({"architecture": "arm64", "os": "linux"}).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                          "digest": f"sha256:{image_id}", "size": len(config)},
                           "layers": []}).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{manifest_digest}",
        "size": len(manifest), "annotations": {"io.containerd.image.name": name,
                                               "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]})
    with tarfile.open(path, "w") as archive:
        add(archive, f"blobs/sha256/{image_id}", config)
        add(archive, f"blobs/sha256/{manifest_digest}", manifest)
        add(archive, "index.json", index.encode())
        add(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    return image_id


def run_image_step(tmp_path: Path, tar: Path, image: str = IMAGE) -> tuple[subprocess.CompletedProcess, str]:
    base = load_stack("tp16-mindie")
    config = apply_change(base.raw_config, f"container.image_tar={tar}", base.file)
    config = apply_change(config, f"container.image={image}", base.file)
    script = render_node(loaded_with_config(base, config), 0).scripts.image
    assert script is not None and "check_manifest" in script.text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(DOCKER_STAND_IN)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    # Each run starts on a node without the image.
    for stale in (log, Path(f"{log}.loaded")):
        stale.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(log), "IMAGE_IN_TAR": image}
    # A few tar reads and greps: bounded work.
    done = subprocess.run(["bash", "-s"], input=script.command, capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    return done, log.read_text() if log.exists() else ""


def test_a_tar_holding_the_stacks_image_is_loaded(tmp_path):
    tar = tmp_path / "mindie.tar"
    docker_save_tar(tar, [IMAGE])
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 0, done.stderr
    assert f"load -i {tar}" in calls


def test_a_tar_holding_another_image_stops_before_docker_load_naming_both(tmp_path):
    # Runbook 001's pairing: a 2.0.T3 tar and the 2.0.T9.B020 tag.
    tar = tmp_path / "20T3-800I-A2-py311-openeuler2403-lts.tar"
    other = "mindie:2.0.T3-800I-A2-py311-openeuler2403-lts"
    image_id = docker_save_tar(tar, [other])
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert lines == [f"node node0: image tar: {tar} holds {other} (id sha256:{image_id}), not container.image "
                     f"{IMAGE} (fix: set container.image to the name the tar holds, or put the tar of {IMAGE} at "
                     f"{tar})"], lines
    assert "load" not in calls


def test_the_newer_docker_save_layout_and_a_docker_io_name_are_read(tmp_path):
    tar = tmp_path / "new.tar"
    docker_save_tar(tar, ["docker.io/library/" + IMAGE], oci_config_path=True)
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 0, done.stderr
    assert "load -i" in calls
    wrong = tmp_path / "wrong.tar"
    image_id = docker_save_tar(wrong, ["mindie:other"], oci_config_path=True)
    done, _ = run_image_step(tmp_path, wrong)
    assert done.returncode == 4 and f"holds mindie:other (id sha256:{image_id})" in done.stderr, done.stderr


def test_an_oci_layout_tar_is_read_from_its_index(tmp_path):
    tar = tmp_path / "oci.tar"
    oci_tar(tar, "docker.io/library/" + IMAGE)
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 0, done.stderr
    other = tmp_path / "oci-other.tar"
    image_id = oci_tar(other, "registry.example.com/mindie:2.0.T3")
    done, calls = run_image_step(tmp_path, other)
    assert done.returncode == 4, done.stderr
    assert f"holds registry.example.com/mindie:2.0.T3 2.0.T3 (id sha256:{image_id})" in done.stderr, done.stderr
    assert "load" not in calls


def test_a_tar_without_a_manifest_is_not_loaded(tmp_path):
    tar = tmp_path / "not-an-image.tar"
    with tarfile.open(tar, "w") as archive:
        add(archive, "README", b"hello\n")
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 4
    assert done.stderr.strip() == (f"node node0: image tar: {tar} holds no manifest.json or index.json, so it is not "
                                   f"an image archive (docker save or an OCI layout) (fix: put the tar of {IMAGE} "
                                   "there)")
    assert "load" not in calls


def test_a_missing_tar_is_named_before_docker_load(tmp_path):
    tar = tmp_path / "absent.tar"
    done, calls = run_image_step(tmp_path, tar)
    assert done.returncode == 4
    assert done.stderr.strip() == (f"node node0: image tar: {tar} is missing or empty (fix: put the tar of {IMAGE} "
                                   "there, or give container.image_url to fetch it from)")
    assert "load" not in calls
