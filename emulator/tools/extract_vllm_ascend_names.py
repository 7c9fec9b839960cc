"""Regenerate ascend_inference/engines/data/vllm_ascend_names.json from the real
vLLM wheel and vllm-ascend sdist of the pinned release pair.

vLLM's `vllm serve` parser (vllm/entrypoints/openai/cli_args.py
make_arg_parser -> FrontendArgs.add_cli_args + AsyncEngineArgs.add_cli_args,
vllm/engine/arg_utils.py) builds its options from config dataclasses whose
modules import torch, transformers and CUDA bindings, so it cannot be built
on a machine without them. This tool reads the same source files with `ast`
(it never imports them) and lists what that parser registers:

  * every option string of every `add_argument(...)` call in
    EngineArgs.add_cli_args, AsyncEngineArgs.add_cli_args and
    make_arg_parser;
  * `--<field>` for every field of FrontendArgs/BaseFrontendArgs (cli_args.py
    BaseFrontendArgs.add_cli_args adds one per field);
  * `--no-<flag>` where the option is a boolean: `action=BooleanOptionalAction`,
    or a `**x_kwargs["field"]` whose config field is annotated `bool`
    (arg_utils.py _compute_kwargs gives those BooleanOptionalAction; a
    `bool | str | None` field is an optional-valued flag instead).

Env names: the keys of `environment_variables` in vllm/envs.py and of
`env_variables` in vllm_ascend/envs.py. additional_config keys: every string
key vllm_ascend/ascend_config.py reads from `additional_config`
(`.get("k")`, `["k"]`, `_get_config_value(additional_config, "k", ...)`).
vllm-ascend adds no option of its own: NPUPlatform.pre_register_and_update
(vllm_ascend/platform.py) only appends "ascend" to --quantization's choices.

    pip download --no-deps --only-binary :all: vllm==0.23.0 -d /tmp/va
    pip download --no-deps --no-binary :all: vllm-ascend==0.23.0.post1 -d /tmp/va  # sdist
    (cd /tmp/va && unzip -q -o vllm-0.23.0-*.whl 'vllm/*' && tar xzf vllm_ascend-0.23.0.post1.tar.gz)
    python3 emulator/tools/extract_vllm_ascend_names.py /tmp/va /tmp/va/vllm_ascend-0.23.0.post1 \
        > ascend_inference/engines/data/vllm_ascend_names.json

(pip may stop after fetching the sdist when it cannot build its metadata
without torch; the tarball it fetched is what this tool reads.)
Dev-time tool only; nothing at run time imports it.
tests/realsoftware/test_vllm_ascend_release.py runs it against the real
packages (fetched by tests/realsoftware/install.sh) and compares with the
committed file.
"""
from __future__ import annotations

import ast
import json
import pathlib
import re
import sys


def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise SystemExit(f"class {name} not found")


def _function(cls: ast.AST, name: str) -> ast.FunctionDef:
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise SystemExit(f"function {name} not found")


def _fields(cls: ast.ClassDef) -> dict[str, str]:
    """Field name -> annotation source, for a dataclass body."""
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def _annotation_kind(annotation: str) -> str:
    parts = {p.strip() for p in annotation.replace("Optional[", "").rstrip("]").split("|")}
    if "bool" in parts and "str" in parts:
        return "optional-value"  # _compute_kwargs: bare flag -> True, value -> str
    if "bool" in parts:
        return "bool"
    return "value"


