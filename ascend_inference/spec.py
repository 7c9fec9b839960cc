"""The stack spec: every key a stack file may hold, its type and its default.

A stack file is `stacks/Pulumi.<stack>.yaml`; its project config keys live in
the `ascend-inference:` namespace, one key per section below (`nodes`,
`hardware`, `network`, `model`, `container`, `engine`, `parallel`, `ssh`).
Defaults are the runbooks' values (docs/stack-file.md lists each with its source).

Pure: no Pulumi import. Cross-field rules that need several sections at once
(duplicates, layout, memory) live in `check_spec` here and in `topology`.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ascend_inference.engines import ENGINES
from ascend_inference.engines.base import EnginePlugin
from ascend_inference.engines.gpustack import GpustackSettings
from ascend_inference.engines.lmdeploy import LmdeploySettings
from ascend_inference.engines.mindie import MindieSettings
from ascend_inference.engines.vllm_ascend import VllmAscendSettings
from ascend_inference.engines.vllm_mindspore import VllmMindsporeSettings
from ascend_inference.errors import Problem
from ascend_inference.hardware import PROFILES, HardwareProfile
from ascend_inference.images import image_tag
from ascend_inference.model_base import StrictModel, invalid
from ascend_inference.safe_values import (
    cluster_ip,
    credential_kind,
    host_name,
    image_reference,
    login_name,
    masked,
    node_path,
    owned_file,
    owned_path,
    volume_or_path,
)

NAMESPACE = "ascend-inference"

# Node names become file names, Pulumi resource names and directory names.
NODE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
SIZE = r"^[0-9]+[bkmg]?$"
# A package version as pip and the Ascend version files write them (0.4.1, 8.0.RC3, 2.0.T3.B010).
VERSION = r"^[0-9][A-Za-z0-9.+_-]*$"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ip(value: str) -> str:
    if not is_ip(value):
        raise ValueError(f"'{value}' is not an IP address")
    return value


# `[user@]host[:port]`, as `ssh -J` takes it (components/common.py splits it the same way).
JUMP_HOST = re.compile(r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]{0,31})@)?"
                       r"(?P<host>[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
                       r"(?::(?P<port>\d{1,5}))?$")


def _login_name(value: str | None, *, fix: str) -> str | None:
    # ssh would fall back to the local user name, which is rarely the intent.
    if value is not None and not value.strip():
        raise invalid("the login name is empty", fix)
    return value if value is None else login_name(value)


class Node(StrictModel):
    """One Atlas server. The first node is the master: Ray head, rank-table
    server 0, GPUStack server, MindIE master."""

    name: Annotated[str, Field(pattern=NODE_NAME)]
    # Address the control host reaches over SSH (IP or DNS name).
    host: Annotated[str, Field(min_length=1, max_length=253)]
    # Address on the socket interface: rank-table server_id, Ray node IP,
    # MIES_CONTAINER_IP, HCCL_IF_IP. Defaults to `host` when that is an IP.
    ip: str | None = None
    user: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # The hostname the node must report; preflight compares it.
    hostname: Annotated[str, Field(pattern=HOSTNAME)] | None = None
    # NPU device IPs (hccn_tool -i N -ip -g), one per device in order. When
    # given, preflight refuses a node whose discovered IPs differ.
    device_ips: list[str] | None = None
    # MindIE rank table `container_ip`; defaults to the node ip.
    container_ip: str | None = None

    # The SSH public host key (`ssh-ed25519 AAAA...`, as `ssh-keyscan` or
    # /etc/ssh/ssh_host_*_key.pub prints it): every connection to the node
    # is refused unless the node proves it holds this key (docs/security.md).
    host_key: str | None = None

    _check_host = field_validator("host")(lambda v: host_name(v))
    _check_ip = field_validator("ip", "container_ip")(lambda v: v if v is None else cluster_ip(v))
    _check_host_key = field_validator("host_key")(lambda v: v if v is None else host_key_line(v))

    @model_validator(mode="after")
    def _cluster_address(self) -> Node:
        if self.ip is None and is_ip(self.host) and ipaddress.ip_address(self.host).version == 6:
            raise invalid(f"host '{self.host}' is IPv6 and no `ip:` is given; the rank tables, Ray and the "
                          "serving URLs are built for IPv4 cluster addresses",
                          "add `ip:` with the node's IPv4 address on the socket interface")
        return self
    _check_user = field_validator("user")(
        lambda v: _login_name(v, fix="write the login name, or leave `user` out to use ssh.user"))

    @field_validator("device_ips")
    @classmethod
    def _check_device_ips(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for ip in value:
                _ip(ip)
                if ipaddress.ip_address(ip).version == 6:
                    # Preflight reads `hccn_tool -i N -ip -g` (IPv4) and pings
                    # with `-ping -g address`; the `-inet6` variants are not
                    # read yet, so an IPv6 device address would only show up
                    # later as a mismatch. Refuse it here, plainly.
                    raise invalid(
                        f"'{ip}' is an IPv6 address; device IPs are read and pinged as IPv4 "
                        "(`hccn_tool -i N -ip -g`), IPv6 device networks are not supported yet",
                        "declare the devices' IPv4 addresses (`hccn_tool -i N -ip -g` on the node)")
        return value

    @property
    def address(self) -> str | None:
        """The node's IP on the cluster network, if known."""
        if self.ip:
            return self.ip
        return self.host if is_ip(self.host) else None


