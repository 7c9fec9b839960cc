"""Start a stand-in plugin, FOR TESTS ONLY: `standin.py command|docker ARGS...`,
run by the `pulumi-resource-*` scripts beside it (emulator/plugins/command.py,
docker.py; docs/standin-plugins.md). Starts only with
ASCEND_INFERENCE_STANDIN_PLUGINS=1, which the test fixtures set."""
import os
import sys

kind = sys.argv.pop(1)
if os.environ.get("ASCEND_INFERENCE_STANDIN_PLUGINS") != "1":
    sys.stderr.write(f"pulumi-resource-{kind}: a stand-in for tests only (emulator/plugins); it starts only with "
                     "ASCEND_INFERENCE_STANDIN_PLUGINS=1, which the test fixtures set. Install the real plugin "
                     "instead.\n")
    sys.exit(3)
# The repository root, from this script's own place (emulator/plugins/bin/), in place of
# this directory (sys.path[0]), which holds scripts only.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
from emulator.plugins import load_protocol_modules_only  # noqa: E402

load_protocol_modules_only()
if kind == "command":
    from emulator.plugins.command import main
else:
    from emulator.plugins.docker import main
main()
