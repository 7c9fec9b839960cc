"""Runs one call of the GPUStack model resource's provider, as the Pulumi
engine's dynamic-provider host would: JSON request on stdin ({"op", "id",
"props", "olds", "news"}), JSON answer on stdout, the provider's progress
lines on stderr. The tests start it inside the loopback-only namespace where
the real GPUStack server listens (conftest.py)."""
from __future__ import annotations

import json
import sys

from ascend_inference.gpustack_api import GpustackError
from components.gpustack_model import GpustackModelError, GpustackModelProvider


def main() -> None:
    request = json.load(sys.stdin)
    provider = GpustackModelProvider()
    op = request["op"]
    try:
        if op == "create":
            created = provider.create(request["props"])
            answer = {"id": created.id, "outs": created.outs}
        elif op == "read":
            read = provider.read(request["id"], request["props"])
            answer = {"id": read.id, "outs": read.outs}
        elif op == "update":
            answer = {"outs": provider.update(request["id"], request["olds"], request["news"]).outs}
        elif op == "delete":
            provider.delete(request["id"], request["props"])
            answer = {}
        elif op == "diff":
            diff = provider.diff(request["id"], request["olds"], request["news"])
            answer = {"changes": diff.changes, "replaces": diff.replaces,
                      "delete_before_replace": diff.delete_before_replace}
        else:
            raise SystemExit(f"unknown op {op}")
    # The provider's methods fail with GpustackModelError (one line, `one_message`);
    # GpustackError where a test calls the API module's own functions.
    except (GpustackError, GpustackModelError) as error:
        answer = {"error": str(error)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
