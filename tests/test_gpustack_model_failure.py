"""The GPUStack model resource's failures are one message (components/gpustack_model.py
`one_message`, GpustackModelError): what the SDK's dynamic-provider server sends the
engine is `traceback.format_exc()` of the provider method's exception (pulumi v3.272.0
sdk/python/lib/pulumi/dynamic/__main__.py `_abort_with_traceback`), here taken the same
way, in the state the provider's `configure` leaves its process in. Under the real
engine: tests/realengine/test_gpustack_model_engine.py and the GPUStack rollout on the
emulated cluster (tests/emulated/test_gpustack_rollout.py)."""
from __future__ import annotations

import socket
import sys
import traceback

import pytest

from components.gpustack_model import GpustackModelError, GpustackModelProvider

pytestmark = pytest.mark.graph


@pytest.fixture
def provider(monkeypatch) -> GpustackModelProvider:
    """The provider as the plugin's process has it after `configure` (which sets
    sys.tracebacklimit there; monkeypatch puts this process's value back)."""
    monkeypatch.setattr(sys, "tracebacklimit", 1000, raising=False)
    provider = GpustackModelProvider()
    provider.configure(None)  # type: ignore[arg-type]  # the request is not read
    assert sys.tracebacklimit == 0
    return provider


def as_the_server_sends_it(call) -> str:
    """What `_abort_with_traceback` sends the engine when `call` raises."""
    try:
        call()
    except Exception:
        return traceback.format_exc()
    raise AssertionError("the provider method did not fail")


def nowhere() -> str:
    """A loopback URL nothing listens at (a port bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_gpustack_failure_is_its_one_line(provider):
    url = nowhere()
    props = {"server_url": url, "username": "admin", "password": "secret-Adm1n"}
    sent = as_the_server_sends_it(lambda: provider.delete("7", props))
    assert sent == f"GpustackModelError: GPUStack at {url} did not answer the login: [Errno 111] " \
                   "Connection refused\n"
    assert "secret-Adm1n" not in sent


def test_a_fault_of_the_program_keeps_its_traceback_after_the_first_line(provider):
    """Not a GPUStack failure (here props without a server URL): the first line says
    what was raised, the traceback follows, so the fault can be found."""
    sent = as_the_server_sends_it(lambda: provider.read("7", {"password": "p"}))
    first, *rest = sent.splitlines()
    assert first == "GpustackModelError: KeyError: 'server_url'"
    assert rest[0] == "Traceback (most recent call last):" and "gpustack_api.py" in sent
    assert rest[-1] == "KeyError: 'server_url'"


def test_the_error_type_prints_without_a_module():
    assert traceback.format_exception_only(GpustackModelError("x")) == ["GpustackModelError: x\n"]
