"""model.source huggingface: the rendered download script, run by bash with
the real huggingface_hub client, against a hub the test serves on loopback
(the file list with sizes and LFS sha256, the file downloads with HTTP
ranges), as the hub's API answers them. Then the weights check script on the
result: a git-lfs pointer file and a file shorter than the manifest are
errors naming the node and the file.

The server speaks the few routes huggingface_hub uses for a download:
GET /api/models/{repo}/revision/{rev}, GET /api/models/{repo}/tree/{commit}
(recursive) and HEAD/GET /{repo}/resolve/{commit}/{path} with Range."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_inference.render import MANIFEST_NAME, render_node
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template
from tests.conftest import NS, load_stack_doc, write_stack

pytestmark = pytest.mark.pure

import huggingface_hub  # noqa: E402,F401  (fails loudly if the requirement is missing)

REPO = "deepseek-ai/DeepSeek-R1-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_files() -> dict[str, bytes]:
    shard = bytes(range(256)) * 1024  # 256 KiB, big enough to be cut mid-way
    return {"config.json": b'{"model_type": "deepseek_v3"}\n',
            "model-00001-of-00002.safetensors": shard,
            "model-00002-of-00002.safetensors": shard[::-1],
            "tokenizer/tokenizer.json": b'{"version": "1.0"}\n'}


class Hub:
    """A loopback hub: its files, what it was asked, and faults to serve."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        # path -> bytes to send of the first GET before dropping the connection
        self.cut_first_get: dict[str, int] = {}
        # path -> the size the file list claims (a lie, for the free-space check)
        self.claimed_size: dict[str, int] = {}
        self.tokens: list[str | None] = []
        # path -> (bytes to send of the first GET, then wait for this event before the rest)
        self.pause_first_get: dict[str, tuple[int, threading.Event]] = {}

    def tree(self) -> list[dict]:
        out = []
        for path, data in self.files.items():
            size = self.claimed_size.get(path, len(data))
            entry = {"type": "file", "path": path, "size": size, "oid": hashlib.sha1(data).hexdigest()}
            if path.endswith(".safetensors"):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
            out.append(entry)
        return out


def handler_for(hub: Hub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _file(self, head: bool) -> None:
            path = self.path.split("?")[0].split(f"/{REPO}/resolve/", 1)[1].split("/", 1)[1]
            data = hub.files.get(path)
            if data is None:
                self.send_error(404)
                return
            etag = hashlib.sha256(data).hexdigest() if path.endswith(".safetensors") else hashlib.sha1(data).hexdigest()
            start = 0
            if (wanted := self.headers.get("Range")) and wanted.startswith("bytes="):
                start = int(wanted[len("bytes="):].split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            pause = hub.pause_first_get.pop(path, None)
            if pause is not None:
                # A slow download: part of the file, then the rest once the
                # test saw the progress line it waits for (the timeout only
                # ends a failing test).
                sent, resume = pause
                self.wfile.write(body[:sent])
                self.wfile.flush()
                resume.wait(60)
                body = body[sent:]
            cut = hub.cut_first_get.pop(path, None)
            if cut is not None:
                # A dropped connection mid-file, as a long download meets one.
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _route(self, head: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            auth = self.headers.get("Authorization")
            hub.tokens.append(auth)
            url = self.path.split("?")[0]
            if url.startswith(f"/api/models/{REPO}/revision/"):
                self._json({"id": REPO, "sha": COMMIT, "siblings": [{"rfilename": p} for p in hub.files]})
            elif url.startswith(f"/api/models/{REPO}/tree/"):
                self._json(hub.tree())
            elif url.startswith(f"/{REPO}/resolve/"):
                self._file(head)
            else:
                self.send_error(404)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            self._route(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._route(True)

    return Handler


@pytest.fixture
def hub() -> Iterator[tuple[Hub, str]]:
    state = Hub(repo_files())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def hub_stack(tmp_path: Path, endpoint: str, model: Path, **source: object):
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][f"{NS}model"]["path"] = str(model)
    doc["config"][f"{NS}model"]["source"] = {"kind": "huggingface", "repo": REPO, "endpoint": endpoint,
                                            "python": sys.executable, **source}
    return load_stack(str(write_stack(tmp_path, "hub", doc)))


def run(script: str, tmp_path: Path, stdin: str = "\n") -> subprocess.CompletedProcess:
    # HF_HOME in the test's directory: the client's own cache stays out of ~.
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          input=stdin, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                            "HF_HOME": str(tmp_path / "hf-home")})


def one_line(done: subprocess.CompletedProcess) -> str:
    # Progress lines (every 30 s of a download) are not part of the message.
    lines = [line for line in done.stderr.splitlines() if line.strip() and not PROGRESS.fullmatch(line)]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_download_verifies_writes_the_manifest_and_the_check_passes(hub, tmp_path):
    state, endpoint = hub
    model = tmp_path / "weights"
    loaded = hub_stack(tmp_path, endpoint, model, token_secret="hfToken")
    scripts = render_node(loaded, 0).scripts
    assert scripts.weights_download is not None
    done = run(scripts.weights_download.text, tmp_path, stdin="hf_secret_token\n")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"node": "node0", "repo": REPO, "commit": COMMIT, "files": 4,
                       "bytes": sum(len(d) for d in state.files.values())}
    for path, data in state.files.items():
        assert (model / path).read_bytes() == data
    # The token went to the hub as the client sends it, and nowhere else.
    assert "Bearer hf_secret_token" in state.tokens
    assert "hf_secret_token" not in done.stdout + done.stderr
    manifest = (model / MANIFEST_NAME).read_text().splitlines()
    sha = hashlib.sha256(state.files["model-00001-of-00002.safetensors"]).hexdigest()
    assert f"262144 {sha} model-00001-of-00002.safetensors" in manifest
    assert "30 - config.json" in manifest

    check = run(scripts.weights.text, tmp_path)
    assert check.returncode == 0, check.stderr
    printed = json.loads(check.stdout.strip().splitlines()[-1])
    # The client's bookkeeping under .cache/ and the manifest are not counted.
    assert (printed["files"], printed["bytes"]) == (4, summary["bytes"])
    assert printed["manifest"] == hashlib.sha256((model / MANIFEST_NAME).read_bytes()).hexdigest()

    # A second run downloads nothing again.
    before = len([r for r in state.requests if r[0] == "GET" and "/resolve/" in r[1]])
    again = run(scripts.weights_download.text, tmp_path)
    assert again.returncode == 0, again.stderr
    assert len([r for r in state.requests if r[0] == "GET" and "/resolve/" in r[1]]) == before


