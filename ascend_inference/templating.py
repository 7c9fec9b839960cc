"""The jinja environment the node scripts and engine files are rendered with,
and `wrap`, which turns a script into what runs in its place (host or
container).

A leaf module (it imports nothing of this package), so that engines, the
renderer and the Pulumi components can all use it without an import circle.
"""
from __future__ import annotations

import shlex

import jinja2

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("ascend_inference", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
_TEMPLATES.filters["shquote"] = lambda value: shlex.quote(str(value))


def render_template(template: str, **context) -> str:
    return _TEMPLATES.get_template(template).render(**context)


def wrap(script: str, place: str, container: str) -> str:
    """The one place that decides host vs container (cf. Ray's command runners)."""
    if place == "host":
        return script
    return (f"docker exec -i {shlex.quote(container)} bash -s <<'ASCEND_INFERENCE_SCRIPT'\n"
            f"{script}ASCEND_INFERENCE_SCRIPT\n")
