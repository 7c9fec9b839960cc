"""What both stand-in plugins share: the guard, the gRPC server the engine
talks to, the plugin's answers every provider gives, logging to the engine's
console, and the property values as they travel on the wire.

The protocol is Pulumi's `pulumirpc.ResourceProvider`, served with the stubs
the Python SDK ships (`pulumi.runtime.proto`); the start-up handshake (the
engine's address as the argument, our port on stdout) is the one
`pulumi/provider/server.py` of the SDK uses.

Property values are kept as the engine sends them (google.protobuf Struct
turned into plain dicts and lists): a secret is
`{SECRET_KEY: SECRET_SIG, "value": ...}` and an unknown value (preview) is
the string UNKNOWN. Providers see secrets because Configure answers
`acceptSecrets`, as the Go providers do; `reveal` removes the wrappers where
a value is used, and outputs that mirror an input keep the input's wrapper.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from emulator.plugins import GUARD_VARIABLE

SECRET_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def guard(plugin: str) -> None:
    """Refuse to start outside the test fixtures (one line, non-zero exit)."""
    if os.environ.get(GUARD_VARIABLE) != "1":
        sys.stderr.write(f"{plugin}: a stand-in for tests only (emulator/plugins); it starts only with "
                         f"{GUARD_VARIABLE}=1, which the test fixtures set. Install the real plugin instead.\n")
        raise SystemExit(3)


# --- property values ---------------------------------------------------------

def from_struct(struct: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    if struct is None:
        return {}
    return dict(json_format.MessageToDict(struct))


def to_struct(values: dict[str, Any]) -> Any:
    from google.protobuf import json_format, struct_pb2

    return json_format.ParseDict(values, struct_pb2.Struct())


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_KEY) == SECRET_SIG


def secret(value: Any) -> Any:
    return value if is_secret(value) else {SECRET_KEY: SECRET_SIG, "value": value}


def reveal(value: Any) -> Any:
    """The value with every secret wrapper removed (what a provider uses)."""
    if is_secret(value):
        return reveal(value.get("value"))
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def is_unknown(value: Any) -> bool:
    return value == UNKNOWN


def contains_unknown(value: Any) -> bool:
    if value == UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def as_int(value: Any, default: int) -> int:
    value = reveal(value)
    return default if value is None or value == UNKNOWN else int(value)


# --- diffs ---------------------------------------------------------------------

# pulumirpc.PropertyDiff.Kind
ADD, ADD_REPLACE, DELETE, DELETE_REPLACE, UPDATE, UPDATE_REPLACE = range(6)
_AS_REPLACE = {ADD: ADD_REPLACE, DELETE: DELETE_REPLACE, UPDATE: UPDATE_REPLACE}


def _same(old: Any, new: Any) -> bool:
    # An unknown new value is a change (pulumi's PropertyValue diff treats a
    # computed value as different from any old one).
    if new == UNKNOWN:
        return False
    return bool(reveal(old) == reveal(new)) and is_secret(old) == is_secret(new)


def _present(values: dict[str, Any], key: str) -> bool:
    return key in values and values[key] is not None


def value_diff(path: str, old: Any, new: Any, out: dict[str, int]) -> None:
    """Detailed diff of one value, by path (`a.b`, `a[0]`), as
    plugin.NewDetailedDiffFromObjectDiff reports it: objects and arrays are
    walked, anything else is compared whole."""
    if _same(old, new):
        return
    o, n = old, new
    if isinstance(o, dict) and isinstance(n, dict) and not is_secret(o) and not is_secret(n):
        for key in sorted(set(o) | set(n)):
            sub = f"{path}.{key}"
            if not _present(o, key):
                if _present(n, key):
                    out[sub] = ADD
            elif not _present(n, key):
                out[sub] = DELETE
            else:
                value_diff(sub, o[key], n[key], out)
        return
    if isinstance(o, list) and isinstance(n, list):
        for i in range(max(len(o), len(n))):
            sub = f"{path}[{i}]"
            if i >= len(o):
                out[sub] = ADD
            elif i >= len(n):
                out[sub] = DELETE
            else:
                value_diff(sub, o[i], n[i], out)
        return
    out[path] = UPDATE


def object_diff(olds: dict[str, Any], news: dict[str, Any],
                replaces: Callable[[str], bool]) -> dict[str, int]:
    """Top-level keys added, deleted or changed, walked into; a change under a
    key for which `replaces(key)` holds is its *_REPLACE kind."""
    out: dict[str, int] = {}
    for key in sorted(set(olds) | set(news)):
        found: dict[str, int] = {}
        if not _present(olds, key):
            if _present(news, key):
                found[key] = ADD
        elif not _present(news, key):
            found[key] = DELETE
        else:
            value_diff(key, olds[key], news[key], found)
        for path, kind in found.items():
            out[path] = _AS_REPLACE[kind] if replaces(key) else kind
    return out


def top_key(path: str) -> str:
    for i, ch in enumerate(path):
        if ch in ".[":
            return path[:i]
    return path


@dataclass
class Diff:
    detailed: dict[str, int]
    delete_before_replace: bool = False

    @property
    def replaces(self) -> list[str]:
        return sorted({top_key(p) for p, k in self.detailed.items() if k in (ADD_REPLACE, DELETE_REPLACE,
                                                                              UPDATE_REPLACE)})

    def response(self, stables: list[str] | None = None) -> Any:
        from pulumi.runtime.proto import provider_pb2

        changes = provider_pb2.DiffResponse.DIFF_SOME if self.detailed else provider_pb2.DiffResponse.DIFF_NONE
        return provider_pb2.DiffResponse(
            changes=changes,
            replaces=self.replaces,
            stables=stables or [],
            deleteBeforeReplace=self.delete_before_replace and bool(self.replaces),
            diffs=sorted({top_key(p) for p in self.detailed}),
            detailedDiff={p: provider_pb2.PropertyDiff(kind=provider_pb2.PropertyDiff.Kind.ValueType(k),
                                                       inputDiff=False)
                          for p, k in self.detailed.items()},
            hasDetailedDiff=True,
        )


# --- the engine's console -------------------------------------------------------

class Console:
    """Messages to the `pulumi` console through the engine's Log RPC, tied to
    a resource's URN as the Go providers' loggers do (pulumi-go-provider
    logging.go: Info -> Log, InfoStatus -> Log with `ephemeral`)."""

    def __init__(self, engine_address: str | None):
        self._stub = None
        self._lock = threading.Lock()
        if engine_address:
            import grpc
            from pulumi.runtime.proto import engine_pb2_grpc

            self._stub = engine_pb2_grpc.EngineStub(grpc.insecure_channel(engine_address))

    def log(self, urn: str, message: str, *, severity: str = "INFO", ephemeral: bool = False) -> None:
        if self._stub is None:
            sys.stderr.write(f"{severity} {urn}: {message}\n")
            return
        from pulumi.runtime.proto import engine_pb2

        request = engine_pb2.LogRequest(severity=engine_pb2.LogSeverity.Value(severity), message=message, urn=urn,
                                        ephemeral=ephemeral)
        try:
            with self._lock:
                self._stub.Log(request)
        except Exception as error:  # noqa: BLE001 - a lost log line must not fail the step
            sys.stderr.write(f"log to the engine failed ({error}): {message}\n")


# --- the provider ---------------------------------------------------------------

class ProviderError(Exception):
    """A failure the engine shows the user, with exactly this text."""


@dataclass
class Call:
    """One resource operation: which resource, and whether it is a preview."""

    urn: str
    preview: bool
    console: Console
    provider: Provider

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    def info(self, message: str, *, ephemeral: bool = False) -> None:
        self.console.log(self.urn, message, ephemeral=ephemeral)


class ResourceType:
    """One resource type's operations on wire values (dicts as from_struct
    gives them). Subclasses implement what their resource needs."""

    token = ""

    def check(self, call: Call, news: dict[str, Any], olds: dict[str, Any]) -> dict[str, Any]:
        return news

    def diff(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
             old_inputs: dict[str, Any], ignore_changes: list[str]) -> Any:
        raise NotImplementedError

    def create(self, call: Call, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def update(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
               old_inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def delete(self, call: Call, resource_id: str, state: dict[str, Any], old_inputs: dict[str, Any]) -> None:
        raise NotImplementedError

    def read(self, call: Call, resource_id: str, state: dict[str, Any],
             inputs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(id, state, inputs); an empty id: the resource is gone."""
        return resource_id, state, inputs


