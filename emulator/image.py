"""The emulator's container image and the docker settings the stand-in docker plugin adds.

No registry is reachable, so `ascemu/runtime:latest` is `docker load`ed from
an archive built here (`build_image`, the same bytes and so the same image id
on every node): a minimal root (directories, merged-/usr symlinks, a few /etc
files copied from the host, /bin/sh) plus what a real inference image would
carry under /usr/local: the engine stand-ins (vllm-mindspore, vllm, lmdeploy,
MindIE's mindieservice_daemon and its conf/config.json) with pip's records of
their versions and MindIE's version.info (`ENGINE_VERSIONS`, or a `Variant`
for the image faults), CANN's install record, and the CANN/MindIE
`set_env.sh` scripts the runbooks source.

Everything else comes from the host through read-only bind mounts, the
*base mounts* (`base_mounts()`): the host's /usr subdirectories except
/usr/local (so the image, not the host, owns /usr/local, as in a real image,
and the stack's own `-v /usr/local/...` mounts are what bring the Ascend
tools in), the Python installation that runs the emulator (Python and Ray
inside containers), and the node's /run/ascemu (facts and fault file that the
stand-ins read). The program under test passes its own `docker run`
settings; the stand-in docker plugin (emulator/plugins/docker.py) adds these.

`--privileged` cannot work here: runc must then grant every capability, and
this sandbox's bounding set lacks CAP_SYS_RESOURCE. `privileged_substitute()`
is what the stand-in docker plugin uses instead: every capability but that one, and no
seccomp filter.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

IMAGE = "ascemu/runtime:latest"
STANDINS = Path(__file__).resolve().parent / "standins"
VLLM_ASCEND_NAMES = Path(__file__).resolve().parent.parent / "ascend_inference/engines/data/vllm_ascend_names.json"
MINDIE_SERVICE = "/usr/local/Ascend/mindie/latest/mindie-service"
CANN_VERSION = "8.0.0"
# The engines' versions in the image, as pip (and MindIE's version.info)
# record them: the ones the shipped stacks pin (docs/engine-versions.md).
# vllm-mindspore: tp16-vllm-mindspore's 0.3.0, before 0.4.0 renamed its
# variables; a stack pinning another version (tp8-pp2-300iduo's 0.4.0) gets
# an image of its own under its image name (emulator/userpath.py provide_engine_version).
# lmdeploy: tp16-lmdeploy's 0.14.0, the last with the rank-table reader.
# vllm-ascend: the release whose names ascend_inference/engines/data/vllm_ascend_names.json holds.
ENGINE_VERSIONS = {"vllm_mindspore": "0.3.0", "lmdeploy": "0.14.0", "gpustack": "2.3.0", "mindie": "2.0.T3.B010",
                   "vllm_ascend": "0.23.0.post1"}
# Where the stand-ins' pip records go: /usr/local belongs to the image (the
# host's /usr subdirectories are mounted over the rest of /usr).
SITE_PACKAGES = "/usr/local/lib/python3.11/dist-packages"
BUILT = 1767225600  # 2026-01-01T00:00:00Z
MINDFORMERS_YAML = "/workspace/mindformers/research/deepseek3/deepseek_r1_671b/predict_deepseek_r1_671b_w8a8.yaml"
# CANN's python/site-packages (pyACL's acl.so lives there), through the toolkit's `latest` link.
ACL_SITE_PACKAGES = "/usr/local/Ascend/ascend-toolkit/latest/python/site-packages"

# Copied from the host at build time (symlinks stay symlinks). /etc/alternatives
# is copied rather than mounted: its links point into /usr, which is mounted.
ETC_FROM_HOST = ["passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
                 "alternatives", "os-release", "ssl", "localtime", "host.conf", "protocols", "services",
                 "debian_version", "bash.bashrc", "profile", "profile.d", "login.defs", "mime.types"]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True

    def docker_arg(self) -> str:
        return f"{self.source}:{self.target}{':ro' if self.read_only else ''}"


def python_prefixes() -> list[str]:
    """The Python installation(s) that must be visible in containers."""
    prefixes = [os.path.realpath(sys.base_prefix)]
    if os.path.realpath(sys.prefix) not in prefixes:
        prefixes.append(os.path.realpath(sys.prefix))  # a virtualenv on top
    return prefixes


def python_path() -> str:
    return os.path.realpath(sys.executable)


def base_mounts() -> list[Mount]:
    """Bind mounts every container on an emulated node needs (read the module doc)."""
    mounts = [Mount(f"/usr/{d}", f"/usr/{d}") for d in sorted(os.listdir("/usr"))
              if d != "local" and os.path.isdir(f"/usr/{d}") and not os.path.islink(f"/usr/{d}")]
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.isdir(f"/{d}") and not os.path.islink(f"/{d}"):
            mounts.append(Mount(f"/{d}", f"/{d}"))  # a host without merged /usr
    mounts += [Mount(p, p) for p in python_prefixes()]
    mounts.append(Mount("/run/ascemu", "/run/ascemu", read_only=False))  # `-tls -s` writes the fault file
    return mounts


def base_docker_args() -> list[str]:
    """`docker run` arguments for the base mounts: ["-v", "/usr/bin:/usr/bin:ro", ...]."""
    args = []
    for m in base_mounts():
        args += ["-v", m.docker_arg()]
    return args


def base_pulumi_volumes() -> list[dict]:
    """The base mounts as pulumi_docker.Container `volumes` entries."""
    return [{"host_path": m.source, "container_path": m.target, "read_only": m.read_only} for m in base_mounts()]


def privileged_substitute() -> dict:
    """What to pass instead of `--privileged` on the emulator (see module doc)."""
    return {
        "docker_run_args": ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                            "--security-opt", "seccomp=unconfined"],
        "pulumi_docker": {"privileged": False,
                          "capabilities": {"adds": ["ALL"], "drops": ["SYS_RESOURCE"]},
                          "security_opts": ["seccomp=unconfined"]},
        "why": "this sandbox's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot "
               "grant all capabilities and `--privileged` fails with 'unable to apply caps'",
    }


def image_env() -> dict[str, str]:
    bins = [f"{p}/bin" for p in reversed(python_prefixes())]
    # PYTHONPATH: a CANN image's ENV puts pyACL on the path (so does its
    # set_env.sh); runbook 003's env file sources no set_env.sh at all.
    return {"PATH": ":".join(bins + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
            "PYTHONPATH": ACL_SITE_PACKAGES, "LANG": "C.UTF-8"}


# --------------------------------------------------------------------------
# rootfs tarball
# --------------------------------------------------------------------------

class _Tar:
    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.dirs = set()

    def _info(self, name, kind, mode):
        info = tarfile.TarInfo(name.lstrip("/"))
        # A fixed time: the same content gives the same layer, so every node
        # (and a node whose image is put back after a fault) has the same image id.
        info.type, info.mode, info.mtime, info.uname, info.gname = kind, mode, BUILT, "root", "root"
        return info

    def dir(self, path, mode=0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.dirs:
                self.dirs.add(p)
                self.tar.addfile(self._info(p, tarfile.DIRTYPE, mode if i == len(parts) else 0o755))

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        data = data.encode() if isinstance(data, str) else data
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, path, target):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def host(self, path):
        """Copy a host path (file, symlink or directory tree) at the same place."""
        if os.path.islink(path):
            self.symlink(path, os.readlink(path))
        elif os.path.isdir(path):
            self.dir(path)
            for name in sorted(os.listdir(path)):
                self.host(os.path.join(path, name))
        elif os.path.isfile(path):
            self.file(path, Path(path).read_bytes(), os.stat(path).st_mode & 0o777)


def python_launcher(module: str, entry: str) -> str:
    return (f"#!{python_path()}\n# emulator stand-in: {entry}\nimport sys\n"
            f"sys.path.insert(0, '/opt/ascemu')\nimport {module}\nsys.exit({module}.main())\n")


def set_env_scripts() -> dict[str, str]:
    """The `source .../set_env.sh` lines of the runbooks must work in the image.
    Variable names as in CANN/MindIE; values point at the image's own tree."""
    arch = f"{platform.machine()}-linux"
    toolkit = "/usr/local/Ascend/ascend-toolkit/latest"
    return {
        "/usr/local/Ascend/ascend-toolkit/set_env.sh":
            f"# emulator stand-in for CANN's set_env.sh\nexport ASCEND_TOOLKIT_HOME={toolkit}\n"
            f"export ASCEND_HOME_PATH={toolkit}\nexport ASCEND_OPP_PATH={toolkit}/opp\n"
            f"export ASCEND_AICPU_PATH={toolkit}\n"
            f"export LD_LIBRARY_PATH={toolkit}/lib64:/usr/local/Ascend/driver/lib64/driver:"
            "/usr/local/Ascend/driver/lib64/common:${LD_LIBRARY_PATH}\n"
            # As CANN's: pyACL (acl) comes from here.
            f"export PYTHONPATH={ACL_SITE_PACKAGES}:${{PYTHONPATH:-}}\n",
        "/usr/local/Ascend/nnal/atb/set_env.sh":
            "# emulator stand-in\nexport ATB_HOME_PATH=/usr/local/Ascend/nnal/atb/latest/atb\n",
        "/usr/local/Ascend/atb-models/set_env.sh":
            "# emulator stand-in\nexport ATB_SPEED_HOME_PATH=/usr/local/Ascend/atb-models\n",
        "/usr/local/Ascend/mindie/set_env.sh":
            f"# emulator stand-in\nexport MIES_INSTALL_PATH={MINDIE_SERVICE}\n",
        f"/usr/local/Ascend/ascend-toolkit/{CANN_VERSION}/{arch}/ascend_toolkit_install.info":
            # Format: docs/formats.md §1a (the "CANN:" block)
            f"package_name=Ascend-cann-toolkit\nversion={CANN_VERSION}\ninnerversion=V100R001C20SPC001B251\n"
            "compatible_version=[V100R001C15],[V100R001C17],[V100R001C18],[V100R001C19],[V100R001C20]\n"
            f"arch={platform.machine()}\nos=linux\npath=/usr/local/Ascend/ascend-toolkit/{CANN_VERSION}/{arch}\n",
    }