class SshSettings(StrictModel):
    user: str = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    # Name of the secret config key holding the private key (set it with
    # `pulumi config set --secret ascend-inference:<name> < key`).
    private_key_secret: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = "sshPrivateKey"
    # Optional jump host, `[user@]host[:port]`.
    jump_host: str | None = None
    # The jump host's SSH public host key (same form as nodes[].host_key).
    jump_host_key: str | None = None
    # Throwaway labs only: connect without checking host keys. `preview`
    # names it as a warning; docs/security.md says what it gives away.
    insecure_ignore_host_keys: bool = False

    _check_jump_host_key = field_validator("jump_host_key")(lambda v: v if v is None else host_key_line(v))

    _check_user = field_validator("user")(
        lambda v: _login_name(v, fix="write the login name (e.g. root), or leave `user` out for root"))

    @field_validator("jump_host")
    @classmethod
    def _check_jump_host(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = JUMP_HOST.match(value)
        if not match or (match["port"] and not 1 <= int(match["port"]) <= 65535) or value.startswith("-"):
            raise invalid(f"'{masked(value)[:80]}' is not [user@]host[:port]",
                          "write e.g. admin@bastion.example.com:2222, or leave jump_host out")
        return value


class Hardware(StrictModel):
    profile: Literal["atlas-800i-a2", "atlas-800t-a2", "atlas-300i-duo",
                     "atlas-800i-a3", "atlas-800t-a3", "atlas-900-a3-superpod"]


NetworkPolicy = Literal["require", "warn", "ignore"]


class Network(StrictModel):
    # GLOO_SOCKET_IFNAME / TP_SOCKET_IFNAME / HCCL_SOCKET_IFNAME (runbook 000).
    socket_ifname: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")] = "enp189s0f0"
    # What every NPU's `hccn_tool -tls -g` switch must read; runbook 001
    # recommends all 0 ("建议全0").
    hccl_tls: Literal["disabled", "enabled"] = "disabled"
    # Opt-in: run `hccn_tool -i N -tls -s enable 0` on every device (001).
    fix_tls: bool = False
    # Ping every peer's device IPs before anything is started (004 §5.1).
    ping_peers: bool = True
    # A rank table you bring (made by hand or by hccl_tools.py + merge_hccl.py),
    # on the control host; relative to the stack file. Checked like `validate
    # --rank-table`, then against the device IPs preflight finds, and
    # installed instead of the table the program would make.
    rank_table_file: Annotated[str, Field(min_length=1)] | None = None
    # How preflight judges `hccn_tool -lldp/-netdetect/-gateway -g` (runbook
    # 001 §3.1 loops over all three): require stops the rollout, warn logs and
    # goes on, ignore does not look. Only on profiles whose NPUs have a fabric.
    lldp: NetworkPolicy = "require"
    netdetect: NetworkPolicy = "require"
    gateway: NetworkPolicy = "require"


# A hub repository id, `owner/name` (huggingface_hub's own rule, simplified).
HUB_REPO = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"


class ModelSource(StrictModel):
    """Where the weights come from (runbooks 000, 001 §5.1, 002, 003 fetch
    them by hand; nothing downloads them today).

    `local`: already at `model.path` on every node (the default). `copy`:
    on the master; the other nodes pull them from it over the cluster
    network with rsync (resumable). `huggingface`: downloaded once on the
    master with huggingface_hub (resumable), checked against the hub's file
    list, then pulled by the others as with `copy`."""

    kind: Literal["local", "copy", "huggingface"] = "local"
    # huggingface: the repository and the revision (branch, tag or commit).
    repo: Annotated[str, Field(pattern=HUB_REPO)] | None = None
    revision: Annotated[str, Field(min_length=1)] = "main"
    # huggingface: the hub's URL (a mirror such as https://hf-mirror.com);
    # default https://huggingface.co. Passed as HF_ENDPOINT.
    endpoint: Annotated[str, Field(pattern=r"^https?://[^\s'\"$`\\]+$")] | None = None
    # huggingface: the config key of a Pulumi secret holding the hub token
    # (gated or private repositories); sent on stdin, never in a file.
    token_secret: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] | None = None
    # huggingface: the Python on the master that has huggingface_hub.
    python: Annotated[str, Field(min_length=1)] = "python3"

    @model_validator(mode="after")
    def _hub_keys(self) -> ModelSource:
        hub_only = [k for k in ("repo", "endpoint", "token_secret") if getattr(self, k) is not None]
        if self.kind == "huggingface" and self.repo is None:
            raise invalid("kind huggingface needs the repository", "add `repo: owner/name` (e.g. "
                          "deepseek-ai/DeepSeek-R1)")
        if self.kind != "huggingface" and hub_only:
            raise invalid(f"{', '.join(hub_only)}: only for kind huggingface (this source is {self.kind})",
                          f"remove {', '.join(hub_only)}, or set `kind: huggingface`")
        return self