def config_fields(vllm: pathlib.Path) -> dict[str, dict[str, str]]:
    """Config class name -> {field: annotation}, from vllm/config/*.py."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted((vllm / "config").glob("*.py")):
        for node in _tree(path).body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, {}).update(_fields(node))
    return found


def _kwargs_sources(func: ast.FunctionDef) -> dict[str, str]:
    """`model_kwargs = get_kwargs(ModelConfig)` -> {"model_kwargs": "ModelConfig"}."""
    out = {}
    for node in ast.walk(func):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "get_kwargs"
                and node.value.args and isinstance(node.value.args[0], ast.Name)):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.args[0].id
    return out


def add_argument_options(func: ast.FunctionDef, configs: dict[str, dict[str, str]]) -> dict[str, str]:
    """Option string -> kind for every add_argument call in `func`."""
    sources = _kwargs_sources(func)
    # `moe_backend_kwargs = kernel_kwargs["moe_backend"]`, spread later as **moe_backend_kwargs.
    aliases = {t.id: n.value for n in ast.walk(func) if isinstance(n, ast.Assign)
               and isinstance(n.value, ast.Subscript) for t in n.targets if isinstance(t, ast.Name)}
    options: dict[str, str] = {}
    for node in ast.walk(func):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        kind = "value"
        for kw in node.keywords:
            if kw.arg == "action":
                action = ast.unparse(kw.value)
                kind = "bool" if "BooleanOptionalAction" in action else (
                    "flag" if action in ("'store_true'", "'store_false'") else "value")
            elif kw.arg is None:
                # **model_kwargs["trust_remote_code"], or **{**cache_kwargs["x"], "default": None}
                spread = kw.value
                if isinstance(spread, ast.Dict):
                    spread = next((v for k, v in zip(spread.keys, spread.values, strict=True) if k is None), spread)
                if isinstance(spread, ast.Name) and spread.id in aliases:
                    spread = aliases[spread.id]
                if not isinstance(spread, ast.Subscript):
                    raise SystemExit(f"{ast.unparse(node)}: unexpected **{ast.unparse(kw.value)}")
                holder = ast.unparse(spread.value)
                field = spread.slice.value if isinstance(spread.slice, ast.Constant) else None
                annotation = configs.get(sources.get(holder, ""), {}).get(str(field))
                if annotation is None:
                    raise SystemExit(f"{ast.unparse(node)}: no annotation for {holder}[{field!r}]")
                kind = _annotation_kind(annotation)
        for name in names:
            options[name] = kind
    return options


def vllm_serve_options(vllm: pathlib.Path) -> dict[str, str]:
    configs = config_fields(vllm)
    arg_utils = _tree(vllm / "engine/arg_utils.py")
    cli_args = _tree(vllm / "entrypoints/openai/cli_args.py")
    options: dict[str, str] = {}
    options.update(add_argument_options(_function(cli_args, "make_arg_parser"), configs))
    for cls in ("BaseFrontendArgs", "FrontendArgs"):
        for field, annotation in _fields(_class(cli_args, cls)).items():
            options[f"--{field.replace('_', '-')}"] = _annotation_kind(annotation)
    options.update(add_argument_options(_function(_class(arg_utils, "EngineArgs"), "add_cli_args"), configs))
    options.update(add_argument_options(_function(_class(arg_utils, "AsyncEngineArgs"), "add_cli_args"), configs))
    return options


def dict_keys(path: pathlib.Path, variable: str) -> list[str]:
    for node in _tree(path).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == variable and isinstance(node.value, ast.Dict):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    raise SystemExit(f"{path}: no dict {variable}")


def additional_config_keys(path: pathlib.Path) -> list[str]:
    keys: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and ast.unparse(node.func.value).endswith("additional_config") and node.args \
                and isinstance(node.args[0], ast.Constant):
            keys.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("additional_config") \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("_get_config_value") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            keys.add(node.args[1].value)
    return sorted(k for k in keys if isinstance(k, str))


def version_of(path: pathlib.Path, pattern: str) -> str:
    match = re.search(pattern, path.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{path}: no version")
    return match.group(1)


def extract(vllm_root: pathlib.Path, ascend_root: pathlib.Path) -> dict:
    vllm = vllm_root / "vllm"
    ascend = ascend_root / "vllm_ascend"
    vllm_version = version_of(vllm / "_version.py", r"""^__version__\s*=\s*version\s*=\s*['"]([^'"]+)""")
    ascend_version = version_of(ascend_root / "PKG-INFO", r"^Version:\s*(\S+)")
    options = vllm_serve_options(vllm)
    return {
        "source": (f"vllm {vllm_version} (vllm/entrypoints/openai/cli_args.py make_arg_parser, "
                   f"vllm/engine/arg_utils.py EngineArgs/AsyncEngineArgs.add_cli_args, vllm/envs.py) and "
                   f"vllm-ascend {ascend_version} (vllm_ascend/envs.py, vllm_ascend/ascend_config.py); "
                   "extracted by emulator/tools/extract_vllm_ascend_names.py"),
        "vllm": vllm_version,
        "vllm_ascend": ascend_version,
        "serve_options": dict(sorted(options.items())),
        "quantization_added": ["ascend"],
        "vllm_env": sorted(dict_keys(vllm / "envs.py", "environment_variables")),
        "vllm_ascend_env": sorted(dict_keys(ascend / "envs.py", "env_variables")),
        "additional_config": additional_config_keys(ascend / "ascend_config.py"),
    }


def main() -> None:
    data = extract(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
    json.dump(data, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
