"""GPUStack 2.x: the model resource's diff rules and readiness lines as pure
functions (ascend_inference/gpustack_api.py), the image-line rule, and the
2.x container settings (docker socket, Ascend runtime or devices, visible
devices, --enable-worker). The same provider runs against a real GPUStack
server in tests/realsoftware and under the real Pulumi engine in
tests/realengine."""
from __future__ import annotations

import copy

import pytest

from ascend_inference import gpustack_api
from ascend_inference.container import spec_from_pulumi_inputs
from ascend_inference.engines.base import NodeContext
from ascend_inference.engines.gpustack import image_line
from ascend_inference.gpustack_api import plan_change, worker_problems
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config
from tests.conftest import NS

pytestmark = pytest.mark.pure

STACK = "dp4-ep32-gpustack"


def props() -> dict:
    loaded = load_stack(STACK)
    return {"server_url": "http://192.0.2.11", "cluster": None, "triggers": ["a", "b"],
            "model": loaded.spec.engine_plugin.deployment_request(loaded.spec, loaded.plan)}


@pytest.mark.parametrize("path,value,replaces", [
    ("model.backend_parameters", ["--data-parallel-size=4"], False),
    ("model.replicas", 2, False),
    ("model.backend_version", "2.2.rc1", False),
    ("model.env", {"ASCEND_RT_VISIBLE_DEVICES": "0"}, False),
    ("triggers", ["a", "c"], False),
    ("model.local_path", "/models/other", True),
    ("model.name", "DeepSeek-V3", True),
    ("model.source", "huggingface", True),
    ("server_url", "http://192.0.2.99", True),
    ("cluster", "other", True),
])
def test_diff_updates_in_place_or_replaces(path, value, replaces):
    olds = props()
    news = copy.deepcopy(olds)
    where, _, key = path.rpartition(".")
    (news[where] if where else news)[key] = value
    change = plan_change(olds, news)
    assert change.changes == [path]
    assert change.replaces == ([path] if replaces else [])


def test_diff_ignores_what_the_stack_leaves_to_the_server_and_the_credentials():
    olds = props()
    olds["model"]["backend_version"] = "2.3.0"   # the server's default, filled in
    olds["password"] = "old"
    news = props()
    news["model"]["backend_version"] = None
    news["password"] = "new"
    news["worker_timeout_s"] = 120
    assert plan_change(olds, news).changes == []


def test_a_field_left_to_the_server_does_not_stop_the_comparison_of_the_next():
    # Found by mutation testing: the `continue` after an unset field -> `break` passed.
    olds = props()
    news = {**props(), "model": {"backend_version": None, "replicas": 2, "name": olds["model"]["name"]}}
    assert list(news["model"])[0] == "backend_version"
    assert plan_change(olds, news).changes == ["model.replicas"]


def test_diff_sees_a_hand_edit_that_refresh_read():
    olds = props()
    olds["model"]["backend_parameters"] = ["--max-seq-len=2048"]   # changed in the UI, read back by refresh
    assert plan_change(olds, props()).changes == ["model.backend_parameters"]
    assert plan_change(olds, props()).replaces == []


def ascend(index: int, vendor: str = "ascend") -> dict:
    return {"index": index, "vendor": vendor, "type": "cann"}


def worker(name: str, npus: int, state: str = "ready", message: str | None = None) -> dict:
    return {"name": name, "state": state, "state_message": message,
            "status": {"gpu_devices": [ascend(i) for i in range(npus)]}}


EXPECTED = [{"name": f"node{i}", "npus": 8} for i in range(4)]


def test_workers_all_ready():
    assert worker_problems(EXPECTED, [worker(f"node{i}", 8) for i in range(4)]) == []


def test_worker_that_never_registered_is_named():
    got = worker_problems(EXPECTED, [worker("node0", 8), worker("node1", 8), worker("node3", 8)])
    assert got == ["worker node2 has not registered with GPUStack (registered: node0, node1, node3); "
                   "expected it Ready with 8 NPUs"]


