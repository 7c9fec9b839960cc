"""Download a model repository from a Hugging Face hub into a directory,
resumably, after a free-space check, and verify it against the hub's own file
list (sizes, and sha256 for the files the hub stores in LFS); then write the
manifest the weights check on every node reads.

Runs on the master (weights-download.sh.j2 feeds it to the Python that has
huggingface_hub): python3 -c PROGRAM MODEL_DIR REPO REVISION NODE MANIFEST_NAME
[PROGRESS_EVERY_S]. While it downloads, a line every PROGRESS_EVERY_S seconds
(default 30) on stderr says how much is on disk, the rate and the time left:
huggingface_hub's own progress bars are for a terminal (and off here), and
pulumi-command shows a step's output lines as they come.
The hub token, if any, is the first line of stdin (never an argument nor a
file); the hub URL is HF_ENDPOINT, which huggingface_hub reads itself.
Every failure is one line on stderr naming the node, and exit status 3.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

BLOCK = 4096
POINTER = b"version https://git-lfs.github.com/spec/v1"


def fail(node: str, what: str, message: str) -> NoReturn:
    print(f"node {node}: {what}: {message}", file=sys.stderr)
    raise SystemExit(3)


def on_disk(size: int) -> int:
    """Bytes a file of `size` takes in 4 KiB blocks."""
    return -(-size // BLOCK) * BLOCK


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path`, the client's partial downloads
    (.cache/huggingface/download/*.incomplete) included."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # moved into place meanwhile
                pass
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class DownloadProgress(threading.Thread):
    """Every `every` seconds until stopped, one line on stderr: what is on
    disk of the `total` bytes, the rate since the start and the time left.
    A walk of the directory per line: the repository's files, not its bytes."""

    def __init__(self, node: str, repo: str, target: Path, total: int, every: float) -> None:
        super().__init__(daemon=True)
        self.node, self.repo, self.target, self.total, self.every = node, repo, target, total, every
        self.stopped = threading.Event()
        self.start_bytes = tree_bytes(target)
        self.started = time.monotonic()

    def line(self) -> str:
        done = min(tree_bytes(self.target), self.total)
        elapsed = max(time.monotonic() - self.started, 1e-3)
        rate = max(done - self.start_bytes, 0) / elapsed
        left = "?"
        if rate:
            seconds = int((self.total - done) / rate)
            left = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        percent = 100 * done / self.total if self.total else 100
        return (f"node {self.node}: downloading {self.repo}: {human(done)} of {human(self.total)} "
                f"({percent:.0f}%), {human(rate)}/s, ETA {left}")

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            print(self.line(), file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    model_dir, repo, revision, node, manifest_name = argv[:5]
    progress_every_s = float(argv[5]) if len(argv) > 5 else 30.0
    try:
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.hf_api import RepoFile
    except ImportError:
        fail(node, "huggingface_hub", f"not importable by {sys.executable} (fix: `{sys.executable} -m pip install "
             "huggingface_hub` on the master, or set model.source.python)")
    token = sys.stdin.readline().strip() or None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    api = HfApi(endpoint=endpoint, token=token)
    try:
        commit = api.repo_info(repo, revision=revision).sha
        files = [f for f in api.list_repo_tree(repo, revision=commit, recursive=True) if isinstance(f, RepoFile)]
    except Exception as error:  # the client's errors are many; each is one line here
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail(node, "hub", f"{repo}@{revision} at {endpoint}: {first}")
    target = Path(model_dir)
    # Free space first: the whole repository in 4 KiB blocks, less the files
    # a previous run already completed (a resumed download needs only the rest).
    needed = 0
    for f in files:
        have = target / f.path
        if not (have.is_file() and have.stat().st_size == f.size):
            needed += on_disk(f.size)
    where = existing_ancestor(target)
    free = shutil.disk_usage(where).free
    if needed > free:
        fail(node, "free space", f"{free} bytes free at {where}, the download needs {needed} "
             f"({needed / 2**30:.1f} GiB; fix: free space there, or choose another model.path)")
    progress = DownloadProgress(node, repo, target, sum(f.size for f in files), progress_every_s)
    progress.start()
    failure: Exception | None = None
    try:
        snapshot_download(repo, revision=commit, local_dir=str(target), token=token, endpoint=endpoint)
    except Exception as error:  # reported below, after the last progress line
        failure = error
    finally:
        progress.stopped.set()
        progress.join()
    if failure is not None:
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        fail(node, "download", f"{repo}@{commit}: {first} (`pulumi up` again resumes it)")
    lines = [f"# ascend-inference weights manifest: size sha256 path; source huggingface {endpoint} {repo}@{commit}"]
    for f in sorted(files, key=lambda f: f.path):
        path = target / f.path
        size = path.stat().st_size if path.is_file() else -1
        if size != f.size:
            fail(node, "model weights", f"{f.path} is {size} bytes, the hub lists {f.size}")
        with path.open("rb") as handle:
            if f.lfs is not None and handle.read(len(POINTER)) == POINTER:
                fail(node, "model weights", f"{f.path} is a git-lfs pointer file, expected the file itself")
        sha = f.lfs.sha256 if f.lfs is not None else None
        if sha is not None and sha256_of(path) != sha:
            fail(node, "model weights", f"{f.path} has sha256 {sha256_of(path)}, the hub lists {sha}")
        lines.append(f"{f.size} {sha or '-'} {f.path}")
    manifest = target / manifest_name
    partial = manifest.with_name(manifest.name + ".tmp")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, manifest)
    print(json.dumps({"node": node, "repo": repo, "commit": commit, "files": len(files),
                      "bytes": sum(f.size for f in files)}))


if __name__ == "__main__":
    main(sys.argv[1:])