class Model(StrictModel):
    name: Annotated[str, Field(min_length=1)] = "DeepSeek-R1"
    # Identical on every node, mounted at the same path in the container.
    path: str
    quantization: Literal["bf16", "w8a8", "a8w4"] = "w8a8"
    # Architecture facts the plan needs (DeepSeek-R1 671B by default).
    parameters_b: Annotated[float, Field(gt=0, le=1_000_000)] = 671.0
    # Routed-expert share of the parameters: 58 MoE layers x 256 experts x
    # 3 x 7168 x 2048 = ~654B. Experts shard over EP; the rest is replicated
    # per data-parallel group.
    expert_parameters_b: Annotated[float, Field(ge=0, le=1_000_000)] = 654.0
    # Bounded: the plan loops over layers and experts.
    layers: Annotated[int, Field(ge=1, le=4096)] = 61
    experts: Annotated[int, Field(ge=0, le=65536)] = 256
    # Measured size of the weights on disk (`du -s --block-size=1G`), when
    # known; otherwise estimated from parameters and quantization.
    weights_gb: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    # Share of usable NPU memory kept free for KV cache and activations.
    kv_headroom: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # Where the weights come from (ModelSource above).
    source: ModelSource = ModelSource()

    # MindIE's weights step runs `chmod -R 750` on it and copies fill it as root.
    _check_path = field_validator("path")(lambda v: owned_path(v, what="weights directory"))

    @model_validator(mode="after")
    def _experts_within_the_model(self) -> Model:
        # The experts are a share of the model: more is a typo (6540 for 654)
        # that would size the memory fit from a model that does not exist.
        if self.expert_parameters_b > self.parameters_b:
            raise invalid(f"expert_parameters_b {self.expert_parameters_b:g} is more than parameters_b "
                          f"{self.parameters_b:g}; the routed experts are a share of the model's parameters",
                          "set expert_parameters_b to the experts' share (654 of 671 for DeepSeek-R1), "
                          "or 0 for a dense model")
        return self