def test_worker_with_fewer_npus_or_not_ready_is_named():
    got = worker_problems(EXPECTED, [worker("node0", 8), worker("node1", 6),
                                     worker("node2", 8, "not_ready", "Heartbeat lost"), worker("node3", 8)])
    assert got == ["worker node1 reports 6 NPUs; expected 8",
                   "worker node2 is not_ready (Heartbeat lost); expected ready"]


def test_a_worker_not_ready_does_not_hide_the_next_workers_problems():
    got = worker_problems(EXPECTED[:2], [worker("node0", 8, "not_ready"), worker("node1", 6)])
    assert got == ["worker node0 is not_ready; expected ready", "worker node1 reports 6 NPUs; expected 8"]


def test_a_worker_in_a_state_that_sorts_after_ready_is_named_too():
    # Found by mutation testing: `state != "ready"` -> `state < "ready"` passed "unreachable".
    got = worker_problems(EXPECTED[:1], [worker("node0", 8, "unreachable")])
    assert got == ["worker node0 is unreachable; expected ready"]


def test_a_worker_not_registered_does_not_hide_the_next_workers_problems():
    # Found by mutation testing: the `continue` after a worker not registered -> `break` passed.
    got = worker_problems(EXPECTED[:2], [worker("node1", 6)])
    assert got == ["worker node0 has not registered with GPUStack (registered: node1); expected it Ready with 8 NPUs",
                   "worker node1 reports 6 NPUs; expected 8"]


def test_a_worker_with_more_npus_than_expected_is_ready():
    # Found by mutation testing: `have < npus` -> `have is not npus` (or `!=`) passed, as no
    # test had a worker with more NPUs than the stack asks of it.
    assert worker_problems(EXPECTED[:2], [worker("node0", 16), worker("node1", 8)]) == []


@pytest.mark.parametrize("image,line", [
    ("gpustack/gpustack:latest-npu", "0.x"), ("gpustack/gpustack:v0.7.1-npu", "0.x"),
    ("gpustack/gpustack:0.6.2", "0.x"), ("gpustack/gpustack:v0.7.1", "0.x"),
    ("gpustack/gpustack:v2.3.0", "2.x"), ("registry.local:5000/gpustack/gpustack:v2.3.0", "2.x"),
    ("gpustack/gpustack:v1.0.0", "0.x"), ("gpustack/gpustack:v3.0.0", "3.x"), ("gpustack/gpustack:12.1", "12.x"),
    ("gpustack/gpustack", None), ("gpustack/gpustack:latest", None), ("registry.local:5000/gpustack", None),
])
def test_image_line(image, line):
    assert image_line(image) == line


def test_the_image_line_of_an_image_named_without_a_repository_path():
    # Found by mutation testing: the last path part's `rsplit("/", 1)[-1]` -> `[+1]` passed
    # every test, as every image tested had a "/" (a name without one has no part [1]).
    assert image_line("gpustack:v0.7.1") == "0.x"
    assert image_line("gpustack:v2.3.0") == "2.x"


def test_the_image_line_is_read_from_the_tag_only_not_from_the_registry_and_path():
    # Found by mutation testing: `ref.rsplit("/", 1)[-1]` -> `rsplit("/", 0)` passed every
    # test: an untagged image behind a registry port then reads "5000/..." as its tag.
    assert image_line("registry.local:5000/ascend-npu-mirror/gpustack") is None
    assert image_line("registry.local:5000/mirror/gpustack-npu") is None


DIGEST = "@sha256:" + "0123456789abcdef" * 4


def test_the_image_line_of_a_tag_pinned_by_digest_is_the_tags():
    # Found by mutation testing: `image.split("@", 1)[0]` -> `split("@", 0)` passed every test,
    # as no image tested had a digest (the tag is then read from the digest's hex).
    assert image_line("gpustack/gpustack:v0.7.1" + DIGEST) == "0.x"
    assert image_line("gpustack/gpustack:v2.3.0" + DIGEST) == "2.x"
    assert image_line("gpustack/gpustack" + DIGEST) is None


