"""GPUStack 2.x's HTTP API, as the program's model resource uses it from the
control host: log in, wait for the workers (runbook 002 step 3), create,
read, update and delete one model deployment (step 4), wait for its instance
(step 5). Pure: urllib only, no Pulumi; components/gpustack_model.py wraps it
as a `pulumi.dynamic` resource, which the real `pulumi` runs (tests/realengine,
tests/emulated/test_gpustack_rollout.py).

API facts (GPUStack 2.3.0's `gpustack/routes`, checked against a real server
in tests/realsoftware): `POST /auth/login` takes the form fields username and
password and sets the session cookie; `/v2/models` (list with `search`,
create), `/v2/models/{id}` (get, put, delete), `/v2/model-instances?model_id=`,
`/v2/model-instances/{id}/logs?tail=N` (the serving log, streamed from the
worker), `/v2/workers?cluster_id=` (each with `state` "ready" when usable and
`status.gpu_devices`), `/v2/clusters`. Lists page by `page`/`perPage`
(default 100). Errors come back as {"code", "reason", "message"}.

The admin password is used in the login body only; no message here carries it.
"""
from __future__ import annotations

import http.cookiejar
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What the program manages of a model; anything else the server stores
# (its defaults, counters) is neither compared nor overwritten.
MODEL_FIELDS = ("name", "source", "local_path", "huggingface_repo_id", "model_scope_model_id", "backend",
                "backend_version", "backend_parameters", "replicas", "env", "distributed_inference_across_workers",
                "placement_strategy", "enable_model_route")
# A change of these is another model: GPUStack keys deployments by name, and
# a new path or source is new weights. Everything else GPUStack applies to the
# same model (`PUT /v2/models/{id}`, it then restarts the instances).
MODEL_REPLACE_FIELDS = ("name", "source", "local_path", "huggingface_repo_id", "model_scope_model_id")
# Inputs of the resource outside the model body: another server or cluster is
# another deployment; `triggers` (the containers' ids) redeploy in place.
RESOURCE_REPLACE_FIELDS = ("server_url", "cluster")
RESOURCE_UPDATE_FIELDS = ("triggers",)

Progress = Callable[[str], None]


class GpustackError(RuntimeError):
    """One line naming what failed, what was found and what was expected."""


@dataclass(frozen=True)
class Change:
    changes: list[str]
    replaces: list[str]


def _norm(value: Any) -> Any:
    # The server answers null, {} or [] for an unset optional field alike.
    return None if value in (None, {}, [], "") else value


def model_view(stored: dict[str, Any], requested: dict[str, Any]) -> dict[str, Any]:
    """The requested fields of a model as the server stores them. A field the
    server does not answer with is a request-only switch (`enable_model_route`
    makes the model's route and is no column): it keeps the requested value."""
    return {k: stored[k] if k in stored else v for k, v in requested.items()}


def plan_change(olds: dict[str, Any], news: dict[str, Any]) -> Change:
    """Which inputs differ and which of them replace the deployment: the
    resource's `diff` rules as a pure function. Model fields are compared
    only where the stack sets them (`news["model"]`), so the server's own
    defaults for the rest are never a change."""
    changes: list[str] = []
    replaces: list[str] = []
    for key in (*RESOURCE_REPLACE_FIELDS, *RESOURCE_UPDATE_FIELDS):
        if _norm(olds.get(key)) != _norm(news.get(key)):
            changes.append(key)
            if key in RESOURCE_REPLACE_FIELDS:
                replaces.append(key)
    old_model, new_model = olds.get("model") or {}, news.get("model") or {}
    for key in new_model:
        # A field the stack leaves unset is the server's to choose.
        if _norm(new_model[key]) is None:
            continue
        if _norm(old_model.get(key)) != _norm(new_model.get(key)):
            changes.append(f"model.{key}")
            if key in MODEL_REPLACE_FIELDS:
                replaces.append(f"model.{key}")
    return Change(changes, replaces)


def npu_count(worker: dict[str, Any]) -> int:
    devices = (worker.get("status") or {}).get("gpu_devices") or []
    # Ascend devices report vendor "ascend" / type "cann"; count only those.
    return sum(1 for d in devices if (d.get("vendor") or "").lower() in ("ascend", "huawei")
               or (d.get("type") or "").lower() == "cann")