@dataclass(frozen=True)
class Variant:
    """What may differ between nodes' images (emulator faults): the engines'
    version, or only a marker file (the same versions, another image id)."""

    engine_version: str | None = None
    marker: str = ""

    def versions(self) -> dict[str, str]:
        return {k: self.engine_version or v for k, v in ENGINE_VERSIONS.items()}


def shell_files() -> dict[str, str]:
    """/bin/sh and the libraries it loads, by path in the image -> host file.
    The image check runs `docker run --entrypoint /bin/sh IMAGE` without the
    emulator's base mounts, as on a real node, so the image needs its own
    shell. A path under a top-level link into /usr (merged /usr: /lib64 ->
    usr/lib64) is written where the link points, as the image has the same links."""
    shell = os.path.realpath("/bin/sh")
    listed = subprocess.run(["ldd", shell], capture_output=True, text=True, check=True).stdout
    out = {"/usr/bin/sh": shell}
    for path in [shell, *re.findall(r"(/\S+) \(0x", listed)]:
        first, _, rest = path.lstrip("/").partition("/")
        target = f"/{os.readlink('/' + first).strip('/')}/{rest}" if os.path.islink(f"/{first}") else path
        out[target] = os.path.realpath(path)
    return out


def build_rootfs(out: Path, variant: Variant = Variant()) -> Path:
    """Write the rootfs tarball and return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as raw:
        t = _Tar(raw)
        for d in ("proc", "sys", "dev", "run", "etc", "home", "opt", "mnt", "srv", "var/log", "var/lib",
                  "usr", "data"):
            t.dir(d)
        t.dir("tmp", 0o1777)
        t.dir("var/tmp", 0o1777)
        t.dir("root", 0o700)
        for d in ("bin", "lib", "lib32", "lib64", "libx32"):
            if os.path.islink(f"/{d}"):
                t.symlink(d, os.readlink(f"/{d}"))
        if os.path.islink("/sbin"):
            # A real directory of links, not a link to usr/sbin: `docker run --init`
            # mounts docker-init at /sbin/docker-init, which must not land in the
            # read-only /usr/sbin mount.
            t.dir("sbin")
            for name in sorted(os.listdir("/usr/sbin")):
                t.symlink(f"sbin/{name}", f"/usr/sbin/{name}")
        for name in ETC_FROM_HOST:
            if os.path.lexists(f"/etc/{name}"):
                t.host(f"/etc/{name}")
        t.file("/etc/hosts", "127.0.0.1\tlocalhost\n")
        t.file("/etc/ascemu-image", json.dumps({"image": IMAGE, "python": python_path(), "marker": variant.marker,
                                                 "versions": variant.versions()}, sort_keys=True) + "\n")
        for path, source in shell_files().items():
            t.file(path, Path(source).read_bytes(), 0o755)
        versions = variant.versions()
        for dist in ("vllm_mindspore", "lmdeploy", "gpustack", "vllm_ascend"):
            # What pip leaves: NAME-VERSION.dist-info/METADATA (read by the image check).
            name = dist.replace("_", "-")
            t.file(f"{SITE_PACKAGES}/{dist}-{versions[dist]}.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: {versions[dist]}\n")
        mindie = versions["mindie"]
        # MindIE's version.info, in its format (MindIE's install guide).
        t.file("/usr/local/Ascend/mindie/latest/version.info",
               f"Ascend-mindie : MindIE {mindie}\nmindie-rt: {mindie}\nmindie-torch: {mindie}\n"
               f"mindie-service: {mindie}\nmindie-llm: {mindie}\nmindie-sd:{mindie}\n"
               f"Platform : {platform.machine()}\n")
        for name in ("engine.py", "vllm_serve_usage.txt", "lmdeploy_flags.json"):
            t.file(f"/opt/ascemu/{name}", (STANDINS / name).read_bytes())
        # The names validate checks vllm-ascend stacks against; the `vllm` stand-in parses with them.
        t.file("/opt/ascemu/vllm_ascend_names.json", VLLM_ASCEND_NAMES.read_bytes())
        for cmd in ("vllm-mindspore", "vllm", "lmdeploy"):
            t.file(f"/usr/local/bin/{cmd}", python_launcher("engine", cmd), 0o755)
        t.file(f"{MINDIE_SERVICE}/bin/mindieservice_daemon", python_launcher("engine", "mindieservice_daemon"), 0o755)
        t.file(f"{MINDIE_SERVICE}/conf/config.json", (STANDINS / "mindie_config.json").read_bytes(), 0o640)
        for path, text in set_env_scripts().items():
            t.file(path, text)
        # A MindFormers checkout's predict yaml (runbook 000's MINDFORMERS_MODEL_CONFIG;
        # emulator/userpath.py machine_settings points the stacks that read it from the image here).
        t.file(MINDFORMERS_YAML, "# emulator stand-in for MindFormers' research/deepseek3 predict yaml\n"
               "run_mode: 'predict'\nuse_parallel: True\n")
        # pyACL where CANN installs it (acl.so there; a package here).
        # (Written under the version directory: `latest` is a symlink entry.)
        t.file(f"/usr/local/Ascend/ascend-toolkit/{CANN_VERSION}/python/site-packages/acl/__init__.py",
               (STANDINS / "acl.py").read_bytes())
        t.symlink("/usr/local/Ascend/ascend-toolkit/latest", CANN_VERSION)
        for d in ("opp", "lib64"):
            t.dir(f"/usr/local/Ascend/ascend-toolkit/{CANN_VERSION}/{d}")
    return out


def build_image(out: Path, tag: str = IMAGE, variant: Variant = Variant()) -> Path:
    """A `docker load` archive (docker save's layout: manifest.json, the
    config, one layer) of the runtime image, and return its path. Built
    byte for byte the same from the same inputs, so its image id (the
    config's digest) is the same on every node: `docker import` would stamp
    each node's copy with its own creation time and so its own id, and the
    image check compares ids across nodes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    layer = build_rootfs(out.with_suffix(".rootfs.tar"), variant)
    layer_bytes = layer.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    created = "2026-01-01T00:00:00Z"
    env = [f"{k}={v}" for k, v in image_env().items()]
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        "os": "linux", "created": created,
        "config": {"Env": env, "Cmd": ["/bin/bash"], "WorkingDir": "/root"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "emulator/image.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_dir = diff_id.removeprefix("sha256:")
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_dir}/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as archive:
        for name, data in ((config_name, config), (f"{layer_dir}/layer.tar", layer_bytes),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), BUILT, 0o644
            archive.addfile(info, io.BytesIO(data))
    layer.unlink()
    return out


def image_id(archive: Path) -> str:
    """The id `docker load` gives the archive's image: its config's digest."""
    with tarfile.open(archive) as t:
        manifest = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
    return "sha256:" + manifest[0]["Config"].removesuffix(".json")


def mindie_config_variant_script(name: str, *, drop: tuple[str, ...] = (), add: dict | None = None,
                                  base: str = IMAGE) -> str:
    """Shell to run on a node: tag `name` as a copy of the runtime image whose
    MindIE conf/config.json lacks the `drop` keys and has the `add` ones
    (dotted paths, e.g. `BackendConfig.ScheduleConfig.maxIterTimes`), as
    another MindIE version's file would. No registry and no Python in the
    image: the file is edited on the node and copied into a created (never
    started) container, which is committed."""
    import shlex

    conf = f"{MINDIE_SERVICE}/conf/config.json"
    edit = ("import json, sys\n"
            "path, drops, adds = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
            "config = json.load(open(path))\n"
            "def parent(dotted):\n"
            "    *keys, last = dotted.split('.')\n"
            "    node = config\n"
            "    for key in keys:\n"
            "        node = node[key]\n"
            "    return node, last\n"
            "for dotted in drops:\n"
            "    node, last = parent(dotted)\n"
            "    del node[last]\n"
            "for dotted, value in adds.items():\n"
            "    node, last = parent(dotted)\n"
            "    node[last] = value\n"
            "json.dump(config, open(path, 'w'), indent=4)\n")
    q = shlex.quote
    return (f"set -e; work=$(mktemp -d); cid=$(docker create {q(base)} true); "
            f"docker cp $cid:{q(conf)} $work/config.json; "
            f"{q(python_path())} -c {q(edit)} $work/config.json {q(json.dumps(list(drop)))} "
            f"{q(json.dumps(add or {}))}; "
            f"docker cp $work/config.json $cid:{q(conf)}; docker commit $cid {q(name)} >/dev/null; "
            f"docker rm $cid >/dev/null; rm -rf $work")


def nnrt_run_standin(version: str = "8.0.RC1") -> str:
    """A stand-in for CANN's `Ascend-cann-nnrt_<version>_linux-<arch>.run`
    (a makeself archive): `--noexec --extract=DIR` writes
    `DIR/run_package/Ascend-pyACL_<version>_linux-<arch>.run`, which with
    `--full --install-path=P` installs the `acl` stand-in as
    `P/CANN-<version>/python/site-packages/acl` (runbook 000's layout).
    Written to a node by a test; bash only, as the real archives need."""
    arch = platform.machine()
    acl = (STANDINS / "acl.py").read_text()
    marker = "ASCEMU_ACL_EOF"
    inner = ("#!/usr/bin/env bash\n# emulator stand-in for Ascend-pyACL's .run\nset -e\ntarget=''\n"
             'for arg in "$@"; do case "$arg" in --install-path=*) target="${arg#--install-path=}";; '
             '--full) ;; *) echo "unsupported option $arg" >&2; exit 2;; esac; done\n'
             '[ -n "$target" ] || { echo "--install-path is required" >&2; exit 2; }\n'
             f'site="$target/CANN-{version}/python/site-packages"\nmkdir -p "$site/acl"\n'
             f"cat > \"$site/acl/__init__.py\" <<'{marker}'\n{acl}{marker}\n"
             'echo "pyACL installed to $site"\n')
    inner_marker = "ASCEMU_PYACL_RUN_EOF"
    return ("#!/usr/bin/env bash\n# emulator stand-in for CANN's Ascend-cann-nnrt .run (makeself)\nset -e\n"
            "dir=''; noexec=''\n"
            'for arg in "$@"; do case "$arg" in --noexec) noexec=1;; --extract=*) dir="${arg#--extract=}";; '
            '*) echo "unsupported option $arg" >&2; exit 2;; esac; done\n'
            '[ -n "$noexec" ] && [ -n "$dir" ] || { echo "the stand-in supports --noexec --extract=DIR only" >&2; '
            'exit 2; }\n'
            'mkdir -p "$dir/run_package"\n'
            f"cat > \"$dir/run_package/Ascend-pyACL_{version}_linux-{arch}.run\" <<'{inner_marker}'\n"
            f"{inner}{inner_marker}\n"
            f'chmod +x "$dir/run_package/Ascend-pyACL_{version}_linux-{arch}.run"\n')