@pytest.mark.parametrize("image", ["gpustack/gpustack:v3.0.0", "gpustack/gpustack:20.1"])
def test_a_later_major_version_is_not_read_as_the_2x_line(image):
    # Found by mutation testing: `version.group(1) == "2"` -> `>= "2"` passed every test,
    # which would take a 3.x (or "20" > "2") image for the 2.x API the program speaks.
    assert image_line(image) != "2.x"


def container(**engine):
    loaded = load_stack(STACK)
    config = copy.deepcopy(loaded.raw_config)
    config[f"{NS}engine"].update(engine)
    changed = loaded_with_config(loaded, config)
    spec = changed.spec
    return [spec.engine_plugin.container(NodeContext(spec, changed.plan, i, n, STACK))
            for i, n in enumerate(spec.nodes)]


def test_containers_mount_the_docker_socket_and_see_every_npu():
    server, *workers = container()
    for c in (server, *workers):
        assert ("/var/run/docker.sock", "/var/run/docker.sock") in [(m.host, m.container) for m in c.mounts]
        assert ("ASCEND_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7") in c.env
        assert "/dev/davinci7" in c.devices and c.runtime is None
    assert server.command == ("--enable-worker", "--worker-name", "node0")


def test_ascend_runtime_replaces_the_device_list_and_survives_the_pulumi_mapping():
    server, *_ = container(ascend_runtime=True, visible_devices=[7, 6, 5, 4, 3, 2, 1, 0],
                           docker_socket="/run/docker.sock", server_enable_worker=True)
    assert server.devices == () and server.runtime == "ascend"
    assert ("ASCEND_VISIBLE_DEVICES", "7,6,5,4,3,2,1,0") in server.env
    assert ("/run/docker.sock", "/var/run/docker.sock") in [(m.host, m.container) for m in server.mounts]
    assert "--runtime=ascend" in server.docker_run_argv()
    args = server.pulumi_docker_args()
    assert args["runtime"] == "ascend"
    camel = {"name": args["name"], "image": args["image"], "runtime": args["runtime"], "envs": args["envs"]}
    assert spec_from_pulumi_inputs(camel).runtime == "ascend"


def test_login_waits_for_a_server_that_is_not_listening_yet():
    """A 2.x server writes its admin password before its API listens: the model resource
    asks again until it answers (here a login endpoint that starts listening 1 s late),
    and names the server when nothing answers within the wait."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ascend_inference import gpustack_api

    class Login(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server_props = {"server_url": f"http://127.0.0.1:{port}", "password": "x"}
    refused = rf"127\.0\.0\.1:{port} did not answer the login.*after 0\.5 s"
    with pytest.raises(gpustack_api.GpustackError, match=refused):
        gpustack_api._session(server_props, wait_s=0.5, poll_s=0.1)

    started: list[HTTPServer] = []
    timer = threading.Timer(1.0, lambda: started.append(HTTPServer(("127.0.0.1", port), Login)) or
                            threading.Thread(target=started[0].serve_forever, daemon=True).start())
    timer.start()
    try:
        api = gpustack_api._session(server_props, wait_s=20, poll_s=0.2)
        assert api.server == f"http://127.0.0.1:{port}"
    finally:
        timer.join()
        if started:
            started[0].shutdown()
            started[0].server_close()


# --- the instance wait (runbook 002 step 5) against a fake API -----------------

class ScriptedApi(gpustack_api.GpustackApi):
    """GPUStack's answers to the wait, one list of instances per poll (the last one repeats),
    on a clock that only the wait's sleeps move."""

    def __init__(self, polls: list[list[dict]], restart_on_error: bool | None | str = True):
        # restart_on_error="absent": the model as a server that does not send the key gives it.
        self.polls = polls
        self.model = {"id": 7, "name": "DeepSeek-R1"}
        if restart_on_error != "absent":
            self.model["restart_on_error"] = restart_on_error
        self.now = 0.0
        self.asked = 0

    def instances(self, model_id):
        polls = self.polls[min(self.asked, len(self.polls) - 1)]
        self.asked += 1
        return polls

    def get_model(self, model_id):
        return self.model

    def instance_log(self, instance_id, lines=30):
        return f"log of instance {instance_id}: HCCL init failed\nexit 1"

    def wait(self, timeout_s: float = 60, poll_s: float = 5) -> list[str]:
        lines: list[str] = []

        def sleep(seconds: float) -> None:
            self.now += seconds
            # A wait still polling long after its deadline would never end: fail at once rather
            # than hang until the test's limit (found by mutation testing: `clock() >= deadline`
            # -> `==` loops for ever when no poll lands on the deadline itself).
            assert self.now <= timeout_s + 100 * poll_s, f"the wait went on past its {timeout_s} s"

        gpustack_api.wait_instance_running(self, 7, "DeepSeek-R1", timeout_s, lines.append, poll_s=poll_s,
                                           clock=lambda: self.now, sleep=sleep)
        return lines


