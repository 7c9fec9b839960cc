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


def wrap(script: str, place: str, container: str) -> str:
    """The one place that decides host vs container (cf. Ray's command runners)."""
    if place == "host":
        return script
    marker = heredoc_marker(script, "ASCEND_INFERENCE_SCRIPT")
    return f"docker exec -i {shlex.quote(container)} bash -s <<'{marker}'\n{script}{marker}\n"