def test_an_interrupted_download_resumes_where_it_stopped(hub, tmp_path):
    state, endpoint = hub
    model = tmp_path / "weights"
    shard = "model-00002-of-00002.safetensors"
    # The client writes what it received in 10 MiB chunks (huggingface_hub's
    # DOWNLOAD_CHUNK_SIZE): a 12 MiB shard cut after 11 MiB leaves 10 MiB.
    state.files[shard] = hashlib.sha256(b"shard").digest() * (12 * 1024 * 1024 // 32)
    state.cut_first_get[shard] = 11 * 1024 * 1024
    script = render_node(hub_stack(tmp_path, endpoint, model), 0).scripts.weights_download
    assert script is not None
    first = run(script.text, tmp_path)
    if first.returncode != 0:
        # The client gave up on this run: one line, and the next run resumes.
        assert one_line(first).startswith("node node0: download: "), first.stderr
        first = run(script.text, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (model / shard).read_bytes() == state.files[shard]
    ranges = [r for m, p, r in state.requests if m == "GET" and p.endswith(shard)]
    # The next GET of the shard asked for the rest only.
    assert ranges[0] is None and ranges[-1] == f"bytes={10 * 1024 * 1024}-", ranges


def test_not_enough_free_space_stops_before_downloading(hub, tmp_path):
    state, endpoint = hub
    # The hub lists a shard of 1 PB: no disk here holds it.
    state.claimed_size["model-00001-of-00002.safetensors"] = 10**15
    model = tmp_path / "weights"
    script = render_node(hub_stack(tmp_path, endpoint, model), 0).scripts.weights_download
    assert script is not None
    done = run(script.text, tmp_path)
    assert done.returncode == 3
    line = one_line(done)
    # 1 PB, and the other files in 4 KiB blocks.
    needed = 10**15 + sum(-(-len(data) // 4096) * 4096 for path, data in state.files.items()
                          if path not in state.claimed_size)
    assert line.startswith("node node0: free space: "), line
    assert f"bytes free at {model}, the download needs {needed} (931322.6 GiB;" in line, line
    assert not [r for r in state.requests if "/resolve/" in r[1]], "nothing was downloaded"


def test_a_wrong_sha256_from_the_hub_is_refused(hub, tmp_path):
    state, endpoint = hub
    model = tmp_path / "weights"
    script = render_node(hub_stack(tmp_path, endpoint, model), 0).scripts.weights_download
    assert script is not None
    good = state.files["model-00001-of-00002.safetensors"]
    tree = state.tree

    def lying_tree() -> list[dict]:
        # The listing carries the sha256 of the good file; the hub serves another.
        listing = tree()
        state.files["model-00001-of-00002.safetensors"] = good[:-1] + b"X"
        return listing

    state.tree = lying_tree  # type: ignore[method-assign]
    done = run(script.text, tmp_path)
    assert done.returncode == 3
    line = one_line(done)
    assert line.startswith("node node0: model weights: model-00001-of-00002.safetensors has sha256 "), line
    assert not (model / MANIFEST_NAME).exists()


def test_a_git_lfs_pointer_file_is_named(tmp_path):
    model = tmp_path / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}\n")
    # What `git clone` without git-lfs leaves (git-lfs spec v1).
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 262144\n")
    (model / "model-00001-of-00002.safetensors").write_text(pointer)
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][f"{NS}model"]["path"] = str(model)
    loaded = load_stack(str(write_stack(tmp_path, "local", doc)))
    done = run(render_node(loaded, 1).scripts.weights.text, tmp_path)
    assert done.returncode == 3
    assert one_line(done).startswith(
        f"node node1: model weights: model-00001-of-00002.safetensors is a git-lfs pointer file ({len(pointer)} "
        "bytes), expected the file itself"), done.stderr


def test_a_file_shorter_than_the_manifest_is_named(hub, tmp_path):
    state, endpoint = hub
    model = tmp_path / "weights"
    scripts = render_node(hub_stack(tmp_path, endpoint, model), 0).scripts
    assert scripts.weights_download is not None
    assert run(scripts.weights_download.text, tmp_path).returncode == 0
    shard = model / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:4096])  # a copy cut short
    done = run(scripts.weights.text, tmp_path)
    assert done.returncode == 3
    assert one_line(done) == (
        "node node0: model weights: model-00002-of-00002.safetensors is 4096 bytes, the manifest says 262144 "
        "(a partial copy or download: `pulumi up` again resumes it)"), done.stderr


