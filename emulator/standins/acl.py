"""Emulator stand-in for pyACL's `acl` module (CANN's python/site-packages/acl.so).

Installed in the emulator image at the CANN toolkit's python/site-packages,
which the toolkit's set_env.sh (and the image's PYTHONPATH) puts on the path,
as a real CANN image does. It answers the two calls Ray 2.60 makes
(ray/_private/accelerators/npu.py): `acl.rt.get_device_count()`, counting the
/dev/davinciN the container sees, and `acl.get_soc_name()`.

Fault `acl_missing` (the node's /run/ascemu/faults.json, read at import):
the image's copy behaves as if it were not there: an `acl` further down
sys.path (one pyacl-install put there from the nnrt .run) is loaded in its
place, and without one the import fails exactly as in an image without
pyACL, `ModuleNotFoundError: No module named 'acl'`. A copy installed
elsewhere than the image's toolkit ignores the fault.
"""

import glob
import importlib.util
import json
import os
import sys

_RUN_DIR = os.environ.get("ASCEMU_RUN_DIR", "/run/ascemu")


def _read(name):
    try:
        with open(os.path.join(_RUN_DIR, name)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


_IMAGE_COPY = "/usr/local/Ascend/ascend-toolkit/"


def _next_acl():
    """The `acl` package after this one on sys.path, or None."""
    here = os.path.realpath(os.path.dirname(os.path.dirname(__file__)))
    seen_here = False
    for entry in sys.path:
        entry = os.path.realpath(entry or ".")
        if entry == here:
            seen_here = True
            continue
        candidate = os.path.join(entry, "acl", "__init__.py")
        if seen_here and os.path.isfile(candidate):
            return candidate
    return None


if os.path.realpath(__file__).startswith(os.path.realpath(_IMAGE_COPY)) and _read("faults.json").get("acl_missing"):
    _other = _next_acl()
    if _other is None:
        raise ModuleNotFoundError("No module named 'acl'", name="acl")
    _spec = importlib.util.spec_from_file_location("acl", _other, submodule_search_locations=[os.path.dirname(_other)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["acl"] = _module
    _spec.loader.exec_module(_module)


class _Runtime:
    @staticmethod
    def get_device_count():
        """(count, ret): ret 0 is ACL_SUCCESS."""
        return len(glob.glob("/dev/davinci[0-9]*")), 0


rt = _Runtime()


def get_soc_name():
    # npu-smi's name column (910B3) as AscendCL names the SoC (Ascend910B3).
    return "Ascend" + _read("node.json").get("chip_name", "910B3")
