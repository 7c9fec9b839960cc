"""The GPUStack model resource's HTTP side (ascend_inference/gpustack_api.py)
against a scripted GPUStack 2.x API on 127.0.0.1: login and the session
cookie, one login again on a 401, error bodies, paged lists, the cluster
choice, and the resource's create, take-over, update, read and delete. The
same code runs against a real GPUStack server in tests/realsoftware (slow
tier); this is its fast counterpart, which mutation testing (docs/testing.md)
found missing: no fast test reached these lines.

The answers follow GPUStack 2.3.0's routes as the module's docstring
describes them (`POST /auth/login` with form fields and a session cookie,
`/v2/...` lists with `items` and `pagination.totalPage`, errors as
{"code", "reason", "message"})."""
from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ascend_inference import gpustack_api
from ascend_inference.gpustack_api import GpustackApi, GpustackApiError, GpustackError

pytestmark = pytest.mark.pure

PASSWORD = "s3cret-Pa55"
COOKIE = "gpustack_session=abc123"


class FakeGpustack:
    """A GPUStack server's state and its answers."""

    def __init__(self) -> None:
        self.clusters: list[dict[str, Any]] = [{"id": 1, "name": "default", "is_default": True}]
        self.workers: list[dict[str, Any]] = []
        self.models: dict[int, dict[str, Any]] = {}
        self.instances: dict[int, list[dict[str, Any]]] = {}
        self.logs: dict[int, str] = {}
        self.page_size = 100
        self.logins = 0
        self.expire_sessions = 0  # answer 401 to this many next calls, as after the cookie's 2 h
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.error_body: dict[str, tuple[int, bytes]] = {}  # path -> (status, body) to answer once
        self.hang_up: set[str] = set()  # paths whose request is read and the connection closed, no answer
        # Answers a path gets before it is refused with 429 (a test that knows how often a wait may
        # ask), and a cap on all of a test's requests: a loop that never ends (a wait past its
        # deadline, a paged list asking for the same page) fails the test at once instead of
        # hanging it (found by mutation testing: such mutants ran until the script's timeout).
        self.answers_left: dict[str, int] = {}
        self.max_requests = 1000
        self.next_id = 7

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        self.requests.append((method, target, headers, body))
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if len(self.requests) > self.max_requests:
            return self.error(429, f"more than {self.max_requests} requests: a loop that never ends")
        if path in self.answers_left:
            if self.answers_left[path] == 0:
                return self.error(429, f"{path} asked more often than the test allows")
            self.answers_left[path] -= 1
        if target in self.error_body:
            status, text = self.error_body.pop(target)
            return status, {}, text
        if method == "POST" and path == "/auth/login":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            if headers.get("Content-Type") != "application/x-www-form-urlencoded" or \
                    form != {"username": "admin", "password": PASSWORD}:
                return self.error(401, "Incorrect username or password")
            self.logins += 1
            return 200, {"Set-Cookie": f"{COOKIE}; Path=/; Max-Age=7200"}, b""
        if headers.get("Cookie") != COOKIE:
            return self.error(401, "Invalid authentication credentials")
        if self.expire_sessions:
            self.expire_sessions -= 1
            return self.error(401, "Invalid authentication credentials")
        if body and headers.get("Content-Type") != "application/json":
            return self.error(415, "Unsupported media type")
        if method == "GET" and path == "/v2/clusters":
            return self.page(self.clusters, query)
        if method == "GET" and path == "/v2/workers":
            return self.page([w for w in self.workers if str(w["cluster_id"]) == query["cluster_id"]], query)
        if method == "GET" and path == "/v2/models":
            return self.page([m for m in self.models.values() if query.get("search", "") in m["name"]], query)
        if method == "POST" and path == "/v2/models":
            model = {**json.loads(body), "id": self.next_id, "restart_on_error": True}
            self.next_id += 1
            self.models[model["id"]] = model
            self.instances[model["id"]] = [{"id": 100 + model["id"], "name": f"{model['name']}-x1",
                                            "state": "running", "worker_id": 1}]
            return 201, {}, json.dumps(model).encode()
        if path.startswith("/v2/models/"):
            model_id = int(path.rsplit("/", 1)[1])
            if model_id not in self.models:
                return self.error(404, f"Model {model_id} not found")
            if method == "GET":
                return 200, {}, json.dumps(self.models[model_id]).encode()
            if method == "PUT":
                self.models[model_id] = {**self.models[model_id], **json.loads(body)}
                return 200, {}, json.dumps(self.models[model_id]).encode()
            if method == "DELETE":
                del self.models[model_id]
                self.instances.pop(model_id, None)
                return 200, {}, b""
        if method == "GET" and path == "/v2/model-instances":
            return self.page(self.instances.get(int(query["model_id"]), []), query)
        if method == "GET" and path.startswith("/v2/model-instances/") and path.endswith("/logs"):
            instance_id = int(path.split("/")[3])
            if instance_id not in self.logs:
                return self.error(404, f"Model instance {instance_id} not found")
            return 200, {"Content-Type": "text/plain"}, self.logs[instance_id].encode()
        return self.error(404, "Not Found")

    def page(self, items: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, dict, bytes]:
        assert query.get("perPage") == "100"
        page = int(query["page"])
        size = self.page_size
        total = max(1, -(-len(items) // size))
        chosen = items[(page - 1) * size: page * size]
        return 200, {}, json.dumps({"items": chosen, "pagination": {"page": page, "perPage": size,
                                                                    "total": len(items), "totalPage": total}}).encode()

    @staticmethod
    def error(status: int, message: str) -> tuple[int, dict, bytes]:
        return status, {}, json.dumps({"code": status, "reason": "Error", "message": message}).encode()


@pytest.fixture
def server() -> Iterator[tuple[FakeGpustack, str]]:
    fake = FakeGpustack()

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path in fake.hang_up:
                self.close_connection = True
                return
            status, headers, payload = fake.answer(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = handle_one

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll: shutdown() waits for it (0.5 s by default, every test).
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def props(url: str, **more: Any) -> dict[str, Any]:
    return {"server_url": url + "/", "username": "admin", "password": PASSWORD, "cluster": None,
            "model": {"name": "DeepSeek-R1", "source": "local_path", "local_path": "/data/models/deepseek-r1",
                      "backend": "MindIE", "replicas": 1},
            "workers": [{"name": "node0", "npus": 2}], "worker_timeout_s": 5, "ready_timeout_s": 5, **more}


def ready_worker(cluster_id: int = 1) -> dict[str, Any]:
    return {"name": "node0", "cluster_id": cluster_id, "state": "ready",
            "status": {"gpu_devices": [{"vendor": "Ascend", "type": "cann"}, {"vendor": "Ascend", "type": "cann"}]}}


def test_login_sends_the_form_and_every_call_the_session_cookie(server):
    fake, url = server
    api = GpustackApi(url + "/", "admin", PASSWORD)
    assert api.server == url and fake.logins == 1
    assert api.call("GET", "/v2/clusters?page=1&perPage=100")["items"][0]["name"] == "default"
    method, target, headers, body = fake.requests[0]
    assert (method, target, headers["Content-Type"]) == ("POST", "/auth/login", "application/x-www-form-urlencoded")
    assert dict(urllib.parse.parse_qsl(body.decode())) == {"username": "admin", "password": PASSWORD}
    # A call without a body sends no Content-Type; one with a body sends JSON.
    assert "Content-Type" not in fake.requests[1][2]


def test_a_refused_login_names_the_user_and_the_servers_message_never_the_password(server):
    fake, url = server
    with pytest.raises(GpustackError) as refused:
        GpustackApi(url, "admin", "wrong")
    assert str(refused.value) == (f"GPUStack login as admin at {url} refused: HTTP 401 "
                                  "Incorrect username or password")
    assert "wrong" not in str(refused.value) and not isinstance(refused.value, gpustack_api.GpustackUnreachable)


def test_an_expired_session_logs_in_again_once(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.expire_sessions = 1
    assert [c["name"] for c in api.items("/v2/clusters")] == ["default"]
    assert fake.logins == 2 and fake.expire_sessions == 0


def test_a_401_after_logging_in_again_is_raised_not_retried_for_ever(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.expire_sessions = 5
    with pytest.raises(GpustackApiError) as raised:
        api.call("GET", "/v2/clusters?page=1&perPage=100")
    assert raised.value.code == 401 and fake.logins == 2 and fake.expire_sessions == 3
    assert str(raised.value) == ("GPUStack GET /v2/clusters?page=1&perPage=100: HTTP 401 "
                                 "Invalid authentication credentials")


def test_other_http_errors_are_raised_at_once_with_the_servers_message(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    with pytest.raises(GpustackApiError) as raised:
        api.call("PUT", "/v2/models/3", {"replicas": 2})
    assert (raised.value.code, fake.logins) == (404, 1)
    assert str(raised.value) == "GPUStack PUT /v2/models/3: HTTP 404 Model 3 not found"


def test_a_client_error_is_not_taken_for_an_expired_session(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.error_body["/v2/models"] = (400, b'{"code": 400, "message": "name is required"}')
    with pytest.raises(GpustackApiError, match="HTTP 400 name is required"):
        api.create_model({})
    assert fake.logins == 1


def test_an_error_body_that_cannot_be_read_gives_the_status_reason():
    class Cut:
        def read(self, *args: Any) -> bytes:
            raise ConnectionResetError("connection reset by peer")

        def close(self) -> None:
            pass

    error = urllib.error.HTTPError("http://127.0.0.1:1/v2/models", 502, "Bad Gateway", {}, Cut())  # type: ignore[arg-type]
    assert gpustack_api._message(error) == "Bad Gateway"


@pytest.mark.parametrize("body, shown", [
    (b'{"code": 500, "message": "database is locked"}', "database is locked"),
    (b'{"code": 500, "message": ""}', '{"code": 500, "message": ""}'),
    (b'["not", "an", "object"]', '["not", "an", "object"]'),
    (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    (b"x" * 600, "x" * 500),
    # Found by mutation testing: the cut of a long JSON message (`[:500]` -> `[:499]`) was untested.
    (json.dumps({"code": 500, "message": "y" * 600}).encode(), "y" * 500),
])
def test_an_error_body_is_shown_by_its_message_or_as_text(server, body, shown):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.error_body["/v2/models/9"] = (500, body)
    with pytest.raises(GpustackApiError, match="^GPUStack GET /v2/models/9: HTTP 500 (.*)$") as raised:
        api.get_model(9)
    assert str(raised.value) == f"GPUStack GET /v2/models/9: HTTP 500 {shown}"


def test_an_empty_answer_is_none_and_raw_is_the_text(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.models[3] = {"id": 3, "name": "m"}
    assert api.call("DELETE", "/v2/models/3") is None
    fake.logs[5] = "line 1\nline 2\n"
    assert api.call("GET", "/v2/model-instances/5/logs?tail=30", raw=True) == "line 1\nline 2\n"


def test_a_paged_list_is_read_page_by_page_to_its_last(server):
    fake, url = server
    fake.page_size = 2
    fake.clusters = [{"id": i, "name": f"c{i}"} for i in range(1, 6)]
    api = GpustackApi(url, "admin", PASSWORD)
    assert [c["id"] for c in api.items("/v2/clusters")] == [1, 2, 3, 4, 5]
    pages = [t for m, t, _, _ in fake.requests if t.startswith("/v2/clusters")]
    assert pages == [f"/v2/clusters?page={p}&perPage=100" for p in (1, 2, 3)]
    # A path with a query already gets `&`.
    fake.workers = [ready_worker()]
    assert api.workers(1) == [ready_worker()]
    assert fake.requests[-1][1] == "/v2/workers?cluster_id=1&page=1&perPage=100"


def test_a_list_without_pagination_is_one_page(server):
    fake, url = server
    fake.error_body["/v2/clusters?page=1&perPage=100"] = (200, b'{"items": [{"id": 4, "name": "only"}]}')
    # Never asked for: a second page would be read only if the first said there is one.
    fake.error_body["/v2/clusters?page=2&perPage=100"] = (200, b'{"items": [{"id": 5, "name": "other"}]}')
    api = GpustackApi(url, "admin", PASSWORD)
    assert api.items("/v2/clusters") == [{"id": 4, "name": "only"}]


@pytest.mark.parametrize("clusters, name, chosen", [
    ([{"id": 1, "name": "a"}, {"id": 2, "name": "b", "is_default": True}], None, 2),
    ([{"id": 1, "name": "a"}, {"id": 2, "name": "b", "is_default": True}], "a", 1),
    ([{"id": 3, "name": "only"}], None, 3),
    # The named one listed after one whose name sorts above it.
    ([{"id": 5, "name": "zeta"}, {"id": 6, "name": "alpha", "is_default": True}], "alpha", 6),
])
def test_the_cluster_is_the_named_or_the_default_or_the_only_one(server, clusters, name, chosen):
    fake, url = server
    fake.clusters = clusters
    assert GpustackApi(url, "admin", PASSWORD).cluster_id(name) == chosen


def cluster_refusal(server, clusters: list[dict], name: str | None) -> tuple[str, str]:
    """(the server's URL, the message `cluster_id` refuses `clusters` with)."""
    fake, url = server
    fake.clusters = clusters
    with pytest.raises(GpustackError) as raised:
        GpustackApi(url, "admin", PASSWORD).cluster_id(name)
    return url, str(raised.value)


@pytest.mark.parametrize("clusters, name, missing, have", [
    ([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], None, "default cluster", "a, b"),
    ([], None, "default cluster", "none"),
    ([{"id": 1, "name": "a", "is_default": True}], "b", "cluster named 'b'", "a"),
])
def test_no_cluster_to_deploy_into_is_one_line(server, clusters, name, missing, have):
    url, message = cluster_refusal(server, clusters, name)
    assert message == (f"GPUStack at {url} has no {missing} to deploy into (clusters: {have}); a 2.x "
                       "server makes its default cluster when started with --enable-worker or --token")


@pytest.mark.parametrize("clusters, name, wanted, which", [
    # One default cluster per organization (gpustack/schemas/clusters.py): an admin sees each.
    ([{"id": 1, "name": "a", "is_default": True}, {"id": 2, "name": "b", "is_default": True}], None,
     "2 default clusters", "a (id 1), b (id 2)"),
    ([{"id": 3, "name": "x"}, {"id": 4, "name": "y", "is_default": True}, {"id": 5, "name": "x"}], "x",
     "2 clusters named 'x'", "x (id 3), x (id 5)"),
])
def test_two_clusters_that_fit_are_refused_not_one_picked(server, clusters, name, wanted, which):
    # Found by mutation testing: `chosen[0]` -> `chosen[-1]` passed every test, as no test had
    # two clusters that fit: the model went to whichever the server listed first.
    url, message = cluster_refusal(server, clusters, name)
    assert message == (f"GPUStack at {url} has {wanted} ({which}); the model could go to either: "
                       "leave one (GPUStack's Clusters page) before deploying")


def test_create_deploys_into_the_default_cluster_and_waits_for_the_instance(server):
    fake, url = server
    fake.workers = [ready_worker()]
    lines: list[str] = []
    model_id, outputs = gpustack_api.create_model(props(url), lines.append)
    assert model_id == "7" and fake.models[7]["cluster_id"] == 1
    posted = [(h["Content-Type"], json.loads(b)) for m, t, h, b in fake.requests if (m, t) == ("POST", "/v2/models")]
    assert posted == [("application/json", {**props(url)["model"], "cluster_id": 1})]
    assert lines == ["GPUStack workers ready: node0", "GPUStack model DeepSeek-R1 created (id 7)",
                     "model DeepSeek-R1: instance DeepSeek-R1-x1 new -> running"]
    assert outputs == {**props(url), "model": props(url)["model"], "model_id": 7, "cluster_id": 1}


@pytest.mark.parametrize("more", [{"ready_timeout_s": 0}, {"ready_timeout_s": None},
                                  {"model": {**props("")["model"], "replicas": 0}}])
def test_no_instance_wait_without_a_ready_timeout_or_replicas(server, more):
    fake, url = server
    fake.workers = [ready_worker()]
    lines: list[str] = []
    gpustack_api.create_model(props(url, **more), lines.append)
    assert lines == ["GPUStack workers ready: node0", "GPUStack model DeepSeek-R1 created (id 7)"]
    assert not any(t.startswith("/v2/model-instances") for _, t, _, _ in fake.requests)


def test_the_shortest_ready_timeout_still_waits_for_the_instance(server):
    # Found by mutation testing: `ready_timeout_s > 0` -> `> 1` passed (every test waited 5 s
    # or not at all); 1 s is the least `Seconds` allows (engines/base.py).
    fake, url = server
    fake.workers = [ready_worker()]
    lines: list[str] = []
    gpustack_api.create_model(props(url, ready_timeout_s=1), lines.append)
    assert lines[-1] == "model DeepSeek-R1: instance DeepSeek-R1-x1 new -> running"


def test_a_model_without_replicas_is_taken_for_one_replica_and_waited_for(server):
    # Found by mutation testing: the default of an absent `replicas`, 1 -> 0, passed.
    fake, url = server
    fake.workers = [ready_worker()]
    model = {k: v for k, v in props("")["model"].items() if k != "replicas"}
    lines: list[str] = []
    gpustack_api.create_model(props(url, model=model), lines.append)
    assert lines[-1] == "model DeepSeek-R1: instance DeepSeek-R1-x1 new -> running"


def test_create_takes_over_a_model_of_the_same_name_left_by_an_interrupted_run(server):
    fake, url = server
    fake.workers = [ready_worker()]
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1", "replicas": 2, "restart_on_error": True}
    fake.models[4] = {"id": 4, "name": "DeepSeek-R1-distill", "replicas": 1}
    fake.instances[3] = [{"id": 30, "name": "DeepSeek-R1-y", "state": "running", "worker_id": 1}]
    lines: list[str] = []
    model_id, _ = gpustack_api.create_model(props(url, workers=None), lines.append)
    assert model_id == "3" and fake.models[3]["replicas"] == 1 and len(fake.models) == 2
    assert lines[0] == "GPUStack model DeepSeek-R1 updated (id 3)"
    assert ("GET", "/v2/models?search=DeepSeek-R1&page=1&perPage=100") in [(m, t) for m, t, _, _ in fake.requests]


def test_update_of_a_model_deleted_by_hand_says_to_refresh(server):
    fake, url = server
    with pytest.raises(GpustackError) as raised:
        gpustack_api.update_model("9", props(url, workers=[]), lambda line: None)
    assert str(raised.value) == (f"GPUStack model DeepSeek-R1 (id 9) is gone from {url}; run `pulumi refresh` "
                                 "(it drops the model from the state), then `pulumi up` creates it")


@pytest.mark.parametrize("worker_timeout_s", [5, None])
def test_update_changes_the_model_in_place_and_gives_the_new_outputs(server, worker_timeout_s):
    # Found by mutation testing: no test updated a model that exists (update_model's `[1]`
    # -> `[2]` passed).
    fake, url = server
    fake.workers = [ready_worker()]
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1", "replicas": 2, "restart_on_error": True, "cluster_id": 1}
    fake.instances[3] = [{"id": 30, "name": "DeepSeek-R1-y", "state": "running", "worker_id": 1}]
    lines: list[str] = []
    # Without a worker timeout too (the default's `or 60` -> `and 60` passed).
    outputs = gpustack_api.update_model("3", props(url, worker_timeout_s=worker_timeout_s), lines.append)
    assert fake.models[3]["replicas"] == 1 and len(fake.models) == 1
    assert outputs == {**props(url, worker_timeout_s=worker_timeout_s), "model": props(url)["model"],
                       "model_id": 3, "cluster_id": 1}
    assert lines == ["GPUStack workers ready: node0", "GPUStack model DeepSeek-R1 updated (id 3)",
                     "model DeepSeek-R1: instance DeepSeek-R1-y new -> running"]


@pytest.mark.parametrize("username", [None, ""])
def test_a_stack_without_a_user_name_logs_in_as_admin(server, username):
    # Found by mutation testing: `username or "admin"` -> `and` passed (every test named admin).
    fake, url = server
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1"}
    assert gpustack_api.read_model("3", props(url, username=username))["model_id"] == 3
    assert fake.logins == 1


def test_read_and_delete_ask_a_server_that_does_not_answer_once():
    # Found by mutation testing: `_session`'s `wait_s=0` -> 1 passed. Only create and update
    # wait for a server still starting; refresh and destroy report it at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = props(f"http://127.0.0.1:{port}")
    for call in (lambda: gpustack_api.read_model("3", closed),
                 lambda: gpustack_api.delete_model("3", closed, lambda line: None)):
        with pytest.raises(GpustackError) as raised:
            call()
        assert str(raised.value).startswith(f"GPUStack at http://127.0.0.1:{port} did not answer the login")
        assert "after" not in str(raised.value)


def test_a_server_that_hangs_up_without_an_answer_is_one_line(server):
    # Found by mutation testing: no test reached `call`'s `except (URLError, OSError)`. A
    # connection closed before the answer is http.client's RemoteDisconnected, an OSError
    # that urllib does not wrap in a URLError.
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    fake.hang_up.add("/v2/clusters?page=1&perPage=100")
    with pytest.raises(GpustackError) as raised:
        api.items("/v2/clusters")
    assert str(raised.value).startswith(f"GPUStack GET /v2/clusters?page=1&perPage=100: no answer from {url}: ")
    assert not isinstance(raised.value, GpustackApiError)


def test_an_instance_in_error_read_from_the_server_fails_the_wait_at_once(server):
    # Found by mutation testing: `state == "error"` -> `is "error"` passed. The instance
    # wait's other tests give it string literals, which Python interns; a state decoded
    # from the server's JSON is a string of its own.
    fake, url = server
    fake.workers = [ready_worker()]
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1", "replicas": 1, "restart_on_error": False, "cluster_id": 1}
    fake.instances[3] = [{"id": 30, "name": "DeepSeek-R1-y", "state": "error", "state_message": "HCCL init failed",
                          "worker_id": 1}]
    with pytest.raises(GpustackError) as raised:
        gpustack_api.update_model("3", props(url), lambda line: None)
    assert str(raised.value).startswith("model DeepSeek-R1: instance DeepSeek-R1-y failed (")
    assert "last error: HCCL init failed" in str(raised.value)


@pytest.mark.parametrize("other", ["AWQ-DeepSeek-R1", "DeepSeek-R1-Distill-Qwen-7B"])
def test_create_does_not_take_over_a_model_whose_name_only_contains_the_stacks(server, other):
    # Found by mutation testing: find_model's `name == wanted` -> `<=` passed: GPUStack's
    # search matches a part of the name, and no test's other model sorted before the stack's;
    # then `>=`, as none sorted after it either.
    fake, url = server
    fake.workers = [ready_worker()]
    fake.models[3] = {"id": 3, "name": other, "replicas": 1}
    model_id, _ = gpustack_api.create_model(props(url), lambda line: None)
    assert model_id == "7" and fake.models[3] == {"id": 3, "name": other, "replicas": 1}


def test_read_gives_what_the_server_has_and_none_when_the_model_is_gone(server):
    fake, url = server
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1", "replicas": 3, "cluster_id": 1, "backend": "MindIE",
                      "created_at": "2026-12-06"}
    read = gpustack_api.read_model("3", props(url))
    assert read["model"] == {**props(url)["model"], "replicas": 3} and (read["model_id"], read["cluster_id"]) == (3, 1)
    # Without the requested model (an import), every managed field the server has.
    bare = gpustack_api.read_model("3", {k: v for k, v in props(url).items() if k != "model"})
    assert bare["model"] == {**dict.fromkeys(gpustack_api.MODEL_FIELDS), "name": "DeepSeek-R1", "replicas": 3,
                             "backend": "MindIE"}
    assert gpustack_api.read_model("4", props(url)) is None


def test_delete_removes_the_model_and_waits_for_it(server):
    fake, url = server
    fake.models[3] = {"id": 3, "name": "DeepSeek-R1"}
    lines: list[str] = []
    gpustack_api.delete_model("3", props(url), lines.append)
    assert fake.models == {} and lines == ["GPUStack model 3 deleted"]


def test_the_log_tail_is_the_last_30_lines_even_if_the_server_sends_more(server):
    fake, url = server
    fake.logs[5] = "".join(f"line {i}\n" for i in range(1, 51))
    api = GpustackApi(url, "admin", PASSWORD)
    assert api.instance_log(5) == "\n".join(f"line {i}" for i in range(21, 51))
    assert fake.requests[-1][1] == "/v2/model-instances/5/logs?tail=30"
    assert api.instance_log(6).startswith("(its log could not be read: GPUStack GET /v2/model-instances/6/logs")


def test_a_field_the_server_does_not_store_keeps_the_requested_value():
    assert gpustack_api.model_view({"replicas": 2, "id": 7}, {"replicas": 1, "enable_model_route": True}) == {
        "replicas": 2, "enable_model_route": True}


def test_the_workers_wait_lasts_the_resources_worker_timeout(server):
    fake, url = server
    fake.workers = [{**ready_worker(), "state": "not_ready"}]
    # Asked at 0 s, then after one 2 s poll, past the deadline: the last (a wait that missed
    # its deadline would ask a third time and get a 429).
    fake.answers_left["/v2/workers"] = 2
    with pytest.raises(GpustackError) as raised:
        gpustack_api.create_model(props(url, worker_timeout_s=0.2), lambda line: None)
    assert str(raised.value) == "worker node0 is not_ready; expected ready (after 0.2 s)"


def test_a_server_that_does_not_answer_is_waited_for_the_resources_worker_timeout():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(GpustackError, match=r"did not answer the login: .* \(after 0\.2 s\)$"):
        gpustack_api.create_model(props(url, worker_timeout_s=0.2), lambda line: None)


def test_only_a_404_reads_as_a_model_that_is_gone(server):
    fake, url = server
    api = GpustackApi(url, "admin", PASSWORD)
    assert api.get_model(9) is None
    fake.error_body["/v2/models/9"] = (403, b'{"code": 403, "message": "Forbidden"}')
    with pytest.raises(GpustackApiError, match="HTTP 403 Forbidden"):
        api.get_model(9)
