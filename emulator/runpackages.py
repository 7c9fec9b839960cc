"""Stand-in vendor `.run` installers for emulated nodes (test tooling).

The real packages (Huawei's HDK driver and firmware, the Ascend docker
runtime from MindCluster) are self-extracting archives that need NPUs; these
are small bash scripts with the same options that make the same changes an
emulated node can show:

    driver_package("24.1.rc3")     --full | --upgrade [--quiet]: writes
                                   /usr/local/Ascend/driver/version.info (the
                                   format of docs/formats.md §1h); --upgrade
                                   needs an installed driver
    firmware_package("7.5.0.1.129") --full | --upgrade [--quiet]: writes
                                   /usr/local/Ascend/firmware/version.info
    docker_runtime_package()       --install [--quiet]: the runtime binary and
                                   an "ascend" runtime in /etc/docker/daemon.json

Driver and firmware become *active* (what npu-smi reports) only after the
node's `reboot` stand-in (standins/host_tools.py), as on a real server. Every
run is appended to /run/ascemu/installs.log, so a test can tell a second
`up` that did nothing from one that reinstalled. `place` puts a package on a
node at the path a stack's `host.packages.*` names.
"""
from __future__ import annotations

import os
import shlex
import sys

from .nodefs import NodeRoot, driver_version_info, firmware_version_info

INSTALL_LOG = "/run/ascemu/installs.log"
RUNTIME_DIR = "/usr/local/Ascend/Ascend-Docker-Runtime"

_OPTIONS = r'''mode=
for arg in "$@"; do
  case "$arg" in
    {modes}) mode=$arg ;;
    --quiet) ;;
    *) echo "[ERROR]unknown option $arg" >&2; exit 1 ;;
  esac
done
if [ -z "$mode" ]; then echo "[ERROR]no install mode given ({modes})" >&2; exit 1; fi
echo "$(date +%T) $(basename "$0") $*" >> {log}
'''


def _script(title: str, modes: str, body: str) -> str:
    return ("#!/bin/bash\n"
            f"# Emulator stand-in for {title} (emulator/runpackages.py): no NPU here,\n"
            "# it changes the files the real package would, and nothing else.\n"
            "set -euo pipefail\n"
            + _OPTIONS.format(modes=modes, log=INSTALL_LOG) + body)


def _write(path: str, content: str) -> str:
    marker = "ASCEMU_VERSION_INFO"
    return (f"mkdir -p {shlex.quote(os.path.dirname(path))}\n"
            f"cat > {shlex.quote(path)}.tmp <<'{marker}'\n{content}{marker}\n"
            f"mv {shlex.quote(path)}.tmp {shlex.quote(path)}\n")


def driver_package(version: str) -> str:
    path = "/usr/local/Ascend/driver/version.info"
    body = (f'if [ "$mode" = --upgrade ] && [ ! -f {path} ]; then\n'
            '  echo "[ERROR]no driver is installed to upgrade (use --full)" >&2; exit 1\nfi\n'
            + _write(path, driver_version_info(version))
            + 'echo "[INFO]Driver package installed successfully! '
              'Reboot needed for installation/upgrade to take effect!"\n')
    return _script(f"Ascend-hdk-910b-npu-driver_{version}_linux-aarch64.run", "--full|--upgrade", body)


def firmware_package(version: str) -> str:
    path = "/usr/local/Ascend/firmware/version.info"
    # firmware version.info names the driver it was packaged with.
    driver = "$(sed -n 's/^Version=//p' /usr/local/Ascend/driver/version.info)"
    content = firmware_version_info(version, "@DRIVER@")
    body = (_write(path, content)
            + f'sed -i "s/@DRIVER@/{driver}/g" {path}\n'
            + 'echo "[INFO]Firmware package installed successfully! '
              'Reboot now or after driver installation for the installation/upgrade to take effect."\n')
    return _script(f"Ascend-hdk-910b-npu-firmware_{version}.run", "--full|--upgrade", body)


def docker_runtime_package() -> str:
    python = os.path.realpath(sys.executable)
    merge = ("import json, os\n"
             "path = '/etc/docker/daemon.json'\n"
             "config = json.load(open(path)) if os.path.exists(path) else {}\n"
             f"config.setdefault('runtimes', {{}})['ascend'] = {{'path': '{RUNTIME_DIR}/ascend-docker-runtime', "
             "'runtimeArgs': []}\n"
             "os.makedirs('/etc/docker', exist_ok=True)\n"
             "json.dump(config, open(path, 'w'), indent=2)\n")
    body = (f"mkdir -p {RUNTIME_DIR}\n"
            # The real runtime wraps runc and adds the NPUs a container asks
            # for; the stand-in wraps runc. It is registered, not made the
            # default runtime, so the emulated containers keep plain runc.
            f"printf '#!/bin/sh\\nexec runc \"$@\"\\n' > {RUNTIME_DIR}/ascend-docker-runtime\n"
            f"chmod 755 {RUNTIME_DIR}/ascend-docker-runtime\n"
            f"{shlex.quote(python)} - <<'ASCEMU_MERGE'\n{merge}ASCEMU_MERGE\n"
            'echo "[INFO] Ascend Docker Runtime installed; restart docker to use it"\n')
    return _script("Ascend-docker-runtime_6.0.0_linux-aarch64.run", "--install", body)


def place(holder_pid: int, path: str, script: str) -> None:
    """Put a package on a running node at `path` (mode 644: the step makes it executable, as the runbook does)."""
    NodeRoot(holder_pid).write_if_changed(path, script.encode(), 0o644)
