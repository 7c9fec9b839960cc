"""The rendered readiness probe (serve-ready.sh.j2) run against a serving process
it watches: a `sleep` this helper starts and ends, its pid in the run dir."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ascend_inference.templating import render_template


def run_readiness(tmp_path: Path, check, env: dict[str, str] | None = None) -> tuple[str, subprocess.CompletedProcess]:
    """The probe's script and what it did (bounded by the check's own timeout; 120 s is the backstop)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = subprocess.Popen(["sleep", "600"])
    try:
        (run_dir / "serve.pid").write_text(str(process.pid))
        script = render_template("serve-ready.sh.j2", purpose="Wait", stack="t", node=None, run_dir=str(run_dir),
                                 log_file="serve.log", ready=check, progress_every_s=30, poll_s=1)
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    finally:
        process.kill()
        process.wait()
    return script, result
