"""Reading a stack file into a validated spec and plan, or a list of problems.

`--stack` takes a stack name (`stacks/Pulumi.<name>.yaml`) or a path. Every
problem found is reported at once, each naming the file, the key and the fix;
nothing here raises anything but `StackError`.
"""
from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ascend_inference.brought_table import load_brought_table
from ascend_inference.engines import ENGINES
from ascend_inference.engines.base import EngineSettingsBase
from ascend_inference.errors import Problem, StackError
from ascend_inference.loaded import LoadedStack  # re-exported: callers import it from here too
from ascend_inference.model_base import FIX_SEPARATOR, INVALID_VALUE
from ascend_inference.safe_values import NotARegularFile, beside_stack_file, read_bounded
from ascend_inference.spec import NAMESPACE, SECTION_KEYS, ClusterSpec, check_spec, looks_like_credential, suggest
from ascend_inference.topology import plan_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = PROJECT_ROOT / "stacks"
# Top-level keys Pulumi itself writes into a stack file.
PULUMI_TOP_LEVEL = ("config", "encryptionsalt", "secretsprovider", "encryptedkey", "environment")
# A stack of 1,000 Atlas A3 nodes with every optional key is under 1 MB;
# beyond this, reading alone would take minutes.
MAX_STACK_BYTES = 4 * 2**20
# YAML aliases repeat a node without copying it; a few dozen levels of them
# (an "alias bomb") expand to billions. The expanded size is bounded, and so
# is the number of aliases (no stack needs them).
MAX_STACK_NODES = 1_000_000
MAX_STACK_ALIASES = 1000


def stack_names() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def resolve_stack(name_or_path: str) -> tuple[str, Path]:
    """(stack name, file path) for a stack name or a path to Pulumi.<name>.yaml."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        stem = candidate.name
        name = stem[len("Pulumi."):].rsplit(".", 1)[0] if stem.startswith("Pulumi.") else candidate.stem
        if candidate.suffix not in (".yaml", ".yml"):
            # Never read (and then quote as "unknown keys") a file that is
            # not a stack file, such as /etc/shadow.
            raise StackError([Problem(str(candidate), "(file)", "is not a stack file (a stack file is named "
                                      "Pulumi.<stack>.yaml)", "pass a Pulumi.<stack>.yaml or a stack name")])
        if not candidate.is_file():
            raise StackError([Problem(str(candidate), "(file)", "no such stack file",
                                      "pass an existing Pulumi.<stack>.yaml")])
        return name, candidate
    path = STACKS_DIR / f"Pulumi.{name_or_path}.yaml"
    if not path.is_file():
        known = stack_names()
        hint = suggest(name_or_path, known)
        raise StackError([Problem(str(path), "(stack)", f"no stack named '{name_or_path}'",
                                  (hint + " " if hint else "") + f"known stacks: {', '.join(known)}")])
    return name_or_path, path


def duplicate_keys(text: str, file: str) -> list[Problem]:
    """A key written twice in one YAML mapping. PyYAML (like many YAML readers)
    silently keeps the last value, so `tp: 16` then `tp: 8` would run with 8
    and the error would blame something else; name the key and both lines.
    Works on the composed node tree, so the key's full path is known."""
    problems: list[Problem] = []

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                # Keys under `config:` are full config keys (`ascend-inference:nodes`).
                full = key if path in ("", "config") else f"{path}.{key}"
                if key in first_line:
                    problems.append(Problem(
                        file, full, f"written twice (lines {first_line[key]} and {line}); YAML keeps only the "
                        "last one", f"keep one `{key}:` in this mapping and delete the other"))
                else:
                    first_line[key] = line
                walk(value_node, full)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        too_big = _expansion_problem(root, file)
        if too_big:
            return [too_big]
        walk(root, "")
    return problems


