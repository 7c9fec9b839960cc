"""PID 1 of one emulated node.

Started by `provision.py` as

    nsenter --net=/run/netns/<ns> -- unshare --mount --uts --ipc --pid --fork \
        --propagation private -- python holder.py <spec.json>

so it is the first process of a fresh PID, mount, UTS and IPC namespace in the
node's network namespace. It builds the node's filesystem view, sets the
hostname, starts the node's daemons (sshd, dockerd), then stays alive to reap
orphans, because every process of a PID namespace dies with its PID 1: killing
this one process is how `down` stops everything that ever ran in the node.

Why not `ip netns exec`: it remounts /sys for the namespace and hides the
cgroup mounts; dockerd then fails with "Devices cgroup isn't mounted".

This file is run as a script with the interpreter that runs the emulator and
imports nothing from the package (it runs before and after pivot_root, where
the package path may not resolve the same way).

Filesystem view of a node (all mounts live only in this mount namespace, so
they vanish by themselves when the node's last process exits):

    /            overlay: lower = the host's root filesystem (read-only view),
                 upper = <state>/nodes/<name>/upper  (every write a node makes,
                 e.g. /etc/hccn.conf, /data/models, /root, /tmp, lands here,
                 never on the host)
    /proc        new procfs for the node's PID namespace, with the node's own
                 boot id (<state>/nodes/<name>/run/boot_id) bound over
                 /proc/sys/kernel/random/boot_id
    /sys         recursive bind of the host's /sys (cgroup mounts for dockerd)
    /dev         tmpfs with the usual nodes, fresh devpts and /dev/shm, and the
                 fake Ascend devices (character devices with /dev/null's numbers)
    /run         tmpfs (sshd privsep dir, docker exec root and socket)
    /run/ascemu  bind of <state>/nodes/<name>/run (node facts, fault file,
                 sshd config, logs: readable from the host without entering)
    /var/lib/docker  bind of <state>/nodes/<name>/docker (a real directory on
                 the host filesystem, so dockerd can use overlay2 on it)
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

# pivot_root has no libc wrapper: call it by number.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)


def log(msg):
    print(f"[holder {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mount(source, target, fstype=None, flags=0, data=None):
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype or 'bind'} {data or ''}): {os.strerror(err)}")


def pivot_into(new_root):
    """Make new_root the node's / and drop every host mount from view."""
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root syscall number unknown for {os.uname().machine}")
    os.chdir(new_root)
    # pivot_root(".", ".") stacks the old root on top of the new one; the
    # lazy unmount below then detaches it (no put_old directory needed).
    if _libc.syscall(number, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    if _libc.umount2(b".", MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount old root: {os.strerror(err)}")
    os.chdir("/")


def build_dev(dev_dir, devices, shm_size):
    mount("tmpfs", dev_dir, "tmpfs", MS_NOSUID, "mode=755,size=1m")
    for name, major, minor in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
                               ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]:
        os.mknod(f"{dev_dir}/{name}", 0o20666, os.makedev(major, minor))
        # mknod's mode goes through the umask: without this /dev/null is 0644 and
        # a non-root process on the node (PostgreSQL for GPUStack) cannot open it.
        os.chmod(f"{dev_dir}/{name}", 0o666)
    for dev in devices:
        os.mknod(f"{dev_dir}/{dev['name']}", 0o20000 | dev.get("mode", 0o666),
                 os.makedev(dev["major"], dev["minor"]))
        os.chmod(f"{dev_dir}/{dev['name']}", dev.get("mode", 0o666))
    os.makedirs(f"{dev_dir}/pts")
    # A private devpts instance: ptys opened by ssh sessions stay in the node.
    mount("devpts", f"{dev_dir}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev_dir}/ptmx")
    os.makedirs(f"{dev_dir}/shm")
    # Per-node /dev/shm: containers run with --ipc host and Ray's object store
    # lives here, so nodes must not share it.
    mount("tmpfs", f"{dev_dir}/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={shm_size}")
    os.makedirs(f"{dev_dir}/mqueue")
    for name, target in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]:
        os.symlink(target, f"{dev_dir}/{name}")


def build_root(spec):
    root = spec["root"]
    # Nothing we mount may leak back to the host's mount namespace.
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    mount("overlay", root, "overlay", 0,
          f"lowerdir=/,upperdir={spec['upper']},workdir={spec['work']}")
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("/sys", f"{root}/sys", None, MS_BIND | MS_REC)
    build_dev(f"{root}/dev", spec["devices"], spec["shm_size"])
    mount("tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=256m")
    os.makedirs(f"{root}/run/ascemu")
    mount(spec["run_dir"], f"{root}/run/ascemu", None, MS_BIND)
    # The node's own boot id over the kernel's (which every node shares): the
    # host steps tell an install of this boot from one before a reboot by it,
    # and the emulator's `reboot` stand-in gives the node a new one.
    boot_id = os.path.join(spec["run_dir"], "boot_id")
    if not os.path.exists(boot_id):
        with open(boot_id, "w") as f:
            f.write(str(uuid.uuid4()) + "\n")
    mount(boot_id, f"{root}/proc/sys/kernel/random/boot_id", None, MS_BIND)
    os.makedirs(f"{root}/run/sshd", exist_ok=True)  # sshd's privilege-separation dir
    os.makedirs(f"{root}/var/lib/docker", exist_ok=True)
    mount(spec["docker_dir"], f"{root}/var/lib/docker", None, MS_BIND)
    pivot_into(root)


class Daemons:
    def __init__(self):
        self.procs = {}

    def start(self, name, argv, logfile):
        out = open(logfile, "ab")
        # Each daemon gets its own session so a Ctrl-C on a terminal that ran
        # `up` never reaches it.
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log(f"started {name} pid {self.procs[name].pid}: {' '.join(argv)}")

    def stop(self, timeout):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()


def main():
    spec = json.load(open(sys.argv[1]))
    build_root(spec)
    try:
        socket.sethostname(spec["hostname"])
    except OSError as exc:
        raise OSError(f"cannot set hostname {spec['hostname']!r} (at most 64 characters): {exc.strerror}") from None
    if "exec" in spec:
        # A node with one daemon and nothing else (benchmarks/preview_scale.py's
        # sshd-only nodes): the daemon becomes the node's PID 1 in place of this
        # interpreter, so a node costs one sshd. sshd reaps every child it gets
        # (its SIGCHLD handler waits for any pid), orphans included.
        with open("/run/ascemu/holder.ready", "w") as f:
            json.dump({"exec": spec["exec"]}, f)
        log(f"node ready; exec {' '.join(spec['exec'])}")
        os.execv(spec["exec"][0], spec["exec"])
    daemons = Daemons()
    for name, argv in spec["daemons"].items():
        daemons.start(name, argv, f"/run/ascemu/{name}.log")

    def on_term(signum, _frame):
        log(f"signal {signum}: stopping daemons")
        daemons.stop(timeout=5)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open("/run/ascemu/holder.ready", "w") as f:
        json.dump({name: p.pid for name, p in daemons.procs.items()}, f)
    log("node ready")
    # As PID 1 we inherit every orphan of the node (backgrounded ssh jobs,
    # double-forked daemons): reap them so none stays a zombie. A daemon we
    # started that dies is logged; `status` reports it.
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            time.sleep(1)
            continue
        for name, proc in daemons.procs.items():
            if proc.pid == pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                log(f"{name} (pid {pid}) exited with {proc.returncode}")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # the log is what `up` shows when a node fails
        log(f"FAILED: {exc}")
        sys.exit(1)
