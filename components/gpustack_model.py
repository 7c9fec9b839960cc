"""GPUStack's model deployment as a Pulumi resource with create, read,
update and delete through GPUStack 2.x's HTTP API, run from the control host
(a `pulumi.dynamic` provider; the API calls are in
ascend_inference/gpustack_api.py).

- `diff`: an update when a backend parameter, the replica count, the backend
  (version), the env or `triggers` change; a replacement (deleted first: names
  are unique in GPUStack) when the model's name, source or path, the server
  or the cluster change.
- `read`: what the server has, so `pulumi refresh` sees a change made by hand
  in the UI and the next `up` puts the stack's values back.
- create/update wait for every expected worker to be Ready with its NPUs
  (runbook 002 step 3; one line naming the worker that is missing), then for
  an instance to run, printing each state change (step 5). An instance `error`
  that GPUStack restarts by itself (restart_on_error) is waited through until
  `ready_timeout_s`; one it will not restart fails at once; either failure
  gives the last error and the instance's last log lines
  (gpustack_api.wait_instance_running). Delete waits until the instances are gone.

The admin password is a secret input and output (`additional_secret_outputs`)
and is only ever sent in GPUStack's login form. Over HTTPS the server is
checked against the stack's CA (`ca_pem`, a public certificate bundle).

A failure is one message (`one_message`), never a Python traceback: see
GpustackModelError.
"""
from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pulumi
from pulumi.dynamic import (
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from ascend_inference import gpustack_api


def _progress(line: str) -> None:
    # A dynamic provider's stderr is shown by the Pulumi CLI as the resource's messages.
    print(line, file=sys.stderr, flush=True)


class GpustackModelError(Exception):
    """The model resource's failure, as the Pulumi CLI prints it: `error:
    GpustackModelError: <the one line>`.

    The SDK's dynamic-provider server answers any exception of a provider
    method with `traceback.format_exc()` as the gRPC error's text (pulumi
    v3.272.0, sdk/python/lib/pulumi/dynamic/__main__.py `_abort_with_traceback`),
    and the engine prints that text: a traceback first, the message last.
    `traceback.format_exc()` prints no stack when `sys.tracebacklimit` is 0
    (CPython 3.11 Lib/traceback.py `StackSummary._extract_from_extended_frame_gen`
    reads it when no limit is given; the sys module documents 0 as "only the
    exception type and value are printed"), and only `<type>: <value>` then,
    the type without its module for builtins (`TracebackException.format_exception_only`)."""

    __module__ = "builtins"


F = TypeVar("F", bound=Callable[..., Any])


def one_message(method: F) -> F:
    """A provider method whose failure is one GpustackModelError: GPUStack's
    own failures (GpustackError: one line naming what failed, found and
    expected) as they are; any other exception is a fault of this program,
    and its traceback stays, as the message's lines after the first."""

    @functools.wraps(method)
    def run(*args: Any) -> Any:
        try:
            return method(*args)
        except gpustack_api.GpustackError as error:
            raise GpustackModelError(str(error)) from None
        except Exception as error:
            # An explicit limit: this process runs with sys.tracebacklimit 0 (`configure`).
            stack = "".join(traceback.format_exception(error, limit=100)).rstrip("\n")
            raise GpustackModelError(f"{type(error).__name__}: {error}\n{stack}") from None

    return cast(F, run)


class GpustackModelProvider(ResourceProvider):
    def configure(self, req: ConfigureRequest) -> None:
        # Called once, in the dynamic-provider plugin's own process (pulumi.dynamic
        # __main__ `get_provider`, right after the provider is unpickled), whose
        # only provider this is: every failure there is a GpustackModelError
        # (`one_message`), printed without the server's stack.
        sys.tracebacklimit = 0

    @one_message
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        change = gpustack_api.plan_change(olds, news)
        return DiffResult(changes=bool(change.changes), replaces=change.replaces,
                          delete_before_replace=bool(change.replaces))

    @one_message
    def create(self, props: dict[str, Any]) -> CreateResult:
        model_id, outs = gpustack_api.create_model(props, _progress)
        return CreateResult(id_=model_id, outs=outs)

    @one_message
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        outs = gpustack_api.read_model(id_, props)
        # No id: the model is gone, and refresh drops it from the state.
        return ReadResult(id_=id_ if outs is not None else None, outs=outs or {})

    @one_message
    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=gpustack_api.update_model(id_, news, _progress))

    @one_message
    def delete(self, id_: str, props: dict[str, Any]) -> None:
        gpustack_api.delete_model(id_, props, _progress)


@dataclass(frozen=True)
class GpustackModelArgs:
    server_url: pulumi.Input[str]
    password: pulumi.Input[str]
    # The `POST /v2/models` body, without cluster_id (looked up at run time).
    model: dict[str, Any]
    # [{"name": worker name, "npus": count}] that must be Ready before deploying.
    workers: list[dict[str, Any]] = field(default_factory=list)
    cluster: str | None = None
    # The CA bundle (PEM) an https server is checked against (engine.tls.control_ca); None for http.
    ca_pem: str | None = None
    username: str = "admin"
    worker_timeout_s: int = 60
    ready_timeout_s: int = 5400
    delete_timeout_s: int = 300
    triggers: list[pulumi.Input[Any]] = field(default_factory=list)


class GpustackModel(Resource):
    """One model deployment in GPUStack (type pulumi-python:dynamic:Resource)."""

    model_id: pulumi.Output[int]
    cluster_id: pulumi.Output[int]
    model: pulumi.Output[dict]

    def __init__(self, name: str, args: GpustackModelArgs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["password"])
        props = {
            "server_url": args.server_url,
            "ca_pem": args.ca_pem,
            "username": args.username,
            "password": pulumi.Output.secret(args.password),
            "cluster": args.cluster,
            "model": args.model,
            "workers": args.workers,
            "worker_timeout_s": args.worker_timeout_s,
            "ready_timeout_s": args.ready_timeout_s,
            "delete_timeout_s": args.delete_timeout_s,
            "triggers": args.triggers,
            "model_id": None,
            "cluster_id": None,
        }
        super().__init__(GpustackModelProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret))