class Container(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    image: Annotated[str, Field(min_length=1)]
    # A tar to `docker load -i` on every node instead of pulling (runbook 001).
    image_tar: str | None = None
    shm_size: Annotated[str, Field(pattern=SIZE)] = "500g"
    privileged: bool = True
    ipc_host: bool = True
    # Mounts beyond the engine's standard Ascend ones, "host:container[:ro]".
    mounts: list[Annotated[str, Field(pattern=r"^[^:]+:/[^:]*(:ro|:rw)?$")]] = []

    _check_image = field_validator("image")(lambda v: image_reference(v))

    @field_validator("mounts")
    @classmethod
    def _check_mounts(cls, value: list[str]) -> list[str]:
        for mount in value:
            host, container = mount.split(":")[:2]
            volume_or_path(host)
            node_path(container, what="container path")
        return value
    restart: Literal["no", "unless-stopped", "always", "on-failure"] = "no"
    # The engine's version inside the image (pip's for vllm-mindspore,
    # lmdeploy and GPUStack, version.info's mindie-service for MindIE). The
    # image check refuses an image with another one; it also decides the env
    # the engine gets (vllm-mindspore 0.4.0 renamed its variables). None: the
    # runbooks' era, read and reported, refused only when it needs another env.
    engine_version: Annotated[str, Field(pattern=VERSION)] | None = None
    # CANN's version inside the image (ascend_toolkit_install.info); None: reported only.
    cann_version: Annotated[str, Field(pattern=VERSION)] | None = None
    # Ray's version inside the image (`ray --version`), for the engines that form
    # their cluster over Ray: from 2.52.0 Ray has token authentication, which the
    # program then turns on (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from the secret
    # `rayAuthToken`); None or older: Ray runs open, named as a warning.
    ray_version: Annotated[str, Field(pattern=VERSION)] | None = None
    # Where each node fetches `image_tar` from when it is not there (runbook
    # 001 §4.1 `wget`s the tar on the node): resumable, then checked against
    # `image_sha256` when given.
    image_url: Annotated[str, Field(pattern=r"^https?://[^\s'\"]+$")] | None = None
    # sha256 of the tar: checked before `docker load` (a partial or corrupt copy).
    image_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    # `import acl` (pyACL) must work in the started container, with the env
    # file sourced, before Ray or the engine starts; unset: when the engine
    # forms its cluster over Ray (runbook 000 installs pyACL for Ray).
    check_acl: bool | None = None
    # CANN's nnrt `.run` on every node (runbook 000: Ascend-cann-nnrt_8.0.RC1_linux-aarch64.run):
    # when `import acl` fails in the container, pyACL is installed from it there.
    nnrt_run: str | None = None

    # The tar is downloaded to and removed from this path as root.
    _check_tar = field_validator("image_tar")(lambda v: v if v is None else owned_file(v, what="image tar"))
    _check_nnrt = field_validator("nnrt_run")(lambda v: v if v is None else node_path(v, what="installer path"))



# Bounded so that nothing sized by them (loops, tables) can grow without end.
Degree = Annotated[int, Field(ge=1, le=65536)]


class Parallel(StrictModel):
    tp: Degree
    pp: Degree = 1
    dp: Degree = 1
    ep: Degree = 1
    # MoE tensor parallel (GPUStack/MindIE `--moe-tensor-parallel-size`).
    # Defaults to tp when ep is 1, else 1.
    moe_tp: Degree | None = None
    # Layers per pipeline stage (VLLM_PP_LAYER_PARTITION); computed if absent.
    pp_layer_split: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(max_length=65536)] | None = None


class Paths(StrictModel):
    # Where the program keeps env files, scripts, pid and log files per stack.
    remote_dir: str = "/etc/ascend-inference"

    # Files are written, chmodded and removed under it as root.
    _check = field_validator("remote_dir")(lambda v: owned_path(v, what="directory"))


# A version as the Ascend version files print it (`Version=24.1.rc3`,
# `Version=7.5.0.1.129`, `version=8.0.RC3`).
VERSION = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"


class HostPackages(StrictModel):
    """Vendor `.run` installers, as paths *on the node* (the runbooks `wget`
    them there; a driver package is hundreds of MB, too big to send through a
    command's script). Each one is opt-in and version-gated."""

    # Runbook 001 §2.1: `Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run --upgrade`.
    driver: str | None = None
    # Runbook 001 §2.1: `Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run --full`, after the driver.
    firmware: str | None = None
    # Runbook 001 §2.2: `Ascend-docker-runtime_6.0.0_linux-aarch64.run --install`, then a docker restart.
    docker_runtime: str | None = None

    _check = field_validator("driver", "firmware", "docker_runtime")(
        lambda v: v if v is None else node_path(v, what="installer path"))