class Provider:
    """A plugin's provider: name, version, its resource types, and its
    configuration (the `pulumi:providers:<name>` resource's inputs)."""

    name = ""
    version = ""

    def __init__(self, resource_types: list[ResourceType],
                 functions: dict[str, Callable[[Console, dict[str, Any]], dict[str, Any]]] | None = None):
        self.types = {t.token: t for t in resource_types}
        # Invokes: token -> (console, plain args) -> plain result.
        self.functions = dict(functions or {})
        self.config: dict[str, Any] = {}

    def check_config(self, call: Call, news: dict[str, Any], olds: dict[str, Any]) -> dict[str, Any]:
        return news

    def diff_config(self, olds: dict[str, Any], news: dict[str, Any]) -> Diff:
        ignored = {"version"}
        return Diff(object_diff({k: v for k, v in olds.items() if k not in ignored},
                                {k: v for k, v in news.items() if k not in ignored}, lambda _key: False))

    def configure(self, args: dict[str, Any]) -> None:
        self.config = args


def _type_of(urn: str) -> str:
    # urn:pulumi:<stack>::<project>::<parent types $>...<type>::<name>
    qualified = urn.split("::")[2]
    return qualified.rsplit("$", 1)[-1]


def _servicer(provider: Provider, console: Console) -> Any:
    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

    def failing(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, request: Any, context: Any) -> Any:
            try:
                return method(self, request, context)
            except ProviderError as error:
                context.abort(grpc.StatusCode.UNKNOWN, str(error))
            except Exception:  # noqa: BLE001 - a stand-in's own bug, shown whole
                context.abort(grpc.StatusCode.INTERNAL,
                              f"{provider.name} stand-in plugin failed:\n{traceback.format_exc()}")
        return run

    def resource_type(urn: str) -> ResourceType:
        token = _type_of(urn)
        found = provider.types.get(token)
        if found is None:
            raise ProviderError(f"{provider.name} stand-in plugin: resource type {token} is not covered "
                                "(docs/standin-plugins.md lists what is)")
        return found

    class Servicer(provider_pb2_grpc.ResourceProviderServicer):
        def GetPluginInfo(self, request: Any, context: Any) -> Any:
            return plugin_pb2.PluginInfo(version=provider.version)

        def GetSchema(self, request: Any, context: Any) -> Any:
            # The SDK in requirements.txt is generated; the engine needs no schema to run it.
            return provider_pb2.GetSchemaResponse(schema="{}")

        @failing
        def CheckConfig(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, False, console, provider)
            inputs = provider.check_config(call, from_struct(request.news), from_struct(request.olds))
            return provider_pb2.CheckResponse(inputs=to_struct(inputs))

        @failing
        def DiffConfig(self, request: Any, context: Any) -> Any:
            olds = from_struct(request.old_inputs) if request.HasField("old_inputs") else from_struct(request.olds)
            return provider.diff_config(olds, from_struct(request.news)).response()

        @failing
        def Configure(self, request: Any, context: Any) -> Any:
            provider.configure(from_struct(request.args))
            return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True, acceptResources=True,
                                                  acceptOutputs=True)

        @failing
        def Check(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, False, console, provider)
            inputs = resource_type(request.urn).check(call, from_struct(request.news), from_struct(request.olds))
            return provider_pb2.CheckResponse(inputs=to_struct(inputs))

        @failing
        def Diff(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, False, console, provider)
            return resource_type(request.urn).diff(call, request.id, from_struct(request.olds),
                                                   from_struct(request.news), from_struct(request.old_inputs),
                                                   list(request.ignoreChanges))

        @failing
        def Create(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, request.preview, console, provider)
            resource_id, outputs = resource_type(request.urn).create(call, from_struct(request.properties))
            return provider_pb2.CreateResponse(id=resource_id, properties=to_struct(outputs))

        @failing
        def Update(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, request.preview, console, provider)
            outputs = resource_type(request.urn).update(call, request.id, from_struct(request.olds),
                                                        from_struct(request.news), from_struct(request.old_inputs))
            return provider_pb2.UpdateResponse(properties=to_struct(outputs))

        @failing
        def Delete(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, False, console, provider)
            resource_type(request.urn).delete(call, request.id, from_struct(request.properties),
                                              from_struct(request.old_inputs))
            return empty_pb2.Empty()

        @failing
        def Read(self, request: Any, context: Any) -> Any:
            call = Call(request.urn, False, console, provider)
            resource_id, state, inputs = resource_type(request.urn).read(
                call, request.id, from_struct(request.properties), from_struct(request.inputs))
            if not resource_id:
                return provider_pb2.ReadResponse()
            return provider_pb2.ReadResponse(id=resource_id, properties=to_struct(state), inputs=to_struct(inputs))

        @failing
        def Invoke(self, request: Any, context: Any) -> Any:
            function = provider.functions.get(request.tok)
            if function is None:
                raise ProviderError(f"{provider.name} stand-in plugin: function {request.tok} is not covered "
                                    "(docs/standin-plugins.md lists what is)")
            result = function(console, reveal(from_struct(request.args)))
            return provider_pb2.InvokeResponse(**{"return": to_struct(result)})

        def Cancel(self, request: Any, context: Any) -> Any:
            return empty_pb2.Empty()

    return Servicer()


def serve(provider: Provider, argv: list[str]) -> None:
    """Serve `provider` on 127.0.0.1 until the engine ends the process. The
    engine starts a plugin with its own address as the last argument (flags
    such as `--logtostderr` may come first) and reads the port from stdout."""
    import grpc
    from pulumi.runtime.proto import provider_pb2_grpc

    engine = next((a for a in reversed(argv) if not a.startswith("-")), None)
    console = Console(engine)
    # A thread per call in flight, as the real plugins (Go: a goroutine per call) have:
    # the program's node checks are long calls, one or more per node at once (256 nodes:
    # 512). The threads start on demand.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1024),
                         options=[("grpc.max_receive_message_length", 400 * 1024 * 1024),
                                  ("grpc.max_send_message_length", 400 * 1024 * 1024)])
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(_servicer(provider, console), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    server.wait_for_termination()