PORTS = "Failed to start model instance: Cannot coordinate model ports with worker 3"


def instance(state: str, message: str | None = None, worker_id: int | None = 1) -> dict:
    return {"id": 11, "name": "DeepSeek-R1-abc", "state": state, "state_message": message, "worker_id": worker_id}


def test_wait_goes_on_through_an_error_gpustack_restarts():
    api = ScriptedApi([[instance("starting")], [instance("error", PORTS)], [instance("scheduled")],
                       [instance("starting")], [instance("running")]])
    assert api.wait() == [
        "model DeepSeek-R1: instance DeepSeek-R1-abc new -> starting",
        f"model DeepSeek-R1: instance DeepSeek-R1-abc starting -> error ({PORTS})",
        "model DeepSeek-R1: instance DeepSeek-R1-abc error -> scheduled",
        "model DeepSeek-R1: instance DeepSeek-R1-abc scheduled -> starting",
        "model DeepSeek-R1: instance DeepSeek-R1-abc starting -> running"]


def test_a_long_wait_prints_a_line_every_30_s_while_nothing_changes():
    # 5 s per poll: starting from 0 to 75 s, then running.
    api = ScriptedApi([[instance("starting")]] * 16 + [[instance("running")]])
    lines = api.wait(timeout_s=3600)
    assert lines == [
        "model DeepSeek-R1: instance DeepSeek-R1-abc new -> starting",
        "model DeepSeek-R1: waiting for an instance to run: 30 s of 3600 s (DeepSeek-R1-abc starting)",
        "model DeepSeek-R1: waiting for an instance to run: 60 s of 3600 s (DeepSeek-R1-abc starting)",
        "model DeepSeek-R1: instance DeepSeek-R1-abc starting -> running"]


def test_a_long_wait_in_a_state_that_sorts_before_running_prints_its_lines_too():
    # Found by mutation testing: `state == "running"` -> `state < "running"` in the test for
    # "no instance runs yet" passed: the long-wait test's state, "starting", sorts after it.
    api = ScriptedApi([[instance("downloading")]] * 8 + [[instance("running")]])
    assert api.wait(timeout_s=3600) == [
        "model DeepSeek-R1: instance DeepSeek-R1-abc new -> downloading",
        "model DeepSeek-R1: waiting for an instance to run: 30 s of 3600 s (DeepSeek-R1-abc downloading)",
        "model DeepSeek-R1: instance DeepSeek-R1-abc downloading -> running"]


def test_the_waiting_line_comes_at_the_first_poll_past_30_s_when_polls_do_not_land_on_it():
    # Found by mutation testing: `waited >= progress_every_s` -> `==` passed: at 5 s a poll
    # every test's poll landed on 30 s exactly; and `clock() - started` -> `+` passed, as
    # every test's clock started at 0 (a monotonic clock starts anywhere).
    api = ScriptedApi([[instance("starting")]] * 6 + [[instance("running")]])
    api.now = 1000.0
    assert api.wait(3600, poll_s=7) == [
        "model DeepSeek-R1: instance DeepSeek-R1-abc new -> starting",
        "model DeepSeek-R1: waiting for an instance to run: 35 s of 3600 s (DeepSeek-R1-abc starting)",
        "model DeepSeek-R1: instance DeepSeek-R1-abc starting -> running"]