class Host(StrictModel):
    """What the servers themselves must run (not the image): expected
    versions, checked by preflight on every node, and opt-in provisioning."""

    # Expected versions, as version.info / ascend_toolkit_install.info print
    # them; None = not checked against the stack (nodes must still agree).
    driver: Annotated[str, Field(pattern=VERSION)] | None = None
    firmware: Annotated[str, Field(pattern=VERSION)] | None = None
    cann: Annotated[str, Field(pattern=VERSION)] | None = None
    packages: HostPackages = HostPackages()
    # Runbook 001 §4.2: `chown root:root /usr/bin/runc` (docker refuses a runc
    # owned by another user: "owner not right /usr/bin/runc 1000").
    fix_runc_owner: bool = False
    # A driver or firmware upgrade is active only after a reboot. False: the
    # step stops the rollout saying so; true: the step reboots the node.
    allow_reboot: bool = False


# Every engine's settings model, in ENGINES' order, told apart by `kind`.
# Named one by one so that type checkers know each engine's fields;
# tests/test_engine_plugins.py checks that it lists exactly ENGINES' models.
EngineSettings = Annotated[
    VllmMindsporeSettings | MindieSettings | LmdeploySettings | GpustackSettings | VllmAscendSettings,
    Field(discriminator="kind"),
]


# The most nodes a stack may list: what the scaling benchmarks cover
# (1,000); beyond it `render` alone writes gigabytes.
MAX_NODES = 1000


class ClusterSpec(StrictModel):
    nodes: Annotated[list[Node], Field(min_length=1, max_length=MAX_NODES)]
    hardware: Hardware
    model: Model
    container: Container
    engine: EngineSettings
    parallel: Parallel
    network: Network = Network()
    ssh: SshSettings = SshSettings()
    paths: Paths = Paths()
    host: Host = Host()

    @property
    def profile(self) -> HardwareProfile:
        return PROFILES[self.hardware.profile]

    @property
    def engine_plugin(self) -> EnginePlugin:
        return ENGINES[self.engine.kind]

    def insecure_warnings(self) -> list[str]:
        """One line per insecure runbook default the stack keeps on purpose
        (`engine.insecure_no_api_key: true`, ...), for preview, validate and
        the program's warnings."""
        return [f"warning: {NAMESPACE}:{key}: {what} (see docs/security.md#endpoints)"
                for key, what in self.engine_plugin.insecure_choices(self)]

    def secret_keys(self) -> list[str]:
        """Config keys this stack reads as Pulumi secrets."""
        hub_token = [self.model.source.token_secret] if self.model.source.token_secret else []
        return list(dict.fromkeys([self.ssh.private_key_secret, *self.engine_plugin.secret_keys(self),
                                   *sorted(set(self.engine.secret_env.values())), *hub_token]))


SECTION_KEYS = tuple(ClusterSpec.model_fields)