def _expansion_problem(root: yaml.Node, file: str) -> Problem | None:
    """The number of nodes the document expands to (aliases repeated), counted
    once per distinct node, so an alias bomb is measured, never expanded."""
    size: dict[int, int] = {}
    aliases = 0
    order: list[yaml.Node] = []
    stack: list[yaml.Node] = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            aliases += 1
            continue
        seen.add(id(node))
        order.append(node)
        if isinstance(node, yaml.MappingNode):
            stack.extend(child for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    if aliases > MAX_STACK_ALIASES:
        return Problem(file, "(yaml)", f"uses more than {MAX_STACK_ALIASES} YAML aliases (*name)",
                       "write the values out; a stack file needs no aliases")
    for node in reversed(order):  # children before parents
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        size[id(node)] = min(1 + sum(size.get(id(c), 1) for c in children), MAX_STACK_NODES + 1)
    if size[id(root)] > MAX_STACK_NODES:
        return Problem(file, "(yaml)", f"expands to more than {MAX_STACK_NODES:,} values through YAML aliases",
                       "write the values out instead of repeating aliases of aliases")
    return None


def duplicate_keys_in_file(file: str) -> list[Problem]:
    """`duplicate_keys` for the stack file under `pulumi up`, where the Pulumi
    CLI has already parsed it and `pulumi.Config` hands over one value per
    key. A file it could read but we cannot is left to `pulumi.Config`."""
    try:
        return duplicate_keys(read_bounded(file, MAX_STACK_BYTES).decode("utf-8"), file)
    except NotARegularFile as error:
        return [Problem(file, "(file)", str(error), "a stack file is a regular YAML file of at most "
                        f"{MAX_STACK_BYTES // 2**20} MB")]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []


def read_config(path: Path) -> dict[str, Any]:
    """The stack file's `config:` mapping (namespace kept), or StackError."""
    file = str(path)
    try:
        text = read_bounded(path, MAX_STACK_BYTES).decode("utf-8")
        duplicates = duplicate_keys(text, file)
        if duplicates:
            raise StackError(duplicates)
        document = yaml.safe_load(text)
    except NotARegularFile as error:
        raise StackError([Problem(file, "(file)", str(error), "a stack file is a regular YAML file of at most "
                                  f"{MAX_STACK_BYTES // 2**20} MB")]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise StackError([Problem(file, where, f"not valid YAML: {reason}",
                                  "fix the indentation/quoting there (YAML uses spaces, not tabs)")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise StackError([Problem(file, "(file)", f"cannot read: {error}", "check the path and permissions")]) from None
    if not isinstance(document, dict):
        raise StackError([Problem(file, "(root)", "a stack file is a YAML mapping with a `config:` key",
                                  "see stacks/Pulumi.tp16-mindie.yaml for the shape")])
    problems = []
    for key in document:
        if key not in PULUMI_TOP_LEVEL:
            hint = suggest(str(key), PULUMI_TOP_LEVEL)
            problems.append(Problem(file, str(key)[:40], "unknown top-level key",
                                    hint or f"only {', '.join(PULUMI_TOP_LEVEL)} belong at the top"))
    config = document.get("config")
    if not isinstance(config, dict):
        problems.append(Problem(file, "config", "missing or not a mapping",
                                f"put the `{NAMESPACE}:` keys under `config:`"))
    if problems or not isinstance(config, dict):
        raise StackError(problems)
    return config


def _split_config(config: dict[str, Any], file: str) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    """Separate structured sections from secret-valued keys; report strays."""
    sections: dict[str, Any] = {}
    others: dict[str, Any] = {}
    problems: list[Problem] = []
    for full_key, value in config.items():
        namespace, _, key = str(full_key).partition(":")
        if not key or namespace != NAMESPACE:
            problems.append(Problem(file, str(full_key), f"not in the `{NAMESPACE}:` namespace",
                                    f"write it as `{NAMESPACE}:{key or full_key}`"))
            continue
        if key in SECTION_KEYS:
            sections[key] = value
        else:
            others[key] = value
    return sections, others, problems


def _plain(value: Any) -> Any:
    """YAML dates and the like are not valid config; JSON round-trip finds them."""
    return json.loads(json.dumps(value, default=str))


def load_stack(name_or_path: str, *, require_secrets: bool = False) -> LoadedStack:
    """Read and check a stack file (the offline CLI's path)."""
    name, path = resolve_stack(name_or_path)
    config = read_config(path)
    sections, others, problems = _split_config(config, str(path))
    return spec_from_sections(name, str(path), sections, others, problems=problems,
                              require_secrets=require_secrets, raw_config=config)


def spec_from_sections(name: str, file: str, sections: dict[str, Any], others: dict[str, Any], *,
                       problems: list[Problem] | None = None, require_secrets: bool = False,
                       raw_config: dict[str, Any] | None = None) -> LoadedStack:
    """Check config sections (from a stack file, or from `pulumi.Config` under
    the real engine) into a spec and plan. `others` are the non-section keys:
    the secrets the spec names (as `{"secure": ...}`) and anything unknown."""
    problems = list(problems or [])
    spec: ClusterSpec | None = None
    try:
        spec = ClusterSpec.model_validate(_plain(sections))
    except ValidationError as error:
        problems += problems_from_validation(error, file)
    if spec is None:
        # Still name the stray keys: a misspelt section is the likely cause
        # of the "required key is missing" just reported.
        for key, value in others.items():
            if not (isinstance(value, dict) and set(value) == {"secure"}):
                hint = suggest(key, SECTION_KEYS)
                problems.append(Problem(file, f"{NAMESPACE}:{key}", "unknown key",
                                        hint or f"known keys: {', '.join(SECTION_KEYS)}"))
        raise StackError(problems)

    # Secrets: named by the spec, stored encrypted (`secure:`) by Pulumi.
    secret_keys = spec.secret_keys()
    present = set()
    for key, value in others.items():
        full = f"{NAMESPACE}:{key}"
        if key in secret_keys:
            if isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str):
                present.add(key)
            else:
                problems.append(Problem(file, full, "a secret is written in clear in the stack file",
                                        f"remove it and run `{set_secret_command(spec, key)}`"))
        else:
            hint = suggest(key, [*SECTION_KEYS, *secret_keys])
            problems.append(Problem(file, full, "unknown key",
                                    hint or f"known keys: {', '.join([*SECTION_KEYS, *secret_keys])}"))
    spec_problems = check_spec(spec, file)
    if require_secrets:
        # What `pulumi up` refuses too: connections to unpinned host keys.
        from ascend_inference.host_keys import missing_host_keys

        spec_problems += missing_host_keys(spec, file)
    # A clear credential whose key a spec rule already refuses (a secret-looking
    # env name) is one problem, reported by that rule.
    named = {p.key for p in spec_problems}
    problems += [p for p in _clear_secrets_in_sections(sections, file, spec) if p.key not in named]
    if require_secrets:
        problems += [secret_not_set(spec, file, key) for key in secret_keys if key not in present]
    problems += spec_problems
    if problems:
        raise StackError(problems)
    plan = plan_for(spec, file)
    brought = None
    if spec.network.rank_table_file is not None:
        brought, _notes = load_brought_table(spec, plan, file, beside_stack_file(file, spec.network.rank_table_file))
    return LoadedStack(name, file, spec, plan, frozenset(present), raw_config or {}, brought)


def set_secret_command(spec: ClusterSpec, key: str) -> str:
    """The command that stores the secret config key `key`. The one place
    that builds it, so `validate`, the program and every other message give
    the same fix (the SSH key is read from its file on stdin)."""
    command = f"pulumi config set --secret {NAMESPACE}:{key}"
    if key == spec.ssh.private_key_secret:
        command += " < ~/.ssh/id_ed25519"
    return command


def secret_purpose(spec: ClusterSpec, key: str) -> str:
    """What the stack reads secret `key` for, as a message names it."""
    if key == spec.ssh.private_key_secret:
        return "the SSH private key the control host logs in to the nodes with"
    if key == spec.model.source.token_secret:
        return "the hub token of model.source.token_secret"
    names = sorted(name for name, secret in spec.engine.secret_env.items() if secret == key)
    if names:
        return f"the engine's {', '.join(names)} (engine.secret_env)"
    return f"read by the {spec.engine.kind} engine"


def secret_not_set(spec: ClusterSpec, file: str, key: str) -> Problem:
    """A secret the stack reads that is not set: `validate --require-secrets`
    and the program (`pulumi up`, `pulumi preview`) report it with this."""
    return Problem(file, f"{NAMESPACE}:{key}", "secret not set",
                   f"run `{set_secret_command(spec, key)}`; {secret_purpose(spec, key)}, "
                   "stored encrypted in the stack file")


def _clear_secrets_in_sections(sections: dict[str, Any], file: str, spec: ClusterSpec) -> list[Problem]:
    problems: list[Problem] = []

    def walk(value: object, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and (kind := looks_like_credential(value)):
            if kind == "a private key":
                fix = f"remove it and run `{set_secret_command(spec, spec.ssh.private_key_secret)}`"
            else:
                fix = (f"store it as a Pulumi secret (`pulumi config set --secret {NAMESPACE}:<name>`) and pass it "
                       "by `engine.secret_env: {VARIABLE: <name>}`")
            problems.append(Problem(file, key, f"holds {kind}, written in clear in the stack file", fix))

    for section, value in sections.items():
        walk(value, f"{NAMESPACE}:{section}")
    return problems


# --- pydantic errors -> problems ------------------------------------------

def problems_from_validation(error: ValidationError, file: str) -> list[Problem]:
    problems = []
    for item in error.errors():
        path, model = _locate(item["loc"])
        key = f"{NAMESPACE}:{path}" if path else NAMESPACE
        kind, message = item["type"], item["msg"]
        given = item.get("input")
        if kind == "extra_forbidden":
            last = str(item["loc"][-1])
            choices = list(model.model_fields) if model else []
            hint = suggest(last, choices)
            elsewhere = [kind for kind, plugin in ENGINES.items()
                         if model is not None and plugin.settings_model is not model
                         and issubclass(model, EngineSettingsBase) and last in plugin.settings_model.model_fields]
            if elsewhere and not hint:
                # Another engine's setting (the README's day-2 `engine.max_num_seqs` on a MindIE
                # stack): say so, rather than offer a look-alike key that sets something else.
                kinds = "engine kind" if len(elsewhere) == 1 else "engine kinds"
                problems.append(Problem(file, key, f"unknown key: {last} is a setting of {kinds} "
                                        f"{', '.join(elsewhere)}, not of this stack's engine",
                                        f"remove it; this engine's keys: {', '.join(choices)}"))
                continue
            problems.append(Problem(file, key, "unknown key",
                                    hint or (f"valid keys here: {', '.join(choices)}" if choices else "remove it")))
        elif kind == "missing":
            problems.append(Problem(file, key, "required key is missing", "add it (see docs/stack-file.md)"))
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            problems.append(Problem(file, key, f"'{given}' is not a valid choice", f"use one of {expected}"))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            given_kind = given.get("kind") if isinstance(given, dict) else given
            problems.append(Problem(file, f"{key}.kind" if not key.endswith(".kind") else key,
                                    f"engine kind '{given_kind}' is unknown"
                                    if kind == "union_tag_invalid" else "engine kind is missing",
                                    f"use one of {', '.join(ENGINES)}"))
        elif kind == INVALID_VALUE:
            what, _, fix = message.partition(FIX_SEPARATOR)
            problems.append(Problem(file, key, what, fix))
        elif kind == "too_short" and path == "nodes":
            problems.append(Problem(file, key, "the stack has no nodes",
                                    "list at least one node (the first is the master)"))
        else:
            shown = (json.dumps(given, ensure_ascii=False) if not isinstance(given, (dict, list))
                     else type(given).__name__)
            fix = _type_fix(kind)
            if kind in ("greater_than_equal", "less_than_equal") and path.endswith("port"):
                fix = "use a port from 1 to 65535"
            problems.append(Problem(file, key, f"{message.rstrip('.')} (got {shown})", fix))
    return problems


def _type_fix(kind: str) -> str:
    return {
        "int_type": "write a whole number without quotes",
        "float_type": "write a number without quotes",
        "bool_type": "write true or false without quotes",
        "string_type": "write a string (quote it if it looks like a number)",
        "list_type": "write a YAML list",
        "dict_type": "write a YAML mapping",
        "model_type": "write a YAML mapping",
        "model_attributes_type": "write a YAML mapping",
        "string_pattern_mismatch": "see docs/stack-file.md for the allowed form",
        "greater_than_equal": "use a larger value",
        "greater_than": "use a larger value",
        "less_than_equal": "use a smaller value",
        "less_than": "use a smaller value",
        "value_error": "see docs/stack-file.md for this key",
    }.get(kind, "see docs/stack-file.md")


def _locate(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """Dotted key path for a pydantic location, and the model that owns its
    last element (for suggestions). Engine union tags in the path are dropped."""
    parts: list[str] = []
    # A model class, the engine-union marker, or None (past the models).
    model: object = ClusterSpec
    owner: type[BaseModel] | None = ClusterSpec
    for element in loc:
        if isinstance(element, int):
            if parts:
                parts[-1] += f"[{element}]"
            continue
        if model is _ENGINE and element in ENGINES:
            model = ENGINES[element].settings_model
            continue
        # _model_of only finds BaseModel classes, so a type here is one.
        owner = model if isinstance(model, type) and issubclass(model, BaseModel) else None
        parts.append(str(element))
        field = owner.model_fields.get(element) if owner is not None else None
        model = _model_of(field.annotation) if field is not None else None
    return ".".join(parts), owner


_ENGINE = object()


def _model_of(annotation: object) -> object | None:
    """The BaseModel inside Optional[...] / list[...] / Annotated[...], or the
    engine-union marker."""
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    kinds = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(kinds) > 1:
        return _ENGINE
    for arg in args:
        found = _model_of(arg)
        if found is not None:
            return found
    return None
