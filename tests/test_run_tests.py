"""tools/run-tests, the README's test command: the fast tiers under
coverage, their coverage floors, then the slow tiers, one after the other;
every run runs; the status is the first failure's. Run with a stand-in
`python3` first on PATH that records how it was started and answers with a
status per run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure

STANDIN = """#!/bin/bash
# $1.. as python3 got them; which run by its -m marker argument.
case "$*" in
  *"not (pure or graph)"*) run=slow ;;
  *"pure or graph"*) run=fast ;;
  *coverage_floors*) run=floors ;;
  *) run=other ;;
esac
read -r _ _ _ _ _ sid _ < /proc/$$/stat
nice=$(cut -d' ' -f19 /proc/$$/stat)
echo "$run sid=$sid self=$$ nice=$nice group=$(sed 's/.* nice //' /proc/self/autogroup 2>/dev/null) args=$*" >> "$CALLS"
echo "$run printed this"
if [ "$run" = fast ]; then sleep 0.3; fi
exit "$(cat "$STATUS_DIR/$run" 2>/dev/null || echo 0)"
"""


def script_copy(tmp_path) -> Path:
    """A copy of the script in a project of its own: it works in its own project's root
    (`rm -f .coverage .coverage.*` first), and the real one's is the data of the fast
    tiers running this very test (a run of the original here left CI's coverage without
    every subprocess's data)."""
    copy = tmp_path / "project" / "tools" / "run-tests"
    copy.parent.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "tools" / "run-tests", copy)
    return copy


def run_tests(tmp_path, **statuses: int) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(STANDIN)
    (bin_dir / "python3").chmod(0o755)
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    for run, status in statuses.items():
        (status_dir / run).write_text(str(status))
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
           "STATUS_DIR": str(status_dir)}
    done = subprocess.run(["bash", str(script_copy(tmp_path))], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    recorded = {line.split()[0]: line for line in calls.read_text().splitlines()}
    return done, recorded


def field(line: str, name: str) -> str:
    return next(word.split("=", 1)[1] for word in line.split() if word.startswith(name + "="))


def test_every_test_runs_once_the_fast_tiers_first(tmp_path):
    done, calls = run_tests(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(calls) == {"slow", "fast", "floors"}
    assert '-m not (pure or graph) tests' in calls["slow"] and "--cov" not in calls["slow"]
    assert '-m pure or graph --cov --cov-report= tests' in calls["fast"]
    # One after the other in the script's own session, at the nice it was started with:
    # the fast tiers and their floors first (a quick verdict), then the slow tiers.
    assert {field(line, "sid") for line in calls.values()} == {field(calls["slow"], "sid")}
    assert {field(line, "nice") for line in calls.values()} == {str(os.getpriority(os.PRIO_PROCESS, 0))}
    out = done.stdout
    assert out.index("fast printed this") < out.index("floors printed this") < out.index("slow printed this")


@pytest.mark.parametrize("statuses,expected", [
    ({"slow": 1}, 1),
    ({"fast": 2}, 2),
    ({"floors": 1}, 1),
    ({"slow": 1, "fast": 2, "floors": 1}, 2),
    ({"fast": 5, "floors": 1}, 5),
])
def test_the_status_is_the_first_failures_and_every_run_still_runs(tmp_path, statuses, expected):
    done, calls = run_tests(tmp_path, **statuses)
    assert done.returncode == expected, done.stdout + done.stderr
    assert set(calls) == {"slow", "fast", "floors"}
    assert "fast printed this" in done.stdout


def test_a_ctrl_c_stops_the_run_and_nothing_after_it_starts(tmp_path):
    # A Ctrl-C reaches the terminal's foreground process group: the script and the
    # running pytest. Here the fast run stands in for the terminal: it sends SIGINT to
    # its own process group; the script ends by that SIGINT, as bash does when its
    # foreground job died of one, and starts no later run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "python3").write_text(f"""#!/bin/bash
echo "$*" >> {calls}
case "$*" in
  *"pure or graph"*) read -r _ _ _ _ pgid _ < /proc/$$/stat; kill -INT -- -$pgid; exec sleep 600 ;;
esac
""")
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    # Its own session, as a terminal's job is, so that the SIGINT reaches nothing else; and
    # SIGINT at its default, as from a terminal (a pytest-xdist worker ignores it, and a
    # shell cannot trap a signal ignored when it started).
    script = subprocess.Popen(["bash", str(script_copy(tmp_path))], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        out, err = script.communicate()
        assert script.returncode == -signal.SIGINT, out + err
        assert len(calls.read_text().splitlines()) == 1, calls.read_text()
        assert "not (pure or graph)" not in out
    finally:
        if not gone(script.pid):
            os.killpg(script.pid, 15)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True