def check_spec(spec: ClusterSpec, file: str) -> list[Problem]:
    """Rules across several nodes or sections that pydantic cannot see alone."""
    problems: list[Problem] = []
    key = f"{NAMESPACE}:nodes"

    def seen_twice(values: list[tuple[int, str | None]], what: str, fix: str) -> None:
        first: dict[str, int] = {}
        for index, value in values:
            if value is None:
                continue
            if value in first:
                problems.append(Problem(
                    file, f"{key}[{index}].{what}",
                    f"'{value}' is also used by {key}[{first[value]}]", fix))
            else:
                first[value] = index

    problems += spec.engine.problems(file)
    problems += _secret_env_problems(spec, file)
    problems += _hub_token_problems(spec, file)
    api_key = spec.engine_plugin.api_key_secret(spec)
    if api_key is not None and api_key == spec.ssh.private_key_secret:
        problems.append(Problem(file, f"{NAMESPACE}:engine.api_key_secret",
                                f"names the SSH private key's secret ({api_key}), which would become the API key",
                                "use a config key of its own, e.g. servingApiKey"))
    if spec.container.nnrt_run and spec.container.check_acl is False:
        problems.append(Problem(file, f"{NAMESPACE}:container.check_acl",
                                "is false, but container.nnrt_run installs pyACL for `import acl` to work",
                                "remove check_acl (nnrt_run turns the check on), or remove nnrt_run"))
    problems += _port_collisions(spec, file)
    problems += _image_tar_problems(spec.container, file)
    problems += _engine_version_problems(spec, file)
    problems += _network_for_profile(spec, file)
    if spec.network.fix_tls and spec.network.hccl_tls == "enabled" and spec.profile.network.tls:
        # fix-tls runs `hccn_tool -i N -tls -s enable 0` before preflight, which then wants 1: every rollout
        # would stop at preflight with a fix that names fix_tls itself.
        problems.append(Problem(file, f"{NAMESPACE}:network.fix_tls",
                                "sets every NPU's HCCL TLS switch to 0 (runbook 001), but network.hccl_tls: "
                                "enabled requires 1, so preflight would refuse every node after it",
                                "set network.hccl_tls: disabled (runbook 001 recommends all 0), or remove fix_tls"))
    problems += _host_package_versions(spec, file)
    nodes = list(enumerate(spec.nodes))
    seen_twice([(i, n.name) for i, n in nodes], "name", "give every node its own name")
    seen_twice([(i, n.host) for i, n in nodes], "host", "each node is one server: list it once")
    seen_twice([(i, n.address) for i, n in nodes if n.ip], "ip", "each node needs its own IP")
    seen_twice([(i, n.hostname) for i, n in nodes], "hostname",
               "Ray needs distinct hostnames: run `hostname <new-name>` on one node (runbook 000) and update the stack")
    # MindIE's rank table and MIES_CONTAINER_IP: each node's container IP
    # (`container_ip`, else its `ip`) must be its own. Reported on a given
    # `container_ip` (equal plain ips are the `ip` rule's), once per pair:
    # on the later node when both are given.
    container_ip = [n.container_ip or n.address for n in spec.nodes]
    for i, node in nodes:
        if node.container_ip is None:
            continue
        clashes = [j for j in range(len(spec.nodes)) if j != i and container_ip[j] == node.container_ip
                   and (j < i or spec.nodes[j].container_ip is None)]
        if clashes:
            problems.append(Problem(
                file, f"{key}[{i}].container_ip",
                f"'{node.container_ip}' is also the container IP of {key}[{clashes[0]}]",
                "each node's container needs its own IP (MIES_CONTAINER_IP, rank table container_ip)"))
    device_owner: dict[str, str] = {}
    per_node = spec.profile.devices_per_node
    for i, node in nodes:
        if node.address is None:
            problems.append(Problem(
                file, f"{key}[{i}].ip",
                f"host '{node.host}' is not an IP address, so the node's cluster IP is unknown",
                "add `ip:` with the address on the socket interface"))
        if node.device_ips is None:
            continue
        if len(node.device_ips) != per_node:
            problems.append(Problem(
                file, f"{key}[{i}].device_ips",
                f"lists {len(node.device_ips)} device IPs but {spec.hardware.profile} has {per_node} NPUs per node",
                "list one IP per device, in device order "
                f"(`for i in {{0..{per_node - 1}}}; do hccn_tool -i $i -ip -g; done`)"))
        for d, ip in enumerate(node.device_ips):
            where = f"{node.name} device {d}"
            if ip in device_owner:
                problems.append(Problem(
                    file, f"{key}[{i}].device_ips[{d}]",
                    f"device IP {ip} of {where} is also {device_owner[ip]}",
                    "every NPU needs its own IP; check `hccn_tool -i N -ip -g` on both nodes"))
            else:
                device_owner[ip] = where
    return problems


def _secret_env_problems(spec: ClusterSpec, file: str) -> list[Problem]:
    """The SSH key opens every node as root: it never goes into a container."""
    return [Problem(file, f"{NAMESPACE}:engine.secret_env.{name}",
                    f"names {key}, the stack's SSH private key (ssh.private_key_secret); it would be in the "
                    "container's environment", "make a secret of its own for the container "
                    f"(`pulumi config set --secret {NAMESPACE}:<name>`) and name that one")
            for name, key in spec.engine.secret_env.items() if key == spec.ssh.private_key_secret]


def _image_tar_problems(container: Container, file: str) -> list[Problem]:
    """`image_url` and `image_sha256` are about the tar: they need its path."""
    problems = [Problem(file, f"{NAMESPACE}:container.{key}", "needs container.image_tar, the path of the tar on "
                        "each node", "add image_tar (e.g. /data/images/<name>.tar)")
                for key in ("image_url", "image_sha256")
                if getattr(container, key) is not None and container.image_tar is None]
    # The image runs privileged on the host network: fetched over plain
    # http, only its sha256 says it is the one meant.
    if container.image_url and container.image_url.startswith("http://") and container.image_sha256 is None:
        problems.append(Problem(file, f"{NAMESPACE}:container.image_url",
                                f"'{container.image_url[:80]}' is plain http and no container.image_sha256 checks "
                                "what arrives", "use an https:// URL, or add image_sha256 (`sha256sum` of the tar); "
                                "both is best"))
    return problems


