#!/usr/bin/env python3
"""Emulator stand-in for a node's `reboot` and `systemctl` (one file, two names).

Installed on every emulated node as /usr/local/sbin/reboot and
/usr/local/sbin/systemctl, ahead of the host's own in root's PATH: an
emulated node is a set of namespaces on the development machine, not a
machine, so the real commands must never run there.

  reboot      what the host steps see of a reboot: a new boot id (the node's
              /run/ascemu/boot_id, bound over /proc/sys/kernel/random/boot_id)
              and the driver and firmware in version.info becoming the
              active ones (npu-smi reports them from node.json). Containers,
              dockerd and sshd keep running (not a real reboot).
  systemctl   `daemon-reload` (nothing to do) and `restart docker` (SIGHUP to
              the node's dockerd: it reloads /etc/docker/daemon.json, which
              is what the Ascend docker runtime's install needs of a restart).
              Anything else fails, saying it is not emulated.

Every call is appended to /run/ascemu/host-tools.log. Stdlib only.
"""

import json
import os
import signal
import sys
import time
import uuid

RUN_DIR = os.environ.get("ASCEMU_RUN_DIR", "/run/ascemu")
VERSION_FILES = {"driver_version": "/usr/local/Ascend/driver/version.info",
                 "firmware_version": "/usr/local/Ascend/firmware/version.info"}


def log(line):
    with open(os.path.join(RUN_DIR, "host-tools.log"), "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def version_in(path):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("Version="):
                    return line.split("=", 1)[1].strip()
    except FileNotFoundError:
        return None
    return None


def reboot():
    # In place: the file is bind-mounted, a new inode would not be seen.
    with open(os.path.join(RUN_DIR, "boot_id"), "w") as f:
        f.write(str(uuid.uuid4()) + "\n")
    facts_path = os.path.join(RUN_DIR, "node.json")
    with open(facts_path) as f:
        facts = json.load(f)
    for key, path in VERSION_FILES.items():
        found = version_in(path)
        if found:
            facts[key] = found
    tmp = facts_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(facts, f, indent=2)
    os.replace(tmp, facts_path)
    log(f"reboot: new boot id; active driver {facts.get('driver_version')}, firmware {facts.get('firmware_version')}")
    return 0


def systemctl(argv):
    log("systemctl " + " ".join(argv))
    if argv == ["daemon-reload"]:
        return 0
    if argv in (["restart", "docker"], ["restart", "docker.service"]):
        with open("/run/docker.pid") as f:
            os.kill(int(f.read().strip()), signal.SIGHUP)
        time.sleep(1)  # dockerd reloads its configuration asynchronously
        return 0
    print(f"emulator stand-in: `systemctl {' '.join(argv)}` is not emulated on this node", file=sys.stderr)
    return 1


def main():
    name = os.path.basename(sys.argv[0])
    if name == "reboot":
        return reboot()
    if name == "systemctl":
        return systemctl(sys.argv[1:])
    print(f"emulator stand-in: called as {name!r}, expected reboot or systemctl", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
