"""components/debug_log.py: the SDK's debug messages sent with the gRPC call's
non-blocking form, the calls still under way waited for at exit. (Where it is
installed: tests/test_sdk_functions.py; under the real engine:
tests/realengine/test_debug_log.py.)"""
from __future__ import annotations

import pytest
from pulumi import log as sdk_log
from pulumi.runtime.proto import engine_pb2

from components import debug_log

pytestmark = pytest.mark.graph


class Call:
    """A gRPC future as `Log.future` returns it: answered, or failing, when asked."""

    def __init__(self, request, fails: bool = False):
        self.request, self.fails, self.answered = request, fails, False

    def done(self) -> bool:
        return self.answered

    def result(self):
        self.answered = True
        if self.fails:
            raise RuntimeError("the engine went away")


class Log:
    def __init__(self, fails: bool = False):
        self.calls: list[Call] = []
        self.blocking: list = []
        self.fails = fails

    def __call__(self, request):  # the blocking form, which the SDK's function uses
        self.blocking.append(request)

    def future(self, request) -> Call:
        self.calls.append(Call(request, self.fails))
        return self.calls[-1]


class Engine:
    def __init__(self, fails: bool = False):
        self.Log = Log(fails)


@pytest.fixture
def engine(monkeypatch):
    found = Engine()
    monkeypatch.setattr(sdk_log, "get_engine", lambda: found)
    monkeypatch.setattr(debug_log, "_under_way", [])
    return found


def test_a_message_is_the_sdks_request_sent_without_waiting(engine):
    debug_log.debug("registering resource: ty=a, name=b", stream_id=7, ephemeral=True)
    assert engine.Log.blocking == []
    [call] = engine.Log.calls
    assert call.request == engine_pb2.LogRequest(severity=engine_pb2.DEBUG, urn="", streamId=7, ephemeral=True,
                                                 message="registering resource: ty=a, name=b")
    assert not call.answered


def test_flush_waits_for_every_call_under_way_and_answered_ones_leave_the_list(engine):
    for index in range(3):
        debug_log.debug(f"message {index}")
    engine.Log.calls[0].answered = True
    debug_log.debug("message 3")  # the answered first call leaves the list as this one is added
    assert debug_log._under_way == engine.Log.calls[1:]
    debug_log.flush()
    assert all(call.answered for call in engine.Log.calls)
    assert debug_log._under_way == []


def test_a_failed_call_is_a_lost_debug_message_not_a_failure(monkeypatch):
    failing = Engine(fails=True)
    monkeypatch.setattr(sdk_log, "get_engine", lambda: failing)
    monkeypatch.setattr(debug_log, "_under_way", [])
    debug_log.debug("message")
    debug_log.flush()  # raises nothing
    assert failing.Log.calls[0].answered


def test_the_sdks_own_path_without_a_grpc_stub_or_with_a_resource(engine, monkeypatch):
    sent = []
    monkeypatch.setattr(debug_log, "_SDK_FUNCTION", lambda *args: sent.append(args))
    resource = object()
    debug_log.debug("tied to a resource", resource)  # type: ignore[arg-type]
    assert sent == [("tied to a resource", resource, None, None)] and engine.Log.calls == []

    class Mocks:  # the SDK's mocks' engine: a plain method, no non-blocking form
        def Log(self, request):
            raise AssertionError("not called here")

    monkeypatch.setattr(sdk_log, "get_engine", lambda: Mocks())
    debug_log.debug("under the mocks")
    monkeypatch.setattr(sdk_log, "get_engine", lambda: None)
    debug_log.debug("no engine")
    assert [args[0] for args in sent[1:]] == ["under the mocks", "no engine"]