def _on_loopback(url: str) -> bool:
    """A URL whose host is the node's own loopback (a mirror on the node itself):
    a token sent there over http crosses no network."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hub_token_problems(spec: ClusterSpec, file: str) -> list[Problem]:
    source = spec.model.source
    if source.token_secret and source.endpoint and not source.endpoint.startswith("https://") \
            and not _on_loopback(source.endpoint):
        return [Problem(file, f"{NAMESPACE}:model.source.endpoint",
                        f"'{source.endpoint[:80]}' is plain http, and the hub token would cross the network in clear",
                        "use the mirror's https:// URL (or drop token_secret for a public repository)")]
    return []


def _engine_version_problems(spec: ClusterSpec, file: str) -> list[Problem]:
    """The engine version the stack is rendered for (docs/engine-versions.md):
    known where the engine's behaviour changes across releases, the same as
    the one the image tag names, and inside the windows the stack's features
    need."""
    plugin, container = spec.engine_plugin, spec.container
    label = plugin.image_package.label
    key = f"{NAMESPACE}:container.engine_version"
    from_tag = plugin.version_from_image(container.image)
    declared = container.engine_version
    if declared is not None and from_tag is not None and version_key(declared) != version_key(from_tag):
        return [Problem(file, key, f"{declared}, but the image tag {_shown_tag(container.image)}names {label} "
                        f"{from_tag}",
                        f"set engine_version to {from_tag}, or use the image of {label} {declared}")]
    version = declared or from_tag
    if version is None:
        why = plugin.version_matters(spec)
        if not why:
            return []
        return [Problem(file, key, f"is not set and the image tag {_shown_tag(container.image)}names no {label} "
                        "version; "
                        f"{why}",
                        f"set container.engine_version to the {label} version in the image (docs/engine-versions.md "
                        "lists the releases each feature needs), and pin the image by a tag or digest")]
    refused = plugin.version_refusal(spec, version)
    if refused is None:
        return []
    what, fix = refused
    return [Problem(file, key if declared else f"{NAMESPACE}:container.image", what, fix)]


# Docker's tag grammar: what may be quoted back from container.image (a value
# pasted there by mistake, a private key say, is never repeated).
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _shown_tag(image: str) -> str:
    """`'a2-latest' ` for a well-formed tag, "" otherwise (no tag, or not a tag)."""
    tag = image_tag(image)
    return f"'{tag}' " if _TAG.match(tag) else ("" if tag or "\n" in image else "(none) ")


def version_key(version: str) -> str:
    """A version as pip normalises the parts that matter here: `v0.14.0` and `0.14.0` are one."""
    return version.lower().removeprefix("v")


def _network_for_profile(spec: ClusterSpec, file: str) -> list[Problem]:
    """Network keys that ask for a check the hardware profile does not have
    (the 300I Duo has no RoCE fabric: runbook 003 has no hccn step). Refused
    rather than ignored: a key that is set and silently does nothing would
    let a reader believe the check ran."""
    problems: list[Problem] = []
    checks, profile = spec.profile.network, spec.hardware.profile
    why = f"hardware.profile {profile} has no RoCE fabric (runbook 003 runs no hccn_tool step)"
    if not checks.device_ips:
        for i, node in enumerate(spec.nodes):
            if node.device_ips is not None:
                problems.append(Problem(file, f"{NAMESPACE}:nodes[{i}].device_ips",
                                        f"{why}, so its NPUs have no device IPs",
                                        f"remove nodes[{i}].device_ips"))
    network = spec.network
    given = network.model_fields_set
    asked = [("ping_peers", checks.peer_ping, network.ping_peers is True, "there are no device IPs to ping"),
             ("fix_tls", checks.tls, network.fix_tls is True, "there is no HCCL TLS switch to set"),
             ("hccl_tls", checks.tls, network.hccl_tls == "enabled", "there is no HCCL TLS switch to read"),
             ("lldp", checks.lldp, network.lldp != "ignore", "there is no switch port to find"),
             ("netdetect", checks.netdetect, network.netdetect != "ignore", "there is no netdetect address"),
             ("gateway", checks.gateway, network.gateway != "ignore", "there is no device gateway")]
    for key, applies, wanted, reason in asked:
        if key in given and wanted and not applies:
            problems.append(Problem(file, f"{NAMESPACE}:network.{key}", f"{why}: {reason}",
                                    f"remove network.{key}"))
    return problems


def _port_collisions(spec: ClusterSpec, file: str) -> list[Problem]:
    """Two processes of one stack cannot listen on one port of one node: the
    engine's ports (the same on every node) and each node's SSH port."""
    problems: list[Problem] = []
    owner: dict[int, str] = {}
    for where, port in spec.engine.host_ports().items():
        if port in owner:
            # Report on a key the user can change (engine ports before config.json defaults).
            editable, other = (where, owner[port]) if where.startswith("engine.") else (owner[port], where)
            problems.append(Problem(file, f"{NAMESPACE}:{editable}", f"port {port} is also {other} on every node",
                                    "give each port of the stack its own number"))
        else:
            owner[port] = where
    ssh_port_reported = False
    for i, node in enumerate(spec.nodes):
        port = node.port or spec.ssh.port
        if port not in owner:
            continue
        if node.port is not None:
            problems.append(Problem(file, f"{NAMESPACE}:nodes[{i}].port",
                                    f"SSH port {port} of {node.name} is also {owner[port]}",
                                    f"move {owner[port]} or sshd to another port"))
        elif not ssh_port_reported:
            ssh_port_reported = True
            problems.append(Problem(file, f"{NAMESPACE}:ssh.port", f"SSH port {port} is also {owner[port]}",
                                    f"move {owner[port]} to another port (sshd already listens on {port})"))
    return problems


def _host_package_versions(spec: ClusterSpec, file: str) -> list[Problem]:
    """A driver or firmware package needs the version it installs: the step
    compares it with the node's version.info to do nothing when it is there,
    and to tell a finished install from one that did not take."""
    problems: list[Problem] = []
    for part, example in (("driver", "24.1.rc3 for Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run"),
                          ("firmware", "7.5.0.1.129 for Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run")):
        if getattr(spec.host.packages, part) and not getattr(spec.host, part):
            problems.append(Problem(
                file, f"{NAMESPACE}:host.packages.{part}",
                f"a {part} package is given but not the {part} version it installs",
                f"set host.{part} to the package's version (e.g. {example})"))
    return problems


def suggest(word: str, choices: Iterable[str]) -> str:
    """`did you mean 'x'?` for a misspelling of a known name, "" otherwise.

    Only a near spelling is offered (a letter or two added, dropped, changed or
    swapped, case aside): a name that merely looks alike is another setting
    (MindIE's `max_seq_len` is not vLLM's `max_num_seqs`), and offering it
    would send the reader to change the wrong thing."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    limit = 1 if len(word) <= 5 else 2
    for candidate in close:
        if _spelling_distance(word.lower(), candidate.lower()) <= limit:
            return f"did you mean '{candidate}'?"
    return ""


