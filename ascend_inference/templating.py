"""The jinja environments the node scripts and engine files are rendered
with, and `wrap`, which turns a script into what runs in its place (host or
container).

Shell templates (`*.sh.j2`) quote by default: every `{{ value }}` is
shell-quoted (`shlex.quote`) unless a filter says how it goes in, so a value
with a space, a quote or a `$` stays one word and is never run:

    {{ value }}               one shell word (the default)
    {{ value | dq }}          inside "double quotes" (messages, JSON in echo)
    {{ value | expandable }}  inside "double quotes", only `$VAR` left to the shell
    {{ value | comment }}     inside a `#` comment (kept on its line)
    {{ value | raw }}         as it is: a command line built and quoted by
                              the code (HttpCheck.curl, ServePlan.command), or
                              a body between quoted heredoc markers (choose the
                              marker with `heredoc_marker`)

Other templates (the MindFormers yaml) render values as they are.

A leaf module (it imports nothing of this package), so that engines, the
renderer and the Pulumi components can all use it without an import circle.
"""
from __future__ import annotations

import re
import shlex
from typing import Any

import jinja2


class ShellText(str):
    """Text that goes into a shell template as it is: a filter has made it
    safe for the spot it is written at."""


def _quote_unless_marked(value: object) -> str:
    if isinstance(value, ShellText):
        return value
    return shlex.quote(str(value))


def _in_double_quotes(value: object) -> ShellText:
    text = str(value)
    for special in ("\\", '"', "$", "`"):
        text = text.replace(special, "\\" + special)
    return ShellText(text)


# `$NAME` or `${NAME}`: a variable reference, the only expansion `expandable` keeps.
_VARIABLE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")


def _expandable(value: object) -> ShellText:
    """Inside double quotes with `$VAR` and `${VAR}` expanded (env values
    that refer to a variable the sourced set_env.sh files define); any other
    `$` (`$(...)`, `$((...))`) and backticks stay literal."""
    text = str(value)
    out, start = [], 0
    for match in _VARIABLE.finditer(text):
        out += [_in_double_quotes(text[start:match.start()]), match.group()]
        start = match.end()
    out.append(_in_double_quotes(text[start:]))
    return ShellText("".join(out))


def _references(value: object) -> list[str]:
    """The variable names a value refers to (`$NAME`, `${NAME}`), in order, once each."""
    names = [m.group().strip("${}") for m in _VARIABLE.finditer(str(value))]
    return list(dict.fromkeys(names))


def _all_set(names: list[str]) -> ShellText:
    """A shell test that every named variable is set (`${NAME+x}` does not
    trip `set -u`). The names come from `_references`: identifiers only."""
    return ShellText(" && ".join(f'[ -n "${{{name}+x}}" ]' for name in names))


def _comment(value: object) -> ShellText:
    return ShellText(" ".join(str(value).splitlines()))


def _environment(**options: Any) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ascend_inference", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        **options,
    )


def heredoc_marker(text: str, base: str) -> str:
    """`base`, or `base_<n>` when a line of `text` is `base`: a quoted
    heredoc ends at the first line equal to its marker, so a value holding
    that line would end it early and run the rest as commands."""
    lines = set(str(text).splitlines())
    marker, n = base, 0
    while marker in lines:
        n += 1
        marker = f"{base}_{n}"
    return marker


_SHELL = _environment(finalize=_quote_unless_marked)
_SHELL.filters.update(
    raw=ShellText,
    shquote=lambda value: ShellText(shlex.quote(str(value))),
    dq=_in_double_quotes,
    expandable=_expandable,
    references=_references,
    all_set=_all_set,
    comment=_comment,
    heredoc_marker=lambda text, base: ShellText(heredoc_marker(text, base)),
)
_PLAIN = _environment()


def render_template(template: str, **context: Any) -> str:
    environment = _SHELL if template.endswith(".sh.j2") else _PLAIN
    return environment.get_template(template).render(**context)


# How long an undo waits, after its `docker exec` failed, for a container that
# says it is still running to be seen stopping (seconds, one `docker inspect` each).
UNDO_WAITS_FOR_A_GOING_CONTAINER_S = 30


def wrap(script: str, place: str, container: str, *, undo: bool = False) -> str:
    """The one place that decides host vs container (cf. Ray's command runners).

    `undo`: the script undoes something in the container (stops Ray or the
    engine, puts back a file of the image). Such an undo may run while the
    container is already gone or going: when two containers are replaced
    delete-before-replace in one `pulumi up`, the engine deletes a step that
    depends on both (a Ray worker: its own container and the head's) in the
    chain of whichever container it reaches first, and the other container's
    chain does not wait for it (pulumi/pulumi pkg/resource/deploy/step_generator.go
    `generateSteps`: "If we already deleted this resource due to some other
    DBR, don't do it again"; step_executor.go runs the chains in parallel);
    a container removed by hand is gone before the next `up` deletes its steps.
    What the undo would stop or restore lived in the container and went with
    it, so a failed `docker exec` into a container that is gone or no longer
    running is the undo done; into a running container it stays a failure."""
    if place == "host":
        return script
    marker = heredoc_marker(script, "ASCEND_INFERENCE_SCRIPT")
    name = shlex.quote(container)
    if not undo:
        return f"docker exec -i {name} bash -s <<'{marker}'\n{script}{marker}\n"
    return (f"docker exec -i {name} bash -s <<'{marker}' && exit 0\n{script}{marker}\n"
            "status=$?\n"
            f"tries={UNDO_WAITS_FOR_A_GOING_CONTAINER_S}\n"
            'while [ "$tries" -gt 0 ]; do\n'
            f"  state=$(docker inspect -f '{{{{.State.Status}}}}' {name} 2>/dev/null) || state=gone\n"
            '  case "$state" in\n'
            '    running|restarting) tries=$((tries - 1)); sleep 1 ;;\n'
            f'    *) echo "container "{name}" is $state: what this undo undoes went with it"; exit 0 ;;\n'
            "  esac\n"
            "done\n"
            'exit "$status"\n')