def worker_problems(expected: list[dict[str, Any]], workers: list[dict[str, Any]]) -> list[str]:
    """Per expected worker ({name, npus}) that is not usable: one line naming
    it, what GPUStack shows and what is expected. Empty when all are Ready."""
    by_name = {w.get("name"): w for w in workers}
    problems = []
    for want in expected:
        name, npus = want["name"], int(want["npus"])
        found = by_name.get(name)
        if found is None:
            registered = ", ".join(sorted(str(n) for n in by_name)) or "none"
            problems.append(f"worker {name} has not registered with GPUStack (registered: {registered}); "
                            f"expected it Ready with {npus} NPUs")
            continue
        state = found.get("state")
        if state != "ready":
            why = f" ({found['state_message']})" if found.get("state_message") else ""
            problems.append(f"worker {name} is {state}{why}; expected ready")
            continue
        have = npu_count(found)
        if have < npus:
            problems.append(f"worker {name} reports {have} NPUs; expected {npus}")
    return problems


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """What an https server is checked against: the stack's CA bundle
    (`engine.tls.control_ca`) when given, else the system's trust store. The
    certificate and its host name are always checked; there is no switch to
    turn that off."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()


class GpustackApi:
    """A logged-in session with one GPUStack 2.x server."""

    def __init__(self, server_url: str, username: str, password: str, *, timeout_s: float = 60,
                 ca_pem: str | None = None):
        self.server = server_url.rstrip("/")
        self.timeout_s = timeout_s
        self._username, self._password = username, password
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                   urllib.request.HTTPSHandler(context=tls_context(ca_pem)))
        self.login()

    def login(self) -> None:
        body = urllib.parse.urlencode({"username": self._username, "password": self._password}).encode()
        request = urllib.request.Request(f"{self.server}/auth/login", data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with self._opener.open(request, timeout=self.timeout_s):
                pass
        except urllib.error.HTTPError as error:
            raise GpustackError(f"GPUStack login as {self._username} at {self.server} refused: "
                                f"HTTP {error.code} {_message(error)}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ssl.SSLCertVerificationError):
                # Not a server still starting: asking again would not change the certificate.
                raise GpustackError(
                    f"GPUStack at {self.server}: its certificate was refused ({reason.verify_message}); the "
                    "control host checks it against engine.tls.control_ca, which must hold the CA that signed "
                    "engine.tls.cert, and the certificate must name the server's address") from None
            raise GpustackUnreachable(f"GPUStack at {self.server} did not answer the login: {_reason(error)}") from None

    def call(self, method: str, path: str, body: Any = None, *, raw: bool = False, relogin: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                text = answer.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            # The session cookie lasts 2 h (Max-Age=7200): log in again once.
            if error.code == 401 and relogin:
                self.login()
                return self.call(method, path, body, raw=raw, relogin=False)
            raise GpustackApiError(method, path, error.code, _message(error)) from None
        except (urllib.error.URLError, OSError) as error:
            raise GpustackError(f"GPUStack {method} {path}: no answer from {self.server}: {_reason(error)}") from None
        if raw:
            return text
        return json.loads(text) if text.strip() else None

    def items(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        out: list[dict[str, Any]] = []
        page = 1
        sep = "&" if "?" in path else "?"
        while True:
            answer = self.call("GET", f"{path}{sep}page={page}&perPage=100")
            items = answer.get("items") or []
            out.extend(items)
            total_pages = (answer.get("pagination") or {}).get("totalPage") or 1
            if page >= total_pages or not items:
                return out
            page += 1

    # --- clusters, workers ----------------------------------------------------

    def cluster_id(self, name: str | None) -> int:
        """The named cluster, or the server's default one."""
        clusters = self.items("/v2/clusters")
        if name:
            chosen = [c for c in clusters if c.get("name") == name]
        else:
            chosen = [c for c in clusters if c.get("is_default")] or (clusters if len(clusters) == 1 else [])
        if not chosen:
            have = ", ".join(str(c.get("name")) for c in clusters) or "none"
            wanted = f"cluster named {name!r}" if name else "default cluster"
            raise GpustackError(f"GPUStack at {self.server} has no {wanted} to deploy into (clusters: {have}); "
                                "a 2.x server makes its default cluster when started with --enable-worker or --token")
        if len(chosen) > 1:
            # Names are not unique, and a server keeps one default cluster per organization
            # (gpustack/schemas/clusters.py, uix_clusters_default_per_org): never pick one blindly.
            which = ", ".join(f"{c.get('name')} (id {c.get('id')})" for c in chosen)
            wanted = f"clusters named {name!r}" if name else "default clusters"
            raise GpustackError(f"GPUStack at {self.server} has {len(chosen)} {wanted} ({which}); the model could "
                                "go to either: leave one (GPUStack's Clusters page) before deploying")
        return int(chosen[0]["id"])

    def workers(self, cluster_id: int) -> list[dict[str, Any]]:
        return self.items(f"/v2/workers?cluster_id={cluster_id}")

    def wait_workers(self, cluster_id: int, expected: list[dict[str, Any]], timeout_s: float,
                     progress: Progress, poll_s: float = 2) -> None:
        """Runbook 002 step 3: every expected worker Ready with its NPUs."""
        if not expected:
            return
        deadline = time.monotonic() + timeout_s
        shown: list[str] = []
        while True:
            problems = worker_problems(expected, self.workers(cluster_id))
            if not problems:
                progress(f"GPUStack workers ready: {', '.join(w['name'] for w in expected)}")
                return
            if problems != shown:
                progress(f"waiting for GPUStack workers: {problems[0]}")
                shown = problems
            if time.monotonic() >= deadline:
                # Every worker that is not usable, not just the first: a worker the server
                # briefly cannot reach (its health check timing out on a busy host) must not
                # hide the one that never registered.
                raise GpustackError(f"{'; '.join(problems)} (after {timeout_s:g} s)")
            time.sleep(poll_s)

    # --- models -----------------------------------------------------------------

    def find_model(self, name: str) -> dict[str, Any] | None:
        query = urllib.parse.quote(name, safe="")
        return next((m for m in self.items(f"/v2/models?search={query}") if m.get("name") == name), None)

    def get_model(self, model_id: int | str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call("GET", f"/v2/models/{model_id}")
            return found
        except GpustackApiError as error:
            if error.code == 404:
                return None
            raise

    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.call("POST", "/v2/models", body)
        return created

    def update_model(self, model_id: int | str, body: dict[str, Any]) -> dict[str, Any]:
        updated: dict[str, Any] = self.call("PUT", f"/v2/models/{model_id}", body)
        return updated

    def instances(self, model_id: int | str) -> list[dict[str, Any]]:
        return self.items(f"/v2/model-instances?model_id={model_id}")

    def instance_log(self, instance_id: int | str, lines: int = 30) -> str:
        try:
            text = self.call("GET", f"/v2/model-instances/{instance_id}/logs?tail={lines}", raw=True)
        except GpustackError as error:
            return f"(its log could not be read: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def delete_model(self, model_id: int | str, timeout_s: float, progress: Progress, poll_s: float = 2) -> None:
        """Delete the model and wait until it and its instances are gone."""
        try:
            self.call("DELETE", f"/v2/models/{model_id}")
        except GpustackApiError as error:
            if error.code != 404:
                raise
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.instances(model_id)
            if not left and self.get_model(model_id) is None:
                progress(f"GPUStack model {model_id} deleted")
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{i.get('name')} ({i.get('state')})" for i in left) or "the model itself"
                raise GpustackError(f"GPUStack model {model_id} still there {timeout_s:g} s after its delete: {names}")
            time.sleep(poll_s)

    def wait_running(self, model_id: int | str, name: str, timeout_s: float, progress: Progress,
                     poll_s: float = 5) -> None:
        """Runbook 002 step 5 (see wait_instance_running)."""
        wait_instance_running(self, model_id, name, timeout_s, progress, poll_s)


def final_error(model: dict[str, Any] | None, instance: dict[str, Any]) -> str | None:
    """Why GPUStack will not restart an instance in `error`, or None when it will.

    What GPUStack 2.3.0 does (worker/serve_manager.py): every worker the
    instance occupies (`worker_id` and its subordinate workers) queues an
    instance it sees in `error` and restarts it (`_restart_error_model_instance`:
    back to `scheduled`, backoff 10 s doubling up to 5 min, no limit on the
    attempts) as long as the model's `restart_on_error` is true
    (gpustack/gpustack worker/serve_manager.py at 009d123,
    `_handle_model_instance_event` queues it only `if model.restart_on_error:`). The
    schema's default is true (schemas/models.py, `Optional[bool] = True`), so
    a model without the key is restarted, but one that stores null is not: a
    truth test, not `is False`. No state message
    makes an error final on that path: a launch failure such as "Cannot
    coordinate model ports with worker N" (routes/model_instance_ports.py, the
    server could not reach a worker's port-reservation API) and the
    crash-loop verdict "Restarted N times without serving" are both restarted.
    The errors that stay are the scheduler's (scheduler/scheduler.py: the model
    could not be evaluated, "not distributable to multiple workers"): they are
    set before any worker is assigned, so no worker restarts them and the
    scheduler only picks up pending/analyzing/scheduled instances again."""
    if model is not None and not model.get("restart_on_error", True):
        return "the model has restart_on_error off, so GPUStack does not restart it"
    if instance.get("worker_id") is None:
        return "no worker was assigned, so GPUStack does not restart it"
    return None


def _state_line(instance: dict[str, Any]) -> str:
    state = str(instance.get("state"))
    return f"{state} ({instance['state_message']})" if instance.get("state_message") else state


def wait_instance_running(api: GpustackApi, model_id: int | str, name: str, timeout_s: float,
                          progress: Progress, poll_s: float = 5, *,
                          clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep,
                          progress_every_s: float = 30) -> None:
    """Runbook 002 step 5: watch the instance come up, printing each change of
    state or message, and while nothing changes a line every
    progress_every_s (the time waited, the limit, the states): the dynamic
    provider's lines are what `pulumi up` shows during a wait of up to
    timeout_s. An `error` GPUStack will restart (final_error) is waited
    through until an instance runs or timeout_s passes; a final one fails at
    once. Either failure names the instance's last error and gives the last
    lines of its log."""
    started = clock()
    deadline = started + timeout_s
    reported = started
    seen: dict[str, str] = {}
    last_error: dict[str, Any] | None = None
    while True:
        instances = api.instances(model_id)
        for instance in instances:
            label, line = str(instance.get("name")), _state_line(instance)
            if seen.get(label) != line:
                before = seen.get(label, "new").split(" (", 1)[0]
                progress(f"model {name}: instance {label} {before} -> {line}")
                seen[label] = line
                reported = clock()
        if clock() - reported >= progress_every_s and not any(i.get("state") == "running" for i in instances):
            states = "; ".join(f"{k} {v}" for k, v in seen.items()) or "no instance yet"
            progress(f"model {name}: waiting for an instance to run: {clock() - started:.0f} s of "
                     f"{timeout_s:g} s ({states})")
            reported = clock()
        if any(i.get("state") == "running" for i in instances):
            return
        failed = next((i for i in instances if i.get("state") == "error"), None)
        if failed is not None:
            last_error = failed
            why = final_error(api.get_model(model_id), failed)
            if why is not None:
                raise GpustackError(_failure(api, name, failed, f"failed ({why})"))
        if clock() >= deadline:
            if last_error is not None:
                raise GpustackError(_failure(api, name, last_error,
                                             f"not running after {timeout_s:g} s; GPUStack kept restarting it"))
            states = "; ".join(f"{k}: {v}" for k, v in seen.items()) or "none"
            raise GpustackError(f"model {name} not running after {timeout_s:g} s (instances: {states})")
        sleep(poll_s)


def _failure(api: GpustackApi, name: str, instance: dict[str, Any], what: str) -> str:
    log = api.instance_log(instance["id"])
    return (f"model {name}: instance {instance.get('name')} {what}; last error: "
            f"{instance.get('state_message') or 'no message'}; last log lines:\n{log}")


class GpustackUnreachable(GpustackError):
    """No answer from the server at all (not started yet, or gone)."""


class GpustackApiError(GpustackError):
    def __init__(self, method: str, path: str, code: int, message: str):
        super().__init__(f"GPUStack {method} {path}: HTTP {code} {message}")
        self.code = code


def _message(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode(errors="replace")
    except OSError:
        return str(error.reason)
    try:
        return str(json.loads(text).get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]


def _reason(error: BaseException) -> str:
    return str(getattr(error, "reason", error))


# --- the model deployment's create / read / update / delete ------------------
# Props (the resource's inputs, and its outputs plus `model_id`/`cluster_id`):
#   server_url, ca_pem (the CA bundle an https server is checked against, or
#   None), username, password (secret), cluster (name or None: the
#   default cluster), model (the `POST /v2/models` body without cluster_id),
#   workers ([{name, npus}] that must be Ready first), worker_timeout_s,
#   ready_timeout_s (0: do not wait for an instance), delete_timeout_s,
#   triggers (values whose change redeploys in place).

def _session(props: dict[str, Any], wait_s: float = 0, poll_s: float = 2) -> GpustackApi:
    """Logged in; for up to wait_s a server that does not answer yet is asked again: a 2.x
    server writes its token and admin password (which the workers and this resource wait
    for) before its API listens, so right after the containers start it refuses connections."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return GpustackApi(props["server_url"], props.get("username") or "admin", props["password"],
                               ca_pem=props.get("ca_pem") or None)
        except GpustackUnreachable as error:
            if time.monotonic() >= deadline:
                raise GpustackError(f"{error} (after {wait_s:g} s)" if wait_s else str(error)) from None
            time.sleep(poll_s)


def _deploy(api: GpustackApi, props: dict[str, Any], model_id: int | str | None,
            progress: Progress) -> tuple[str, dict[str, Any]]:
    model = dict(props["model"])
    cluster_id = api.cluster_id(props.get("cluster"))
    api.wait_workers(cluster_id, list(props.get("workers") or []), float(props.get("worker_timeout_s") or 60),
                     progress)
    body = {**model, "cluster_id": cluster_id}
    if model_id is None:
        # A model of that name left by an interrupted run is taken over, not duplicated
        # (GPUStack refuses a second one of the same name).
        existing = api.find_model(model["name"])
        model_id = existing["id"] if existing else None
    elif api.get_model(model_id) is None:
        # Deleted outside Pulumi: an update cannot give the resource a new id.
        raise GpustackError(f"GPUStack model {model['name']} (id {model_id}) is gone from {api.server}; "
                            "run `pulumi refresh` (it drops the model from the state), then `pulumi up` creates it")
    if model_id is None:
        stored = api.create_model(body)
        progress(f"GPUStack model {model['name']} created (id {stored['id']})")
    else:
        stored = api.update_model(model_id, body)
        progress(f"GPUStack model {model['name']} updated (id {stored['id']})")
    ready_timeout_s = float(props.get("ready_timeout_s") or 0)
    if int(model.get("replicas", 1)) > 0 and ready_timeout_s > 0:
        api.wait_running(stored["id"], model["name"], ready_timeout_s, progress)
    return str(stored["id"]), {**props, "model": model_view(stored, model),
                               "model_id": int(stored["id"]), "cluster_id": cluster_id}


def create_model(props: dict[str, Any], progress: Progress) -> tuple[str, dict[str, Any]]:
    return _deploy(_session(props, float(props.get("worker_timeout_s") or 60)), props, None, progress)


def update_model(model_id: str, news: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return _deploy(_session(news, float(news.get("worker_timeout_s") or 60)), news, model_id, progress)[1]


def read_model(model_id: str, props: dict[str, Any]) -> dict[str, Any] | None:
    """What the server has now (a hand edit in the UI shows here), or None when
    the model is gone."""
    api = _session(props)
    stored = api.get_model(model_id)
    if stored is None:
        return None
    requested = props.get("model") or dict.fromkeys(MODEL_FIELDS)
    return {**props, "model": model_view(stored, requested),
            "model_id": int(stored["id"]), "cluster_id": stored.get("cluster_id")}


def delete_model(model_id: str, props: dict[str, Any], progress: Progress) -> None:
    _session(props).delete_model(model_id, float(props.get("delete_timeout_s") or 300), progress)
