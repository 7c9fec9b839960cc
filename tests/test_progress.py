"""Progress on long steps (issue 25, item 4): the rendered scripts, run by
bash against stand-ins on loopback, print what `pulumi up` shows while they
run (pulumi-command streams a step's output lines to the console): the
readiness wait a line per interval with the time waited, the limit and the
engine log's last line; the copies from the master rsync's bytes, rate and
time left. Each test is bounded by what the stand-in does (a number of
polls, a file's size), not by the clock: the interval is a template
parameter, set to 0 here so that every poll reports."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_inference.engines.base import HttpCheck
from ascend_inference.render import PROGRESS_EVERY_S, render_image_copy, render_node, render_weights_copy
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template
from tests.conftest import NS, load_stack_doc, write_stack

pytestmark = pytest.mark.pure

NOT_READY_POLLS = 3


class Endpoint:
    """An engine's endpoint that answers 503 to the first `not_ready` polls."""

    def __init__(self, not_ready: int) -> None:
        self.not_ready = not_ready
        self.polls = 0


@pytest.fixture
def endpoint() -> Iterator[tuple[Endpoint, str]]:
    state = Endpoint(NOT_READY_POLLS)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.polls += 1
            ready = state.polls > state.not_ready
            body = b'{"data": [{"id": "DeepSeek-R1"}]}' if ready else b"loading"
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v1/models"
    finally:
        server.shutdown()
        server.server_close()


def test_the_rendered_readiness_wait_uses_the_progress_interval():
    text = render_node(load_stack("tp16-vllm-mindspore"), 0).scripts.serve_ready.text
    assert f"next_report=$((SECONDS + {PROGRESS_EVERY_S}))" in text and PROGRESS_EVERY_S == 30


def test_the_readiness_wait_prints_a_line_per_interval(endpoint, tmp_path):
    state, url = endpoint
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "serve.pid").write_text(str(os.getpid()))  # alive for as long as the test runs
    (run_dir / "engine.log").write_text("starting\nloading weights: shard 17 of 163\n")
    script = render_template("serve-ready.sh.j2", purpose="Wait", stack="s", node=None, run_dir=str(run_dir),
                             log_file="engine.log", progress_every_s=0, poll_s=0.1,
                             ready=HttpCheck("GET", url, None, (), 3600, '"data"'))
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ready": True, "url": url}
    lines = done.stderr.splitlines()
    # One line per poll that was not ready yet (interval 0), then the answer.
    assert state.polls == NOT_READY_POLLS + 1
    assert len(lines) == NOT_READY_POLLS, done.stderr
    for line in lines:
        assert re.fullmatch(rf"waiting for {re.escape(url)}: \d+ s of 3600 s; "
                            r"engine log: loading weights: shard 17 of 163", line), line


# --- the copies from the master --------------------------------------------------------

def _stand_ins(tmp_path: Path, master_root: Path) -> dict[str, str]:
    """PATH with ssh-agent and ssh-add that do nothing, and an rsync that runs
    the real one locally: the master's `login:/path` is `master_root/path`
    here and the ssh command (-e) is dropped. Everything else (the flags, the
    progress output) is the real rsync's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh-agent").write_text("#!/bin/bash\necho 'true'\n")
    (bin_dir / "ssh-add").write_text("#!/bin/bash\ncat >/dev/null\n")
    (bin_dir / "rsync").write_text(
        "#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n"
        "  case $1 in -e) shift 2; continue;; *@*:*) args+=(\"$MASTER_ROOT${1#*:}\");; *) args+=(\"$1\");; esac\n"
        "  shift\ndone\nexec /usr/bin/rsync \"${args[@]}\"\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "MASTER_ROOT": str(master_root)}


def _copy_stack(tmp_path: Path, model: Path, **container: object):
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][f"{NS}model"]["path"] = str(model)
    doc["config"][f"{NS}model"]["source"] = {"kind": "copy"}
    doc["config"][f"{NS}container"].update(container)
    return load_stack(str(write_stack(tmp_path, "copy", doc)))


PROGRESS = re.compile(r"node node1: (weights|image tar) from node0: ([\d,]+) bytes \((\d+)%\), "
                      r"([\d.]+[kMGT]?B/s), (ETA|took) \d+:\d\d:\d\d")


def _progress_lines(stderr: str) -> list[re.Match[str]]:
    found = [PROGRESS.fullmatch(line) for line in stderr.splitlines()]
    assert all(found), stderr
    return [m for m in found if m]


def test_the_weights_copy_prints_rsyncs_progress(tmp_path):
    model = tmp_path / "weights"
    master = tmp_path / "master"
    on_master = master / str(model).lstrip("/")
    on_master.mkdir(parents=True)
    shard = os.urandom(1 << 20)
    for i in range(3):
        (on_master / f"model-0000{i}.safetensors").write_bytes(shard)
    loaded = _copy_stack(tmp_path, model)
    script = render_weights_copy(loaded, 1, {"disk_bytes": 3 << 20, "fingerprint": "f" * 64},
                                 progress_every_s=0).text
    assert "--info=progress2" in script and "report_progress 0 " in script
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, input="key\n",
                          env=_stand_ins(tmp_path, master))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"node": "node1", "copied_from": "node0"}
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in on_master.iterdir())
    lines = _progress_lines(done.stderr)
    # Interval 0: every record rsync printed, then the last one with the time it took.
    assert len(lines) >= 2 and lines[0].group(5) == "ETA", done.stderr
    last = lines[-1]
    assert (last.group(1), last.group(2), last.group(3), last.group(5)) == ("weights", f"{3 << 20:,}", "100", "took")


def _no_docker(env: dict[str, str]) -> dict[str, str]:
    # No image is loaded here: `docker image inspect` fails.
    docker = Path(env["PATH"].split(":")[0]) / "docker"
    docker.write_text("#!/bin/bash\nexit 1\n")
    docker.chmod(0o755)
    return env


def test_the_image_tar_copy_prints_rsyncs_progress(tmp_path):
    tar = tmp_path / "images" / "mindie.tar"
    master = tmp_path / "master"
    on_master = master / str(tar).lstrip("/")
    on_master.parent.mkdir(parents=True)
    data = os.urandom(2 << 20)
    on_master.write_bytes(data)
    loaded = _copy_stack(tmp_path, tmp_path / "weights", image_tar=str(tar),
                         image_url="https://images.example/mindie.tar")
    script = render_image_copy(loaded, 1, {"tar_bytes": len(data), "tar_sha256": hashlib.sha256(data).hexdigest()},
                               progress_every_s=0).text
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, input="key\n",
                          env=_no_docker(_stand_ins(tmp_path, master)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] is True and tar.read_bytes() == data
    lines = _progress_lines(done.stderr)
    assert lines[0].group(5) == "ETA"
    assert (lines[-1].group(1), lines[-1].group(2), lines[-1].group(5)) == ("image tar", f"{len(data):,}", "took")


def test_a_failed_copy_still_says_why_in_one_line(tmp_path):
    loaded = _copy_stack(tmp_path, tmp_path / "weights", image_tar=str(tmp_path / "t.tar"),
                         image_url="https://images.example/mindie.tar")
    script = render_image_copy(loaded, 1, {"tar_bytes": 10, "tar_sha256": "0" * 64}).text
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, input="key\n",
                          env=_no_docker(_stand_ins(tmp_path, tmp_path / "empty-master")))
    assert done.returncode == 4, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("node node1: image tar: could not copy"), done.stderr
    assert "No such file" in lines[0]