def test_wait_prints_a_new_error_message_of_the_same_state():
    crash = "Restarted 3 times without serving. No known failure signature was found in its log"
    api = ScriptedApi([[instance("error", PORTS)], [instance("error", crash)], [instance("running")]])
    lines = api.wait()
    assert lines[1] == f"model DeepSeek-R1: instance DeepSeek-R1-abc error -> error ({crash})"
    assert lines[-1].endswith("error -> running")


def test_an_error_repeated_past_the_timeout_names_the_last_error_and_gives_the_log():
    rejected = "Failed to start model instance: Worker 2 rejected port coordination (409)"
    api = ScriptedApi([[instance("starting")], [instance("error", PORTS)], [instance("scheduled")],
                       [instance("error", rejected)]])
    with pytest.raises(gpustack_api.GpustackError) as raised:
        api.wait(timeout_s=60)
    assert str(raised.value) == (
        "model DeepSeek-R1: instance DeepSeek-R1-abc not running after 60 s; GPUStack kept restarting it; "
        f"last error: {rejected}; "
        "last log lines:\nlog of instance 11: HCCL init failed\nexit 1")
    assert api.now >= 60


def test_restart_on_error_off_fails_at_the_first_error():
    api = ScriptedApi([[instance("starting")], [instance("error", PORTS)], [instance("running")]],
                      restart_on_error=False)
    with pytest.raises(gpustack_api.GpustackError) as raised:
        api.wait()
    assert str(raised.value) == (
        "model DeepSeek-R1: instance DeepSeek-R1-abc failed (the model has restart_on_error off, so GPUStack "
        f"does not restart it); last error: {PORTS}; last log lines:\nlog of instance 11: HCCL init failed\nexit 1")
    assert api.asked == 2


def test_restart_on_error_absent_is_gpustacks_default_true_and_the_wait_goes_on():
    # GPUStack's Model schema defaults restart_on_error to true: a model without the key is restarted.
    api = ScriptedApi([[instance("starting")], [instance("error", PORTS)], [instance("running")]],
                      restart_on_error="absent")
    assert api.wait()[-1] == "model DeepSeek-R1: instance DeepSeek-R1-abc error -> running"
    assert api.asked == 3


def test_restart_on_error_null_fails_at_the_first_error():
    # GPUStack's worker queues an error for restart only `if model.restart_on_error:`; null is not restarted,
    # so waiting for a restart that never comes would only run out the timeout.
    api = ScriptedApi([[instance("starting")], [instance("error", PORTS)], [instance("running")]],
                      restart_on_error=None)
    with pytest.raises(gpustack_api.GpustackError, match="failed \\(the model has restart_on_error off, so GPUStack "
                                                         "does not restart it\\)"):
        api.wait()
    assert api.asked == 2


def test_a_scheduler_error_without_a_worker_fails_at_once():
    """The scheduler's own errors come before any worker is assigned: nobody restarts them."""
    refused = "The model is not distributable to multiple workers."
    api = ScriptedApi([[instance("analyzing", worker_id=None)], [instance("error", refused, worker_id=None)]])
    with pytest.raises(gpustack_api.GpustackError, match="failed \\(no worker was assigned, so GPUStack does not "
                                                         f"restart it\\); last error: {refused}"):
        api.wait()
    assert api.asked == 2


def test_an_unchanged_state_with_a_message_is_printed_once():
    # Found by mutation testing: each poll builds the line anew, so an identity test would print it every poll.
    api = ScriptedApi([[instance("starting", "Loading weights")]] * 3 + [[instance("running")]])
    assert api.wait() == ["model DeepSeek-R1: instance DeepSeek-R1-abc new -> starting (Loading weights)",
                          "model DeepSeek-R1: instance DeepSeek-R1-abc starting -> running"]


