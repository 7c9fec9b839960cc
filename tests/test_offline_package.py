"""The offline preview as a package apart from the program (issue 9, item 2):
the deployable program imports nothing of it, it refuses an SDK other than the
pinned one with one line, and what its recorder observes below the SDK's
public mock API agrees with what the public API itself shows."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import json
import os
import re
import subprocess
import sys

import pulumi
import pulumi.runtime
import pytest

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from ascendctl.preview import sdk, wire
from ascendctl.preview.facts import CHECK_ENV, LOCAL_RUN, mock_calls, mock_outputs
from ascendctl.preview.stack import config_for, record_stack
from ascendctl.preview.values import Secret
from ascendctl.preview.versions import (
    PINNED_VERSIONS,
    SdkVersionMismatch,
    check_sdk_versions,
)
from tests.conftest import PROJECT_ROOT, STACKS

pytestmark = pytest.mark.graph

PROGRAM_SOURCES = [PROJECT_ROOT / "__main__.py",
                   *sorted((PROJECT_ROOT / "components").rglob("*.py")),
                   *sorted((PROJECT_ROOT / "ascend_inference").rglob("*.py"))]


def imported_modules(path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names,
    function-local imports included."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_program_imports_nothing_of_the_offline_tooling():
    imports = {path.relative_to(PROJECT_ROOT).as_posix(): imported_modules(path) for path in PROGRAM_SOURCES}
    # The walk does see the program's imports (so an empty result below means something).
    assert "pulumi" in imports["components/program.py"]
    assert "components.program" in imports["__main__.py"]
    offending = {file: sorted(m for m in modules if m == "ascendctl" or m.startswith(("ascendctl.", "emulator")))
                 for file, modules in imports.items()}
    assert {file: mods for file, mods in offending.items() if mods} == {}


def test_version_check_names_installed_needed_and_fix():
    installed = {**PINNED_VERSIONS, "pulumi": "3.100.0"}
    with pytest.raises(SdkVersionMismatch) as raised:
        check_sdk_versions(installed)
    message = str(raised.value)
    assert "\n" not in message
    assert f"pulumi=={PINNED_VERSIONS['pulumi']} (installed: 3.100.0)" in message
    assert "pip install -r requirements.txt" in message
    assert "pulumi-docker" not in message  # only what is wrong is named


def test_version_check_names_a_missing_sdk():
    with pytest.raises(SdkVersionMismatch, match=r"pulumi-command==1\.2\.1 \(installed: none\)"):
        check_sdk_versions({**PINNED_VERSIONS, "pulumi-command": None})


def test_version_check_accepts_the_pinned_versions():
    check_sdk_versions(dict(PINNED_VERSIONS))  # raises on any difference


def test_pins_are_the_ones_in_requirements():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (PROJECT_ROOT / "requirements.txt").read_text(), re.M))
    assert {name: pins.get(name) for name in PINNED_VERSIONS} == PINNED_VERSIONS


def test_wire_signatures_are_the_sdks():
    """The recorder decodes requests with its own copy of the wire format's
    signatures; they must be the installed SDK's."""
    from pulumi.runtime import rpc

    assert (wire._SIG_KEY, wire._SECRET_SIG, wire._RESOURCE_SIG, wire._ASSET_SIG, wire._ARCHIVE_SIG,
            wire._OUTPUT_VALUE_SIG, wire._UNKNOWN_WIRE) == (
        rpc._special_sig_key, rpc._special_secret_sig, rpc._special_resource_sig, rpc._special_asset_sig,
        rpc._special_archive_sig, rpc._special_output_value_sig, rpc.UNKNOWN)


