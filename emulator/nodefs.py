"""What an emulated node's filesystem holds besides the host's own files.

Everything here is written into the node's overlay *upper* directory before
the node starts (so the host never sees it), or, once the node runs, through
/proc/<holder pid>/root (the node's own view, used by fault injection).

File contents follow the real formats in docs/formats.md (section numbers
below); where no verbatim sample exists the content is marked "not verified".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .node import ClusterError

STANDINS = Path(__file__).resolve().parent / "standins"

# Bus ids of an Atlas 800 A2 as printed by `npu-smi info` (docs/formats.md §1a).
BUS_IDS = ["0000:C1:00.0", "0000:01:00.0", "0000:C2:00.0", "0000:02:00.0",
           "0000:81:00.0", "0000:41:00.0", "0000:82:00.0", "0000:42:00.0"]

# Device nodes: real ones are the davinci driver's; the fakes borrow /dev/null's
# numbers so `docker run --device` accepts them and nothing can be harmed by
# reading or writing them.
NULL_MAJOR, NULL_MINOR = 1, 3
EXTRA_DEVICES = ["davinci_manager", "devmm_svm", "hisi_hdc"]


@dataclass(frozen=True)
class Layout:
    """Where the fake Ascend host files go on every node (all configurable)."""

    npu_smi: tuple[str, ...] = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi")
    driver_dir: str = "/usr/local/Ascend/driver"
    hccn_tool: str = "/usr/local/Ascend/driver/tools/hccn_tool"
    # Installs usually link it into a bin dir; the runbooks call it bare.
    hccn_tool_links: tuple[str, ...] = ("/usr/local/bin/hccn_tool",)
    firmware_dir: str = "/usr/local/Ascend/firmware"
    dcmi_dir: str = "/usr/local/dcmi"
    hccn_conf: str = "/etc/hccn.conf"
    ascend_install_info: str = "/etc/ascend_install.info"
    vnpu_cfg: str = "/etc/vnpu.cfg"
    npu_log_dirs: tuple[str, ...] = ("/var/log/npu/slog", "/var/log/npu/profiling", "/var/log/npu/dump")
    # Host paths the runbooks bind into their containers; they must exist.
    extra_dirs: tuple[str, ...] = ("/usr/local/Ascend/add-ons", "/data", "/data2", "/lib/modules")
    slog_conf: str = "/var/log/npu/conf/slog/slog.conf"
    model_dirs: tuple[str, ...] = ("/data/models/deepseek-r1",)
    rootinfo: str = "/etc/hccl_rootinfo.json"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Layout:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class Hardware:
    """What the stand-ins report; the same for every node unless a fault says otherwise."""

    chip_name: str = "910B3"
    npu_count: int = 8
    hbm_mb: int = 65536
    driver_version: str = "24.1.rc3"  # the version runbook 001 expects
    firmware_version: str = "7.5.0.1.129"
    netmask: str = "255.255.0.0"
    extra: dict = field(default_factory=dict)
    # Atlas A3: 2 dies per NPU (npu_count then counts dies, as /dev/davinciN
    # and hccn_tool do), and the super pod `npu-smi info -t spod-info` reports;
    # None: the chip has no super pods and says so.
    chips_per_npu: int = 1
    super_pod_id: int | None = None
    # Chips per card in the 310P3 card/chip shape of `npu-smi info`
    # (docs/formats.md §1d; npu_count counts chips): the 300I Duo's 2. The A3's
    # two dies per NPU (chips_per_npu) print in the 910 shape instead.
    chips_per_card: int = 1
    # A RoCE fabric: hccn_tool and /etc/hccn.conf on the node. Without one
    # (the 300I Duo) neither exists, so any hccn_tool call fails as
    # `command not found` and cannot pass for a check that ran.
    fabric: bool = True


# An Atlas 800I A3 as the stand-ins show it (docs/formats.md §1c, §1i).
A3_HARDWARE = dict(chip_name="Ascend910", npu_count=16, chips_per_npu=2, super_pod_id=0, hbm_mb=65536)


def atlas_300i_duo() -> Hardware:
    """An Atlas 300I Duo server: 4 cards x 2 310P3 chips (44280 MB each, as
    the 310P3 sample of docs/formats.md §1d prints), no RoCE fabric."""
    return Hardware(chip_name="310P3", npu_count=8, hbm_mb=44280, chips_per_card=2, fabric=False)


# Stand-ins for the node's own `reboot` and `systemctl` (standins/host_tools.py),
# ahead of the host's in root's PATH: the real ones must never run in a node.
HOST_TOOLS = ("/usr/local/sbin/reboot", "/usr/local/sbin/systemctl",
              "/usr/local/bin/reboot", "/usr/local/bin/systemctl")


def in_upper(upper: Path, node_path: str) -> Path:
    """Where node_path lands in the overlay upper dir.

    Symlinked parents are resolved against the host root (the overlay's lower
    layer): writing upper/lib/modules would shadow the lower /lib -> usr/lib
    symlink with a directory, so /lib/modules must become usr/lib/modules.
    """
    parent = os.path.realpath(os.path.dirname(node_path))
    return upper / parent.lstrip("/") / os.path.basename(node_path)


def write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    path.chmod(mode)


def install_script(source: Path, target: Path) -> None:
    """Copy a stand-in, pointing its shebang at this interpreter.

    The interpreter lives on the host root filesystem, so it is there on every
    node, and in containers through the emulator's base mounts. It runs with
    -S (no `site`): these stand-ins use only the standard library, and reading
    site-packages and its .pth files is most of an interpreter's start, paid
    on every one of the dozens of npu-smi/hccn_tool calls of each preflight.
    """
    text = source.read_text()
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        lines[0] = f"#!{os.path.realpath(sys.executable)} -S\n"
    write(target, "".join(lines), 0o755)


ASCEND_FRONT_SOURCE = STANDINS / "ascend_front.c"


def compile_standin(source_path: Path, out_dir: Path, name: str, flags: list[str], what: str) -> Path:
    """Compile a C stand-in once per source version: out_dir/`name` (`{digest}`
    in it stands for the source's) is built with gcc unless it is there; a
    half-built file never takes its name. `what` names it in the errors."""
    source = source_path.read_bytes()
    target_path = out_dir / name.format(digest=hashlib.sha256(source).hexdigest()[:12])
    if target_path.exists():
        return target_path
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ClusterError(f"gcc not found: the emulator builds {what} from "
                           f"emulator/standins/{source_path.name} at `up`. Install the Debian package gcc "
                           "(it is in emulator/apt-packages.txt)")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    partial = target_path.with_name(f"{target_path.name}.{os.getpid()}.tmp")
    got = subprocess.run([gcc, "-O2", *flags, "-o", str(partial), str(source_path)],
                         capture_output=True, text=True, timeout=120)
    if got.returncode != 0:
        raise ClusterError(f"building {what} failed: {got.stderr.strip()}")
    partial.rename(target_path)
    return target_path


def build_ascend_front(out_dir: Path) -> Path:
    """Compile standins/ascend_front.c once per source version into out_dir.

    The front answers a node's npu-smi/hccn_tool queries from the answer file
    ascend_tools.py keeps (about 1 ms of CPU a call instead of the ~25 ms of a
    Python start) and runs ascend_tools.py for everything else; the file's
    comment says how it stays exact."""
    return compile_standin(ASCEND_FRONT_SOURCE, out_dir, "ascend-front-{digest}",
                           ["-Wall", "-Wextra", "-Werror"], "the npu-smi/hccn_tool front")


def install_ascend_tools(upper: Path, run_dir: Path, *, layout: Layout, hw: Hardware, front: Path) -> None:
    """npu-smi (and hccn_tool on a fabric) on a node: the compiled front at the
    tools' paths, and ascend_tools.py, which it runs for what it cannot
    answer, as /run/ascemu/standins/{npu-smi,hccn_tool} (the node's run dir is
    mounted there on the node and in its containers). A new install starts
    without an answer file: the first call writes it."""
    binary = front.read_bytes()
    for path in layout.npu_smi:
        write(in_upper(upper, path), binary, 0o755)
    if hw.fabric:
        write(in_upper(upper, layout.hccn_tool), binary, 0o755)
        for link in layout.hccn_tool_links:
            target = in_upper(upper, link)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(layout.hccn_tool)
    standins = run_dir / "standins"
    standins.mkdir(parents=True, exist_ok=True)
    install_script(STANDINS / "ascend_tools.py", standins / "ascend_tools.py")
    for name in ("npu-smi", "hccn_tool"):
        (standins / name).unlink(missing_ok=True)
        (standins / name).symlink_to("ascend_tools.py")
    (run_dir / "answers").unlink(missing_ok=True)


def driver_version_info(version: str) -> str:
    # Format: docs/formats.md §1h (the driver sample that ends with a package_version line).
    return (f"Version={version}\nascendhal_version=7.35.23\naicpu_version=1.0\ntdt_version=1.0\n"
            "log_version=1.0\nprof_version=2.0\ndvppkernels_version=1.1\ntsfw_version=1.0\n"
            "Innerversion=V100R001C19SPC002B226\n"
            "compatible_version=[V100R001C13],[V100R001C15],[V100R001C17],[V100R001C18],[V100R001C19]\n"
            f"compatible_version_fw=[7.0.0,7.6.99]\npackage_version={version}\n")


def firmware_version_info(firmware: str, driver: str) -> str:
    # Format: docs/formats.md §1h (firmware version.info).
    return (f"Version={firmware}\nfirmware_version=1.0\npackage_version={driver}\n"
            f"compatible_version_drv=[{driver},{driver}.]\n")


def hccn_conf(device_ips: list[str], hw: Hardware, gateway: str) -> str:
    # Format: docs/formats.md §2e.
    lines = []
    for dev, ip in enumerate(device_ips):
        lines += [f"address_{dev}={ip}", f"netmask_{dev}={hw.netmask}", f"netdetect_{dev}={gateway}",
                  f"gateway_{dev}={gateway}", f"send_arp_status_{dev}=1"]
    return "\n".join(lines) + "\n"


# Not verified against a real host: typical content of these two files. Only
# their presence (they are bind-mounted into containers) matters to runbooks.
ASCEND_INSTALL_INFO = ("UserName=HwHiAiUser\nUserGroup=HwHiAiUser\nFirmware_Install_Type=full\n"
                       "Firmware_Install_Path_Param=/usr/local/Ascend\nDriver_Install_Type=full\n"
                       "Driver_Install_Path_Param=/usr/local/Ascend\nDriver_Install_For_All=no\n"
                       "Driver_Install_Mode=normal\nDriver_Install_Status=complete\n")
VNPU_CFG = "vnpu_config_recover:enable\n[vnpu-config start]\n[vnpu-config end]\n"


# The manifest a model.source download leaves beside the weights
# (ascend_inference/render.py MANIFEST_NAME; format in weights_hub.py).
MODEL_MANIFEST = ".ascend-inference-manifest"
# What `git clone` without git-lfs leaves in place of a file (git-lfs spec v1).
LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:{sha256}\nsize {size}\n")


def weights_manifest(files: dict[str, bytes]) -> bytes:
    lines = ["# ascend-inference weights manifest: size sha256 path; source emulator fixture"]
    lines += [f"{len(data)} {hashlib.sha256(data).hexdigest()} {name}" for name, data in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def model_fixture(differs: bool = False, lfs_pointer: bool = False, truncated: bool = False) -> dict[str, bytes]:
    """A tiny stand-in for a DeepSeek-R1 checkpoint directory, identical on every node.

    The config carries DeepSeek-R1's real shape numbers (61 layers, 256
    experts...) so layer splits and memory estimates read sensible values;
    the weight shards are valid but empty safetensors files (8-byte header
    length + "{}"). `differs` changes one shard, as a half-copied node would.
    `lfs_pointer` leaves a git-lfs pointer file in place of the first shard
    (a clone without git-lfs), `truncated` cuts the second one short (an
    interrupted copy); the manifest keeps the full files' sizes.
    """
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
        "first_k_dense_replace": 3, "kv_lora_rank": 512, "q_lora_rank": 1536,
        "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "vocab_size": 129280, "max_position_embeddings": 163840, "torch_dtype": "bfloat16",
        "bos_token_id": 0, "eos_token_id": 1,
    }
    empty_shard = (2).to_bytes(8, "little") + b"{}"
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files = {
        "config.json": json.dumps(config, indent=2).encode() + b"\n",
        "generation_config.json":
            b'{"bos_token_id": 0, "eos_token_id": 1, "do_sample": true, "temperature": 0.6, "top_p": 0.95}\n',
        "tokenizer_config.json": b'{"tokenizer_class": "LlamaTokenizerFast", "model_max_length": 16384}\n',
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}\n',
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": 0},
             "weight_map": {"lm_head.weight": shards[1], "model.embed_tokens.weight": shards[0]}},
            indent=2).encode() + b"\n",
        shards[0]: empty_shard,
        shards[1]: empty_shard,
        "README.md":
            b"Emulator fixture standing in for DeepSeek-R1 weights. No real weights: inference is not exercised.\n",
    }
    if differs:
        files[shards[1]] = (2).to_bytes(8, "little") + b"{} differs on this node\n"
    # As a hub download leaves them: the manifest lists every file's size and
    # sha256 (a node whose shard differs has its own, consistent manifest).
    files[MODEL_MANIFEST] = weights_manifest(files)
    if lfs_pointer:
        shard = files[shards[0]]
        files[shards[0]] = LFS_POINTER.format(sha256=hashlib.sha256(shard).hexdigest(), size=len(shard)).encode()
    if truncated:
        files[shards[1]] = files[shards[1]][:4]
    return files


def fixture_digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()


def sshd_config(address: str, port: int) -> str:
    return f"""# sshd for one emulated node (written by the emulator)