def test_a_timeout_between_two_polls_ends_the_wait_at_the_first_poll_past_it():
    # 5 s a poll, 12 s allowed: the polls at 0, 5, 10 and 15 s; the fourth is the last.
    api = ScriptedApi([[instance("pending")]])
    with pytest.raises(gpustack_api.GpustackError, match="not running after 12 s"):
        api.wait(timeout_s=12)
    assert api.asked == 4


def test_a_poll_landing_on_the_deadline_is_the_last():
    # Found by mutation testing: `clock() >= deadline` -> `>` passed, as no test's poll landed
    # on the deadline itself. 5 s a poll, 10 s allowed: the polls at 0, 5 and 10 s, no fourth.
    api = ScriptedApi([[instance("pending")]])
    with pytest.raises(gpustack_api.GpustackError, match="not running after 10 s"):
        api.wait(timeout_s=10)
    assert api.asked == 3 and api.now == 10


def test_no_instance_in_time_lists_what_was_seen():
    api = ScriptedApi([[instance("pending", "waiting for resources")]])
    with pytest.raises(gpustack_api.GpustackError) as raised:
        api.wait(timeout_s=30)
    assert str(raised.value) == ("model DeepSeek-R1 not running after 30 s "
                                 "(instances: DeepSeek-R1-abc: pending (waiting for resources))")


# --- the workers wait (runbook 002 step 3) and the delete wait, on a fake clock ---------