PROGRESS = re.compile(r"node node0: downloading deepseek-ai/DeepSeek-R1-tiny: [\d.]+ (B|KiB|MiB) of ([\d.]+ KiB) "
                      r"\(\d+%\), [\d.]+ (B|KiB|MiB|GiB)/s, ETA (\d+:\d\d:\d\d|\?)")


def test_a_download_prints_progress_while_it_runs(hub, tmp_path):
    """A line per interval while the client downloads (set to 0.05 s here):
    the hub holds the shard mid-way until the test has read one, so the test
    waits for the line, not for the clock."""
    state, endpoint = hub
    shard = "model-00001-of-00002.safetensors"
    resume = threading.Event()
    state.pause_first_get[shard] = (100 * 1024, resume)
    model = tmp_path / "weights"
    loaded = hub_stack(tmp_path, endpoint, model, token_secret="hfToken")
    source = loaded.spec.model.source
    script = render_template("weights-download.sh.j2", purpose="Download", stack=loaded.name,
                             node=loaded.spec.nodes[0], model_path=str(model), repo=source.repo,
                             revision=source.revision, endpoint=endpoint, python=sys.executable,
                             manifest_name=MANIFEST_NAME, marker="ASCEND_INFERENCE_HUB", progress_every_s=0.05)
    assert f'{shlex.quote(MANIFEST_NAME)} 0.05' in script
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf-home")})
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write("hf_secret_token\n")
    proc.stdin.close()
    seen = []
    for line in proc.stderr:
        seen.append(line.rstrip("\n"))
        if PROGRESS.fullmatch(seen[-1]):
            resume.set()  # the line came while the shard was still arriving
    resume.set()
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait()
    assert proc.returncode == 0, "\n".join(seen)
    progress = [m for m in map(PROGRESS.fullmatch, seen) if m]
    assert progress and len(progress) == len(seen), seen  # nothing else on stderr
    total = sum(len(d) for d in state.files.values())
    assert progress[0].group(2) == f"{total / 1024:.1f} KiB"
    assert not any("hf_secret_token" in line for line in seen)
    assert json.loads(out.strip().splitlines()[-1])["bytes"] == total