ListenAddress {address}:{port}
HostKey /run/ascemu/ssh_host_ed25519_key
AuthorizedKeysFile /run/ascemu/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# PAM is not set up for namespaces here; key auth needs none.
UsePAM no
# The key files live in the state dir, which may sit under a world-writable /tmp.
StrictModes no
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
# A rollout opens many sessions at once (one per resource and node).
MaxStartups 200:30:400
MaxSessions 200
AcceptEnv LANG LC_*
PrintMotd no
"""


def populate_upper(upper: Path, *, layout: Layout, hw: Hardware, hostname: str, address: str,
                   all_hosts: list[tuple[str, str]], device_ips: list[str], gateway: str) -> None:
    """Write this node's Ascend host files, hostname files and model fixture
    (npu-smi and hccn_tool: install_ascend_tools)."""
    for path in HOST_TOOLS:
        install_script(STANDINS / "host_tools.py", in_upper(upper, path))
    write(in_upper(upper, f"{layout.driver_dir}/version.info"), driver_version_info(hw.driver_version))
    for lib in ("driver/libascend_hal.so", "common/libc_sec.so"):
        # Placeholders: the runbooks mount driver/lib64 into containers.
        write(in_upper(upper, f"{layout.driver_dir}/lib64/{lib}"), b"")
    write(in_upper(upper, f"{layout.firmware_dir}/version.info"),
          firmware_version_info(hw.firmware_version, hw.driver_version))
    write(in_upper(upper, f"{layout.dcmi_dir}/dcmi_interface_api.h"), "/* placeholder: emulator */\n")
    write(in_upper(upper, f"{layout.dcmi_dir}/libdcmi.so"), b"")
    if hw.fabric:
        write(in_upper(upper, layout.hccn_conf), hccn_conf(device_ips, hw, gateway))
    write(in_upper(upper, layout.ascend_install_info), ASCEND_INSTALL_INFO)
    write(in_upper(upper, layout.vnpu_cfg), VNPU_CFG)
    write(in_upper(upper, layout.slog_conf), "global_level=3\n")
    for d in (*layout.npu_log_dirs, *layout.extra_dirs):
        in_upper(upper, d + "/").mkdir(parents=True, exist_ok=True)
    in_upper(upper, f"/lib/modules/{os.uname().release}/").mkdir(parents=True, exist_ok=True)
    # A server's root, not this development machine's (whose dotfiles set up
    # pyenv and cost ~0.2 s on every ssh command).
    write(in_upper(upper, "/root/.bashrc"), "# emulated Ascend node (written by the emulator)\n")
    write(in_upper(upper, "/root/.profile"), '[ -n "$BASH" ] && [ -f ~/.bashrc ] && . ~/.bashrc\n')
    write(in_upper(upper, "/etc/hostname"), hostname + "\n")
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += [f"{addr}\t{name}" for name, addr in all_hosts]
    write(in_upper(upper, "/etc/hosts"), "\n".join(hosts) + "\n")
    for model_dir in layout.model_dirs:
        for name, data in model_fixture().items():
            write(in_upper(upper, f"{model_dir}/{name}"), data)


def device_specs(npu_count: int, missing: set[int]) -> list[dict]:
    devs = [{"name": f"davinci{i}", "major": NULL_MAJOR, "minor": NULL_MINOR}
            for i in range(npu_count) if i not in missing]
    devs += [{"name": n, "major": NULL_MAJOR, "minor": NULL_MINOR} for n in EXTRA_DEVICES]
    return devs


class NodeRoot:
    """Read and change a running node's files through /proc/<holder>/root."""

    def __init__(self, holder_pid: int):
        self.base = Path(f"/proc/{holder_pid}/root")

    def path(self, node_path: str) -> Path:
        return self.base / node_path.lstrip("/")

    def write_if_changed(self, node_path: str, data: bytes, mode: int = 0o644) -> bool:
        p = self.path(node_path)
        if p.is_file() and p.read_bytes() == data:
            return False
        write(p, data, mode)
        return True

    def remove(self, node_path: str) -> bool:
        p = self.path(node_path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            return True
        if p.exists() or p.is_symlink():
            p.unlink()
            return True
        return False

    def ensure_char_device(self, node_path: str, present: bool) -> bool:
        p = self.path(node_path)
        exists = p.exists()
        if present and not exists:
            os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(NULL_MAJOR, NULL_MINOR))
            os.chmod(p, 0o666)
            return True
        if not present and exists:
            p.unlink()
            return True
        return False