class FakeClock:
    """gpustack_api's `time` for the waits that read the module's clock: only sleeps move it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        # Every wait tested here gives up within an hour: one still sleeping after a day of fake
        # time would never end (a broken deadline test); fail at once rather than hang.
        assert self.now <= 86_400, "the wait went on for a day of fake time"


class WorkersApi(gpustack_api.GpustackApi):
    def __init__(self, polls: list[list[dict]]):
        self.polls, self.asked = polls, 0

    def workers(self, cluster_id):
        answer = self.polls[min(self.asked, len(self.polls) - 1)]
        self.asked += 1
        return answer


def test_the_workers_wait_prints_each_new_problem_once_then_ready(monkeypatch):
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    api = WorkersApi([[worker("node0", 8)], [worker("node0", 8)],
                      [worker("node0", 8), worker("node1", 8, "not_ready")],
                      [worker("node0", 8), worker("node1", 8)]])
    lines: list[str] = []
    api.wait_workers(1, EXPECTED[:2], 60, lines.append)
    assert lines == [
        "waiting for GPUStack workers: worker node1 has not registered with GPUStack (registered: node0); "
        "expected it Ready with 8 NPUs",
        "waiting for GPUStack workers: worker node1 is not_ready; expected ready",
        "GPUStack workers ready: node0, node1"]
    assert api.asked == 4


def test_the_workers_wait_gives_up_with_the_first_problem(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(gpustack_api, "time", clock)
    api = WorkersApi([[worker("node0", 8), worker("node1", 6)]])
    with pytest.raises(gpustack_api.GpustackError) as raised:
        api.wait_workers(1, EXPECTED[:2], 10, lambda line: None)
    assert str(raised.value) == "worker node1 reports 6 NPUs; expected 8 (after 10 s)"
    # 2 s polls at 0 to 10 s: the one landing on the deadline is the last (found by mutation
    # testing: `>= deadline` -> `>` passed, one poll more).
    assert (clock.now, api.asked) == (10, 6)


def test_the_workers_wait_prints_a_new_problem_whichever_way_it_sorts(monkeypatch):
    # A registered worker that drops out: "is not_ready" then "has not registered", a line that
    # sorts before the one shown. Found by mutation testing: `problems != shown` -> `>` passed.
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    api = WorkersApi([[worker("node0", 8), worker("node1", 8, "not_ready")], [worker("node0", 8)],
                      [worker("node0", 8), worker("node1", 8)]])
    lines: list[str] = []
    api.wait_workers(1, EXPECTED[:2], 60, lines.append)
    assert lines == [
        "waiting for GPUStack workers: worker node1 is not_ready; expected ready",
        "waiting for GPUStack workers: worker node1 has not registered with GPUStack (registered: node0); "
        "expected it Ready with 8 NPUs",
        "GPUStack workers ready: node0, node1"]


def test_the_workers_wait_prints_the_first_of_several_problems(monkeypatch):
    # Found by mutation testing: the waiting line's `problems[0]` -> `problems[-1]` passed.
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    api = WorkersApi([[worker("node0", 8, "not_ready"), worker("node1", 6)], [worker("node0", 8), worker("node1", 8)]])
    lines: list[str] = []
    api.wait_workers(1, EXPECTED[:2], 60, lines.append)
    assert lines == ["waiting for GPUStack workers: worker node0 is not_ready; expected ready",
                     "GPUStack workers ready: node0, node1"]


def test_the_workers_wait_gives_up_naming_every_problem(monkeypatch):
    # The emulated tier once saw the worker under test (never registered) hidden behind a
    # healthy worker the server briefly could not reach on a busy host: the error names both.
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    api = WorkersApi([[worker("node0", 8, "unreachable"), worker("node2", 8)]])
    with pytest.raises(gpustack_api.GpustackError) as raised:
        api.wait_workers(1, EXPECTED[:3], 10, lambda line: None)
    assert str(raised.value) == (
        "worker node0 is unreachable; expected ready; "
        "worker node1 has not registered with GPUStack (registered: node0, node2); expected it Ready with 8 NPUs "
        "(after 10 s)")


def test_no_expected_worker_asks_nothing():
    api = WorkersApi([])
    api.wait_workers(1, [], 10, lambda line: None)
    assert api.asked == 0


def test_only_ascend_npus_are_counted():
    devices = [ascend(0), ascend(1, vendor="Huawei"), {"index": 2, "vendor": "", "type": "CANN"},
               {"index": 3, "vendor": "nvidia", "type": "cuda"}, {"index": 4}]
    assert gpustack_api.npu_count({"status": {"gpu_devices": devices}}) == 3
    # One by one (found by mutation testing: a wrong comparison of the type gave the same total).
    assert [gpustack_api.npu_count({"status": {"gpu_devices": [d]}}) for d in devices] == [1, 1, 1, 0, 0]
    assert gpustack_api.npu_count({"status": None}) == gpustack_api.npu_count({}) == 0


class DeleteApi(gpustack_api.GpustackApi):
    server = "http://192.0.2.11"

    def __init__(self, polls: list[tuple[list[dict], dict | None]], delete_code: int | None = None):
        self.polls, self.asked, self.delete_code, self.calls = polls, 0, delete_code, []

    def call(self, method, path, body=None, raw=False):
        self.calls.append((method, path))
        if self.delete_code is not None:
            raise gpustack_api.GpustackApiError(method, path, self.delete_code, "refused")
        return {}

    def instances(self, model_id):
        # One poll: the instances, then the model as the same poll has it.
        self.current = self.polls[min(self.asked, len(self.polls) - 1)]
        self.asked += 1
        return self.current[0]

    def get_model(self, model_id):
        return self.current[1]


def test_delete_waits_until_the_instances_and_the_model_are_gone(monkeypatch):
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    api = DeleteApi([([instance("running")], {"id": 7}), ([], {"id": 7}), ([], None)])
    lines: list[str] = []
    api.delete_model(7, 60, lines.append)
    assert api.calls == [("DELETE", "/v2/models/7")] and api.asked == 3
    assert lines == ["GPUStack model 7 deleted"]


def test_a_model_already_gone_is_deleted(monkeypatch):
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    lines: list[str] = []
    DeleteApi([([], None)], delete_code=404).delete_model(7, 60, lines.append)
    assert lines == ["GPUStack model 7 deleted"]


# A code above 404 too: found by mutation testing (`code != 404` -> `code < 404` passed).
@pytest.mark.parametrize("code", [403, 500])
def test_a_refused_delete_is_raised(monkeypatch, code):
    monkeypatch.setattr(gpustack_api, "time", FakeClock())
    with pytest.raises(gpustack_api.GpustackApiError, match=f"HTTP {code} refused"):
        DeleteApi([([], None)], delete_code=code).delete_model(7, 60, lambda line: None)


@pytest.mark.parametrize(("poll", "left"), [(([instance("running")], {"id": 7}), "DeepSeek-R1-abc (running)"),
                                            (([], {"id": 7}), "the model itself")])
def test_a_delete_not_done_in_time_names_what_is_left(monkeypatch, poll, left):
    clock = FakeClock()
    monkeypatch.setattr(gpustack_api, "time", clock)
    with pytest.raises(gpustack_api.GpustackError) as raised:
        DeleteApi([poll]).delete_model(7, 30, lambda line: None)
    assert str(raised.value) == f"GPUStack model 7 still there 30 s after its delete: {left}"
    # The poll landing on the deadline is the last (found by mutation testing: `>=` -> `>`).
    assert clock.now == 30


def test_a_delete_timeout_between_two_polls_ends_the_wait_at_the_first_poll_past_it(monkeypatch):
    # Found by mutation testing: `now >= deadline` -> `==` passed: every test's timeout was a
    # whole number of the 2 s polls. The clock refuses to go on far past it (no endless test).
    class BoundedClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            assert self.now < 100, "the delete wait went on past its timeout"
            super().sleep(seconds)

    clock = BoundedClock()
    monkeypatch.setattr(gpustack_api, "time", clock)
    with pytest.raises(gpustack_api.GpustackError, match="still there 31 s after its delete: the model itself"):
        DeleteApi([([], {"id": 7})]).delete_model(7, 31, lambda line: None)
    assert clock.now == 32


def test_the_login_wait_asks_again_until_its_own_deadline_on_any_clock(monkeypatch):
    # Found by mutation testing: the deadline's `now + wait_s` -> `now ** wait_s` passed: the
    # login test's real clock made both give up at once. On a clock at 1000 s, 10 s of 2 s polls.
    class BoundedClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            assert self.now < 1100, "the login wait went on past its deadline"
            super().sleep(seconds)

    clock = BoundedClock()
    clock.now = 1000.0
    monkeypatch.setattr(gpustack_api, "time", clock)
    tries: list[float] = []

    def unreachable(*args, **kwargs):
        tries.append(clock.now)
        raise gpustack_api.GpustackUnreachable("GPUStack at http://192.0.2.11 did not answer the login: refused")

    monkeypatch.setattr(gpustack_api, "GpustackApi", unreachable)
    with pytest.raises(gpustack_api.GpustackError, match=r"did not answer the login: refused \(after 10 s\)$"):
        gpustack_api._session({"server_url": "http://192.0.2.11", "password": "x"}, wait_s=10, poll_s=2)
    assert tries == [1000, 1002, 1004, 1006, 1008, 1010]
    # A deadline between two tries ends the wait at the first try past it. Found by mutation
    # testing: `time.monotonic() >= deadline` -> `==` or `is` asked for ever (timed out).
    tries.clear()
    with pytest.raises(gpustack_api.GpustackError, match=r"did not answer the login: refused \(after 9 s\)$"):
        gpustack_api._session({"server_url": "http://192.0.2.11", "password": "x"}, wait_s=9, poll_s=2)
    assert tries == [1010, 1012, 1014, 1016, 1018, 1020]


def test_the_waiting_line_is_due_at_30_s_not_before():
    # Found by mutation testing: `progress_every_s = 30` -> 29 passed: 5 s polls reach 29 and
    # 30 s at the same poll. At 29 s polls the first line is at 58 s.
    api = ScriptedApi([[instance("starting")]] * 3 + [[instance("running")]])
    assert api.wait(3600, poll_s=29) == [
        "model DeepSeek-R1: instance DeepSeek-R1-abc new -> starting",
        "model DeepSeek-R1: waiting for an instance to run: 58 s of 3600 s (DeepSeek-R1-abc starting)",
        "model DeepSeek-R1: instance DeepSeek-R1-abc starting -> running"]
