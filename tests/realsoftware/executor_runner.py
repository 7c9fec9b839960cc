"""Runs the emulator's executor (emulator/executor.py) on a program holding
only the GPUStack model resource, as it does for a whole stack: JSON request
on stdin ({"op": "up" | "destroy", "state_file", "server_url", "password",
"model"}), the report as JSON on stdout, the executor's and the provider's
lines on stderr. The tests start it inside the real server's namespace."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from emulator.executor import Executor


def main() -> None:
    request = json.load(sys.stdin)
    executor = Executor(Path(request["state_file"]), log=lambda line: print(line, file=sys.stderr, flush=True))

    def program() -> None:
        import pulumi

        from components.gpustack_model import GpustackModel, GpustackModelArgs

        GpustackModel("gpustack-model-deploy", GpustackModelArgs(
            server_url=request["server_url"], password=pulumi.Output.secret(request["password"]),
            model=request["model"], ready_timeout_s=0))

    if request["op"] == "up":
        report = executor.up(program, {}, stack="gpustack", project="gpustack-model-only")
    else:
        report = executor.destroy()
    json.dump({"actions": [[a.resource, a.kind] for a in report.actions],
               "error": str(report.error) if report.error else None}, sys.stdout)


if __name__ == "__main__":
    main()