def _spelling_distance(a: str, b: str) -> int:
    """Edits from `a` to `b`: insertions, deletions, substitutions and swaps
    of two neighbouring letters (optimal string alignment distance)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[i - 2][j - 2] + 1)
        rows.append(row)
    return rows[len(a)][len(b)]


def looks_like_credential(text: str) -> str | None:
    """What kind of credential a clear stack value holds, or None."""
    return credential_kind(text)


# --- SSH host keys ------------------------------------------------------------

# The key types OpenSSH writes into ssh_host_*_key.pub and ssh-keyscan prints.
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def host_key_line(value: str) -> str:
    """`type base64` (a trailing comment is dropped by the caller's tools
    too): the key type, and a blob that starts with that same type."""
    import base64
    import struct

    parts = value.split()
    fix = ("paste the node's public host key as `ssh-keyscan` prints it (without the host name), or run "
           "`python3 -m ascendctl hostkeys --stack NAME --write`")
    if len(parts) not in (2, 3) or parts[0] not in HOST_KEY_TYPES:
        raise invalid(f"'{masked(value)[:40]}' is not an SSH public host key (`type base64`, type one of "
                      f"{', '.join(HOST_KEY_TYPES)})", fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + length].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        raise invalid(f"the key of type {parts[0]} is not valid base64 of an SSH key", fix) from None
    if inner != parts[0]:
        raise invalid(f"the key says {parts[0]} but its data is a {inner[:30]} key", fix)
    return f"{parts[0]} {parts[1]}"


def host_key_fingerprint(line: str) -> str:
    """`SHA256:...` as `ssh-keygen -lf` prints it."""
    import base64
    import hashlib

    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
