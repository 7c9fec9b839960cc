"""Emulator stand-in for pyACL's `acl` module (CANN's python/site-packages/acl.so).

Installed in the emulator image at the CANN toolkit's python/site-packages,
which the toolkit's set_env.sh (and the image's PYTHONPATH) puts on the path,
as a real CANN image does. It answers the two calls Ray 2.60 makes
(ray/_private/accelerators/npu.py): `acl.rt.get_device_count()`, counting the
/dev/davinciN the container sees, and `acl.get_soc_name()`.

Fault `acl_missing` (the node's /run/ascemu/faults.json, read at import):
the import fails exactly as it does in an image without pyACL,
`ModuleNotFoundError: No module named 'acl'`.
"""

import glob
import json
import os

_RUN_DIR = os.environ.get("ASCEMU_RUN_DIR", "/run/ascemu")


def _read(name):
    try:
        with open(os.path.join(_RUN_DIR, name)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


if _read("faults.json").get("acl_missing"):
    raise ModuleNotFoundError("No module named 'acl'", name="acl")


class _Runtime:
    @staticmethod
    def get_device_count():
        """(count, ret): ret 0 is ACL_SUCCESS."""
        return len(glob.glob("/dev/davinci[0-9]*")), 0


rt = _Runtime()


def get_soc_name():
    # npu-smi's name column (910B3) as AscendCL names the SoC (Ascend910B3).
    return "Ascend" + _read("node.json").get("chip_name", "910B3")
