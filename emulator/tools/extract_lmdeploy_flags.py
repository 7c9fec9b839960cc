"""Regenerate emulator/standins/lmdeploy_flags.json from a real LMDeploy wheel.

LMDeploy's package __init__ imports its engines (torch and friends), so its
CLI cannot be imported on a machine without them. Its parser modules
themselves only need a handful of names; this script loads
lmdeploy/cli/{utils,cli,serve}.py straight from an unpacked wheel with tiny
stand-ins for those names, builds the real `lmdeploy serve api_server`
parser, and dumps every option it accepts.

    pip download --no-deps lmdeploy==0.18.0 -d /tmp/lmd
    pip install --no-deps --target /tmp/lmd/tgt /tmp/lmd/lmdeploy-0.18.0-*.whl
    python emulator/tools/extract_lmdeploy_flags.py /tmp/lmd/tgt > emulator/standins/lmdeploy_flags.json

Dev-time tool only; nothing at run time imports it.
"""

import argparse
import enum
import importlib.util
import json
import pathlib
import sys
import types


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package(name, path=None):
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path else []
    sys.modules[name] = module
    return module


class QuantPolicy(enum.IntEnum):  # lmdeploy.messages.QuantPolicy (values as in 0.18.0)
    NONE = 0
    INT4 = 4
    INT8 = 8
    FP8 = 16
    FP8_E5M2 = 17
    TURBO_QUANT = 42


class _Registry:  # tool / reasoning parser registries: only their names are printed in help
    module_dict = {}


def main():
    root = pathlib.Path(sys.argv[1])
    package("lmdeploy", root / "lmdeploy")
    package("lmdeploy.pytorch")
    package("lmdeploy.pytorch.disagg")
    load("lmdeploy.pytorch.disagg.config", root / "lmdeploy/pytorch/disagg/config.py")  # enums + pydantic only
    utils = types.ModuleType("lmdeploy.utils")
    utils.get_max_batch_size = lambda device: 256
    sys.modules["lmdeploy.utils"] = utils
    version = load("lmdeploy.version", root / "lmdeploy/version.py")
    messages = types.ModuleType("lmdeploy.messages")
    messages.QuantPolicy = QuantPolicy
    sys.modules["lmdeploy.messages"] = messages
    package("lmdeploy.serve")
    package("lmdeploy.serve.parsers")
    tool = types.ModuleType("lmdeploy.serve.parsers.tool_parser")
    tool.ToolParserManager = _Registry
    sys.modules[tool.__name__] = tool
    reasoning = types.ModuleType("lmdeploy.serve.parsers.reasoning_parser")
    reasoning.ReasoningParserManager = _Registry
    reasoning.LEGACY_REASONING_PARSER_NAMES = {}
    sys.modules[reasoning.__name__] = reasoning
    package("lmdeploy.cli", root / "lmdeploy/cli")
    load("lmdeploy.cli.utils", root / "lmdeploy/cli/utils.py")
    load("lmdeploy.cli.cli", root / "lmdeploy/cli/cli.py")
    serve = load("lmdeploy.cli.serve", root / "lmdeploy/cli/serve.py")
    serve.SubCliServe.add_parser_api_server()
    parser = serve.SubCliServe.subparsers.choices["api_server"]

    options = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        kind = {"_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
                "BooleanOptionalAction": "bool"}.get(type(action).__name__, "value")
        value_type = getattr(action.type, "__name__", None)
        options.append({
            "flags": action.option_strings,
            "dest": action.dest,
            "kind": kind,
            "nargs": action.nargs if action.nargs not in (0,) else None,
            "choices": [str(c) for c in action.choices] if action.choices else None,
            "type": value_type if value_type in ("int", "float") else "str",
            "default": action.default if isinstance(action.default, (str, int, float, bool, list, type(None)))
            else str(action.default),
        })
    json.dump({"source": f"lmdeploy {version.__version__}, lmdeploy/cli/serve.py "
                         "SubCliServe.add_parser_api_server (extracted by emulator/tools/extract_lmdeploy_flags.py)",
               "options": options}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