@pytest.mark.parametrize("command", [["preview"], ["diff", "--set", "engine.max_num_seqs=128"]])
def test_cli_with_another_sdk_prints_one_line(command):
    """`python -m ascendctl preview|diff` where the installed pulumi reports
    another version: one line naming both versions and the fix, exit 5."""
    pretend = ("import importlib.metadata as m, sys; real = m.version; "
               "m.version = lambda name: '3.100.0' if name == 'pulumi' else real(name); "
               "from ascendctl.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", pretend, *command, "--stack", "tp16-vllm-mindspore"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 5, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "pulumi==3.272.0 (installed: 3.100.0)" in lines[0]
    assert "pip install -r requirements.txt" in lines[0]


@pytest.mark.parametrize("stack", STACKS)
def test_recorder_sees_what_the_public_mock_api_sees(stack):
    """The program run the way Pulumi's unit-testing guide runs one
    (`pulumi.runtime.set_mocks` with a `Mocks`, config set, the program
    called inside `pulumi.runtime.test`) registers the same resources that
    the recorder, which reads the requests below that API, records, and asks
    for the same node checks (`local.run` invokes)."""
    loaded = load_stack(stack)
    answers = mock_outputs(loaded)
    checks = mock_calls(answers)
    registered = []
    invoked = []

    class PublicMocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            registered.append((args.typ, args.name, bool(args.custom)))
            state = {**args.inputs, **answers(args)}
            return state.pop("__id__"), state

        def call(self, args):
            if args.token == LOCAL_RUN:
                invoked.append(args.args["environment"][CHECK_ENV])
            # No failures is [], not None: the SDK's mock monitor iterates them.
            return checks(args), []

    def run_with_public_mocks():
        values, secret_keys = {}, []
        for key, value in config_for(loaded, loaded.raw_config).items():
            if isinstance(value, Secret):
                secret_keys.append(key)
                value = value.value
            values[key] = value if isinstance(value, str) else json.dumps(value)
        pulumi.runtime.set_all_config(values, secret_keys)
        pulumi.runtime.set_mocks(PublicMocks(), project=NAMESPACE, stack=loaded.name, preview=True)
        from components.program import run

        pulumi.runtime.test(run)()

    previous = os.environ.get("ASCEND_INFERENCE_STACK_FILE")
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = loaded.file
    # set_mocks in a fresh context also replaces the SDK settings' process-wide
    # defaults (see ascendctl/preview/sdk.py); restore them afterwards.
    saved = sdk.settings_defaults()
    # The SDK's public mocks run on the thread's current event loop; an
    # in-process record_stack earlier on this worker (ascendctl/preview/recorder.py
    # _close_thread_loop) leaves the main thread with none set.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        contextvars.copy_context().run(run_with_public_mocks)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        sdk.restore_settings_defaults(saved)
        if previous is None:
            os.environ.pop("ASCEND_INFERENCE_STACK_FILE", None)
        else:
            os.environ["ASCEND_INFERENCE_STACK_FILE"] = previous

    recorded = record_stack(loaded)
    assert len(registered) > len(loaded.spec.nodes)
    assert sorted(registered) == sorted((r.type, r.name, r.custom) for r in recorded.resources)
    assert invoked and sorted(invoked) == sorted(c.name for c in recorded.checks if c.ran)


def test_registration_order_does_not_depend_on_how_fast_the_mocks_answer():
    """Slow answers from the mocks (as on a loaded machine, or an emulator
    doing real work) must not change the preview: the recorder answers one
    request at a time, and the printer orders resources by the graph alone
    (dependency level, type, name), not by the order the SDK happened to
    register independent ones in. The runs also fix string hashing and
    address randomisation, so that the delay is the one thing that differs."""
    stack = "dp4-ep32-gpustack"  # the stack whose order was seen to vary
    # The same script for both runs (so the same allocations), with a delay
    # of 0 or 10 ms for every other resource's answer.
    answers_after = (
        "import os, sys, time; import ascendctl.preview.stack as stack; answers_of = stack.mock_outputs\n"
        "delay = float(os.environ['MOCK_DELAY'])\n"
        "def late(loaded):\n"
        "    answer = answers_of(loaded)\n"
        "    def outputs_for(args):\n"
        "        if len(args.name) % 2:\n"
        "            time.sleep(delay)\n"
        "        return answer(args)\n"
        "    return outputs_for\n"
        "stack.mock_outputs = late\n"
        "from ascendctl.cli import main; sys.exit(main(sys.argv[1:]))\n")
    fixed_layout = ["setarch", os.uname().machine, "--addr-no-randomize"]

    def preview(delay: str) -> subprocess.CompletedProcess:
        return subprocess.run([*fixed_layout, sys.executable, "-c", answers_after,
                               "preview", "--stack", stack, "--no-inputs"],
                              cwd=PROJECT_ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0", "MOCK_DELAY": delay})

    quick, slow = preview("0"), preview("0.01")
    assert quick.returncode == 0 and slow.returncode == 0, quick.stderr + slow.stderr
    assert "docker:index/container:Container node3-container" in quick.stdout
    assert slow.stdout == quick.stdout
