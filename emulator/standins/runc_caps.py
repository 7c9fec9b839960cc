"""`runc` as a GPUStack worker's node calls it: the real runc, minus the capabilities this
machine cannot grant.

Why: `--privileged` asks runc for every capability, and this sandbox's bounding set lacks
CAP_SYS_RESOURCE, so runc fails with "unable to apply caps" (emulator/README.md, "Docker
settings the stand-in docker plugin adds"). The Pulumi program's containers are mapped by that plugin; a
GPUStack worker creates its backend containers itself, privileged, through the node's docker
socket. Installed as /usr/local/sbin/runc on the nodes that run a worker (emulator/gpustack.py),
ahead of /usr/sbin/runc in dockerd's PATH, it removes from a bundle's config.json only the
capabilities missing from its own bounding set (and, lacking CAP_SYS_RESOURCE, raises an
oom_score_adj below its own to its own), then runs the real runc with the same arguments.
"""
import json
import os
import sys

REAL_RUNC = "/usr/sbin/runc"
# Linux capability numbers (include/uapi/linux/capability.h)
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE"]


def bounding_set() -> set:
    with open("/proc/self/status") as status:
        mask = int(next(line.split()[1] for line in status if line.startswith("CapBnd:")), 16)
    return {f"CAP_{name}" for bit, name in enumerate(CAPS) if mask >> bit & 1}


def bundle_of(argv: list) -> str | None:
    if not {"create", "run"} & set(argv):
        return None
    for i, arg in enumerate(argv):
        if arg in ("--bundle", "-b") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--bundle="):
            return arg.split("=", 1)[1]
    return os.getcwd()


def main() -> None:
    bundle = bundle_of(sys.argv[1:])
    config_path = os.path.join(bundle, "config.json") if bundle else None
    if config_path and os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
        process = config.get("process", {})
        caps = process.get("capabilities") or {}
        allowed = bounding_set()
        changed = False
        if any(c not in allowed for kind in caps.values() for c in kind or []):
            for kind, names in caps.items():
                caps[kind] = [c for c in names or [] if c in allowed]
            changed = True
        # Lowering oom_score_adj needs CAP_SYS_RESOURCE too: GPUStack's pause container asks for
        # -998, and runc's init dies writing it ("can't get final child's PID from pipe: EOF").
        with open("/proc/self/oom_score_adj") as f:
            own_oom = int(f.read())
        if "CAP_SYS_RESOURCE" not in allowed and process.get("oomScoreAdj", own_oom) < own_oom:
            process["oomScoreAdj"] = own_oom
            changed = True
        if changed:
            with open(config_path, "w") as f:
                json.dump(config, f)
    os.execv(REAL_RUNC, [REAL_RUNC, *sys.argv[1:]])


if __name__ == "__main__":
    main()
