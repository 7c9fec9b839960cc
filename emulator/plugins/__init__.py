"""Stand-in resource plugins for the `command` and `docker` packages, FOR TESTS ONLY.

The real `pulumi-resource-command` (pulumi-command 1.2.1) and
`pulumi-resource-docker` (pulumi-docker 4.11.2) cannot be had on the machines
this project is developed and tested on (docs/standin-plugins.md says why).
These are gRPC resource providers written here that follow the real
providers' rules for exactly the resources, inputs and outputs this program
uses; every rule is listed, with the file and function it was read from, in
docs/standin-plugins.md.

Guards: they live under emulator/ (never installed by
tools/pulumi-toolchain.sh), only a test fixture puts them on PATH (Pulumi
uses a `pulumi-resource-<name>` found on PATH, whatever version the SDK asks
for), and they refuse to start unless the fixture's variable
`ASCEND_INFERENCE_STANDIN_PLUGINS=1` is set. With
`ASCEND_INFERENCE_REAL_PLUGINS=1` the fixtures leave them off PATH, so the same
tests run on the real plugins where those are installed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The variable the plugins require (set by `environment()` alone).
GUARD_VARIABLE = "ASCEND_INFERENCE_STANDIN_PLUGINS"
# The Python the plugins run under (the tests' own, which has grpc and paramiko),
# named by `environment()`: the first python3 on PATH is the program's venv when a
# run has it active, as the README's user path does.
PYTHON_VARIABLE = "ASCEND_INFERENCE_STANDIN_PYTHON"
# Set to 1 to run the same tests on the real plugins (`pulumi plugin install ...`).
REAL_PLUGINS_VARIABLE = "ASCEND_INFERENCE_REAL_PLUGINS"
BIN_DIR = Path(__file__).resolve().parent / "bin"


def use_real_plugins() -> bool:
    return os.environ.get(REAL_PLUGINS_VARIABLE) == "1"


def environment(base_path: str | None = None) -> dict[str, str]:
    """The environment additions a test fixture applies to a `pulumi` run:
    the stand-ins' directory first on PATH, the guard variable and the Python
    they run under (this one). With
    ASCEND_INFERENCE_REAL_PLUGINS=1, nothing: the real plugins (installed in
    PULUMI_HOME or on PATH) are used instead."""
    if use_real_plugins():
        return {}
    path = base_path if base_path is not None else os.environ.get("PATH", "")
    return {"PATH": f"{BIN_DIR}:{path}" if path else str(BIN_DIR), GUARD_VARIABLE: "1",
            PYTHON_VARIABLE: sys.executable}


def load_protocol_modules_only() -> None:
    """Let `from pulumi.runtime.proto import provider_pb2` load only the generated
    protocol modules, without running the SDK's package `__init__` files (the
    whole SDK and its automation API: about 0.4 s of CPU). For the plugin
    processes alone (emulator/plugins/bin): the engine starts one per provider
    per operation, so one docker plugin per node at every preview and up. Never
    in a process that also uses the SDK (a test): it would see these empty packages."""
    import importlib.util
    import types

    if "pulumi" in sys.modules:
        return
    spec = importlib.util.find_spec("pulumi")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return  # no SDK: the import below fails as it would have
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("pulumi", root), ("pulumi.runtime", root / "runtime"),
                       ("pulumi.runtime.proto", root / "runtime" / "proto")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
