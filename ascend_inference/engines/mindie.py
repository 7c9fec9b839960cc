"""MindIE service, multi-node over an HCCL rank table (runbook 001).

Each node runs `mindieservice_daemon` in its container with the same
config.json but for `ipAddress`, and the same env but for MIES_CONTAINER_IP.
The config edits the runbook makes with `sed` are made on the JSON itself,
in the image's own conf/config.json, at the key paths of MindIE's default
config.json (kept in data/mindie_config.default.json); every other key of the
image's file stays as it is, and a key the image's file lacks is an error
naming the key and the image, not a silent no-op.
"""
from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator

from ascend_inference.config_edit import apply_edits
from ascend_inference.container import ContainerSpec, Mount
from ascend_inference.engines.base import (
    ClusterStyle,
    ConfigEdit,
    Count,
    EnginePlugin,
    EngineSettingsBase,
    EnvFile,
    HttpCheck,
    NodeContext,
    Port,
    ServePlan,
    VersionWindow,
    apply_env_overrides,
    runbook_container,
    settings_of,
)
from ascend_inference.errors import Problem
from ascend_inference.images import EnginePackage, image_tag
from ascend_inference.model_base import StrictModel
from ascend_inference.ranktable import RankTableOptions
from ascend_inference.safe_values import node_path, owned_file

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan

# Runbook 001's `docker run -v` list (first form), plus the model path.
STANDARD_MOUNTS = [
    "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
    "/usr/local/Ascend/firmware:/usr/local/Ascend/firmware",
    "/usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi",
    "/usr/local/sbin:/usr/local/sbin",
    "/etc/hccn.conf:/etc/hccn.conf",
]

SET_ENV_SCRIPTS = (
    "/usr/local/Ascend/ascend-toolkit/set_env.sh",
    "/usr/local/Ascend/nnal/atb/set_env.sh",
    "/usr/local/Ascend/atb-models/set_env.sh",
    "/usr/local/Ascend/mindie/set_env.sh",
)


class MindieTls(StrictModel):
    """The TLS files of one node, at the same absolute paths on every node
    (each node's own certificate naming its address), prepared with MindIE's
    certificate tool (`scripts/config_mindie_server_tls_cert.py import_ca` /
    `import_cert`): the private key is encrypted, its password file is
    encrypted with the KMC keystore (`kmc_master`, `kmc_standby`) that tool
    writes. The program mounts each file read-only into the container at the
    place MindIE's default config.json names (HTTPS_FILES, INTER_COMM_FILES,
    INTER_NODE_FILES, KMC_FILES) and points the
    config.json keys there."""

    ca: str
    cert: str
    key: str
    # MindIE's tlsPkPwd: the key's password, encrypted with the KMC keystore.
    # Not named `..._password`: `pulumi config set --path` refuses a plaintext
    # value under a key named like a password (pulumi's looksLikeSecret).
    key_unlock_file: str
    kmc_master: str
    kmc_standby: str
    # MindIE's HTTPS is two-way ("HTTPS双向认证", its install guide): a server
    # that asks for a client certificate gets this one (on the master, key
    # unencrypted, 600) from readiness and smoke. Both or neither.
    client_cert: str | None = None
    client_key: str | None = None

    _check_paths = field_validator("ca", "cert", "key", "key_unlock_file", "kmc_master", "kmc_standby",
                                   "client_cert", "client_key")(
        lambda v: v if v is None else node_path(v, what="TLS file"))


# Where MindIE's default config.json (data/mindie_config.default.json, docs/formats.md
# §3a) names each TLS file, relative to the install path: (stack file, config keys
# naming it, path). ServerConfig's are HTTPS's (httpsEnabled); the gRPC files are
# shared by ServerConfig's interComm* (interCommTLSEnabled) and BackendConfig's
# interNode* (interNodeTLSEnabled); the KMC keystore decrypts every password file.
HTTPS_FILES = (
    ("ca", ("ServerConfig.tlsCaPath", "ServerConfig.tlsCaFile"), "security/ca/ca.pem"),
    ("cert", ("ServerConfig.tlsCert",), "security/certs/server.pem"),
    ("key", ("ServerConfig.tlsPk",), "security/keys/server.key.pem"),
    ("key_unlock_file", ("ServerConfig.tlsPkPwd",), "security/pass/key_pwd.txt"),
)
INTER_COMM_FILES = (
    ("ca", ("ServerConfig.interCommTlsCaPath", "ServerConfig.interCommTlsCaFiles"), "security/grpc/ca/ca.pem"),
    ("cert", ("ServerConfig.interCommTlsCert",), "security/grpc/certs/server.pem"),
    ("key", ("ServerConfig.interCommPk",), "security/grpc/keys/server.key.pem"),
    ("key_unlock_file", ("ServerConfig.interCommPkPwd",), "security/grpc/pass/key_pwd.txt"),
)
INTER_NODE_FILES = (
    ("ca", ("BackendConfig.interNodeTlsCaPath", "BackendConfig.interNodeTlsCaFiles"), "security/grpc/ca/ca.pem"),
    ("cert", ("BackendConfig.interNodeTlsCert",), "security/grpc/certs/server.pem"),
    ("key", ("BackendConfig.interNodeTlsPk",), "security/grpc/keys/server.key.pem"),
    ("key_unlock_file", ("BackendConfig.interNodeTlsPkPwd",), "security/grpc/pass/mindie_server_key_pwd.txt"),
)
KMC_FILES = (
    ("kmc_master", ("ServerConfig.kmcKsfMaster", "BackendConfig.interNodeKmcKsfMaster"), "tools/pmt/master/ksfa"),
    ("kmc_standby", ("ServerConfig.kmcKsfStandby", "BackendConfig.interNodeKmcKsfStandby"),
     "tools/pmt/standby/ksfb"),
)
# The three switches: stack key, config.json key, what plain text leaves open.
TLS_SWITCHES = (
    ("https_enabled", "ServerConfig.httpsEnabled",
     "MindIE's OpenAI API on the cluster network is plain HTTP: requests, replies and the model's output "
     "travel in clear, and with no client certificate to check (config.json has no API key setting) anyone who "
     "reaches the port can use the model"),
    ("inter_comm_tls_enabled", "ServerConfig.interCommTLSEnabled",
     "MindIE's inter-communication port (interCommPort) is plain gRPC"),
    ("inter_node_tls_enabled", "BackendConfig.interNodeTLSEnabled",
     "the nodes' multi-node inference traffic (multiNodesInferPort) is plain gRPC"),
)


class MindieSettings(EngineSettingsBase):
    kind: Literal["mindie"]
    port: Port = 1025
    install_path: str = "/usr/local/Ascend/mindie/latest/mindie-service"
    # MindIE ships all three on; runbook 001 turns them off. A stack says
    # which: true needs `tls`, false is named as a warning (docs/security.md).
    https_enabled: bool | None = None
    inter_comm_tls_enabled: bool | None = None
    inter_node_tls_enabled: bool | None = None
    tls: MindieTls | None = None
    max_seq_len: Count = 24576
    max_input_token_len: Count = 16384
    max_prefill_tokens: Count = 16384
    max_prefill_batch_size: Count = 10
    max_batch_size: Count = 200
    max_iter_times: Count = 8192
    npu_memory_fraction: float = 0.95
    # Default: /data/hm/hccl_<servers>s_<ranks>p.json, as runbook 001 names it.
    rank_table_path: str | None = None
    log_level: str = "ERROR"

    _check_paths = field_validator("install_path")(lambda v: node_path(v, what="install path"))
    # Written as root on every node.
    _check_table = field_validator("rank_table_path")(lambda v: v if v is None else owned_file(v, what="rank table"))

    def tls_on(self) -> bool:
        return bool(self.https_enabled or self.inter_comm_tls_enabled or self.inter_node_tls_enabled)

    def insecure_choices(self) -> list[tuple[str, str]]:
        return [*super().insecure_choices(),
                *((f"engine.{key}", f"is false: {what} (runbook 001's edit)")
                  for key, _, what in TLS_SWITCHES if getattr(self, key) is False)]

    def problems(self, file: str) -> list[Problem]:
        found = super().problems(file)
        for key, config_key, _ in TLS_SWITCHES:
            if getattr(self, key) is None:
                found.append(Problem(
                    file, f"ascend-inference:engine.{key}",
                    f"is not set: MindIE ships {config_key} on, runbook 001 turns it off",
                    f"set {key}: true with engine.tls (the node's TLS files, "
                    f"docs/security.md#mindie-https-and-tls-kept-on), or {key}: false to keep runbook 001's "
                    "plain text (named as a warning)"))
        if self.tls_on() and self.tls is None:
            on = ", ".join(key for key, _, _ in TLS_SWITCHES if getattr(self, key))
            found.append(Problem(
                file, "ascend-inference:engine.tls",
                f"is not set, but {on} is true: MindIE needs the CA, certificate, encrypted key, its password "
                "file and the KMC keystore", "add engine.tls with ca, cert, key, key_unlock_file, kmc_master and "
                "kmc_standby (absolute paths on every node, docs/security.md#mindie-https-and-tls-kept-on), or set "
                f"{on}: false"))
        if self.tls is not None and (self.tls.client_cert is None) != (self.tls.client_key is None):
            found.append(Problem(file, "ascend-inference:engine.tls",
                                 "has only one of client_cert and client_key",
                                 "name both (the client certificate and its key, on the master), or neither"))
        if self.tls is not None and not self.tls_on():
            found.append(Problem(file, "ascend-inference:engine.tls",
                                 "is set, but https_enabled, inter_comm_tls_enabled and inter_node_tls_enabled "
                                 "are all false, so no file of it is used",
                                 "set https_enabled (and the TLS switches you want) to true, or remove engine.tls"))
        return found

    def tls_files(self) -> list[tuple[str, str, tuple[str, ...], str]]:
        """(engine.tls field, host file, config.json keys, path under the
        install path) of every TLS file a switch that is on needs."""
        if self.tls is None:
            return []
        groups = [files for (key, _, _), files in zip(TLS_SWITCHES, (HTTPS_FILES, INTER_COMM_FILES, INTER_NODE_FILES),
                                                     strict=True) if getattr(self, key)]
        return [(field, getattr(self.tls, field), keys, where) for files in (*groups, KMC_FILES)
                for field, keys, where in files]

    def host_ports(self) -> dict[str, int]:
        # config.json keeps MindIE's other listening ports as the image has
        # them (config_edits changes only `port`); MindIE's defaults are what
        # can be known offline, so engine.port must avoid them.
        default = json.loads(resources.files("ascend_inference.engines")
                             .joinpath("data/mindie_config.default.json").read_text())
        server, backend = default["ServerConfig"], default["BackendConfig"]
        ports: dict[str, int] = {**super().host_ports(),
                **{f"config.json ServerConfig.{key}": server[key] for key in ("managementPort", "metricsPort",
                                                                              "interCommPort")},
                "config.json BackendConfig.multiNodesInferPort": backend["multiNodesInferPort"]}
        return ports


# The config.json edits are made at MindIE 2.x's key paths (docs/formats.md
# §3a); 1.0.RC3 and older have another layout (no ServerConfig.interCommTLSEnabled,
# which the edits set, §3b), where the config edit would stop the rollout.
CONFIG_LAYOUT_WINDOW = VersionWindow(
    "the config.json edits at MindIE 2.x's key paths", (2, 0), None,
    "MindIE 1.0.RC3 and older lack ServerConfig.interCommTLSEnabled and metricsPort, docs/formats.md §3b")
# MindIE's image tags start with the release: `2.0.T9.B020-800I-A2-...`, `2.1.RC1-800I-A3-...`.
TAG_VERSION = re.compile(r"^(\d+\.\d+\.(?:RC\d+|T\d+)(?:\.B\d+)?)(?=$|-)")

# MindIE's installation guide, "Multi-Node Inference", constraints (MindIE
# 1.0.0 and later): at most four Atlas 800I A2 servers, 32 NPUs.
MULTI_NODE_LIMIT = 4


class Mindie(EnginePlugin):
    kind = "mindie"
    settings_model = MindieSettings
    cluster_style = ClusterStyle.RANK_TABLE
    uses_rank_table = True
    # Runbook 001 §6.3: the weights directory 750.
    weights_mode = "750"
    runbook = "001"
    # MindIE is installed by its run package, not pip: version.info has
    # `mindie-service: 2.0.T3.B010` (MindIE's install guide).
    image_package = EnginePackage("MindIE", version_file="/usr/local/Ascend/mindie/latest/version.info",
                                  version_key="mindie-service")

    def version_matters(self, spec: ClusterSpec) -> str:
        return "the config.json key paths the program edits changed after MindIE 1.0 (docs/formats.md §3b)"

    def version_from_image(self, image: str) -> str | None:
        match = TAG_VERSION.match(image_tag(image))
        return match.group(1) if match else None

    def version_windows(self, spec: ClusterSpec) -> list[VersionWindow]:
        return [CONFIG_LAYOUT_WINDOW]

    def check(self, spec: ClusterSpec, plan: Plan | None, file: str) -> list[Problem]:
        s = settings_of(spec, MindieSettings)
        problems: list[Problem] = []
        if plan is not None:
            return problems
        if not spec.profile.mindie_multinode and len(spec.nodes) > 1:
            problems.append(Problem(
                file, "ascend-inference:hardware.profile",
                f"MindIE multi-node service does not run on {spec.hardware.profile} "
                "(runbook 001 needs Atlas 800I A2 servers)",
                "use engine kind vllm-mindspore for 300I Duo servers (runbook 003), or a single node"))
        if len(spec.nodes) > MULTI_NODE_LIMIT:
            problems.append(Problem(
                file, "ascend-inference:nodes",
                f"{len(spec.nodes)} nodes: MindIE multi-node inference supports at most {MULTI_NODE_LIMIT} servers "
                f"(32 NPUs)", f"use at most {MULTI_NODE_LIMIT} nodes, or engine kind vllm-mindspore or lmdeploy"))
        tp = spec.parallel.tp
        world = len(spec.nodes) * spec.profile.devices_per_node
        if tp != world:
            problems.append(Problem(
                file, "ascend-inference:parallel.tp",
                f"MindIE multi-node runs one TP group over all {world} NPUs (WORLD_SIZE={world}, worldSize "
                f"{spec.profile.devices_per_node} per node), but tp is {tp}",
                f"set tp: {world}"))
        if s.max_input_token_len > s.max_seq_len:
            problems.append(Problem(file, "ascend-inference:engine.max_input_token_len",
                                    f"{s.max_input_token_len} exceeds max_seq_len {s.max_seq_len}",
                                    "keep max_input_token_len <= max_seq_len"))
        if s.max_prefill_tokens < s.max_input_token_len:
            # MindIE-LLM refuses the config at start (ConfigManager::Impl::CheckAllParam,
            # src/config_manager/config_manager_impl.cpp; templateType "Mix" excepted,
            # which the program never sets).
            problems.append(Problem(
                file, "ascend-inference:engine.max_prefill_tokens",
                f"{s.max_prefill_tokens} is below max_input_token_len {s.max_input_token_len}: MindIE refuses it at "
                "start (\"The value of maxPrefillTokens should not be less than maxInputTokenLen.\")",
                f"set max_prefill_tokens to at least {s.max_input_token_len} (runbook 001 uses 16384 for both)"))
        if not 0 < s.npu_memory_fraction <= 1:
            problems.append(Problem(file, "ascend-inference:engine.npu_memory_fraction",
                                    f"{s.npu_memory_fraction} is not in (0, 1]", "use 0.95 (runbook 001)"))
        return problems

    def memory_fraction(self, spec: ClusterSpec) -> float:
        return settings_of(spec, MindieSettings).npu_memory_fraction

    def rank_table_path(self, spec: ClusterSpec) -> str:
        s = settings_of(spec, MindieSettings)
        if s.rank_table_path:
            return s.rank_table_path
        servers = len(spec.nodes)
        return f"/data/hm/hccl_{servers}s_{servers * spec.profile.devices_per_node}p.json"

    def rank_table_options(self, spec: ClusterSpec) -> RankTableOptions:
        # MindIE-LLM's rank table reader (Ascend/MindIE-LLM
        # src/config_manager/ranktable_config.cpp): ReadRanktableData reads
        # server_count as a string (a table without one is "invalid");
        # CheckParam takes 2 to 60 servers, each with as many NPUs (1 to 32) as
        # the first and a non-empty container_ip, device_ip one address
        # (CheckIp, 0.0.0.0 refused), rank_id 0..511; FillServerEle makes the
        # server whose rank_id is the text "0" the master; InitFromJson finds
        # the local server by container_ip == MIES_CONTAINER_IP (HOST_IP ==
        # server_id would also do, but the program sets no HOST_IP).
        return RankTableOptions(engine=self.kind, container_ip=True, server_count_range=(2, 60),
                                max_devices_per_server=32, server_count_required=True,
                                same_devices_per_server=True, single_device_ip=True, max_rank_id=511,
                                rank_zero_as_text=True, container_ip_finds_the_server=True)

    def env(self, ctx: NodeContext) -> EnvFile:
        spec, s = ctx.spec, settings_of(ctx.spec, MindieSettings)
        world = ctx.plan.world_size
        node_ip = ctx.node.container_ip or ctx.node.address
        assert node_ip is not None, "check_spec refuses a node without an address"
        variables = [
            ("ATB_LLM_HCCL_ENABLE", "1"),
            ("ATB_LLM_COMM_BACKEND", "hccl"),
            ("HCCL_CONNECT_TIMEOUT", "7200"),
            ("WORLD_SIZE", str(world)),
            ("HCCL_EXEC_TIMEOUT", "0"),
            # The one per-node variable (runbook 001 §6.1).
            ("MIES_CONTAINER_IP", node_ip),
            ("RANKTABLEFILE", self.rank_table_path(spec)),
            # Runbook 001's MindIE reads RANKTABLEFILE; current MindIE-LLM reads
            # RANK_TABLE_FILE (src/config_manager/ranktable_config.cpp). GPUStack
            # sets both for MindIE, and so does this program.
            ("RANK_TABLE_FILE", self.rank_table_path(spec)),
            ("HCCL_DETERMINISTIC", "true"),
            ("NPU_MEMORY_FRACTION", str(s.npu_memory_fraction)),
            ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True"),
            ("ASDOPS_LOG_LEVEL", s.log_level),
            ("ASDOPS_LOG_TO_STDOUT", "1"),
            ("MINDIE_LOG_LEVEL", s.log_level),
            ("MINDIE_LOG_TO_STDOUT", "1"),
            # Runbook 001 writes ATB__LOG_LEVEL, a typo: ATB reads
            # ATB_LOG_LEVEL (next to ATB_LOG_TO_STDOUT), so the typo sets nothing.
            ("ATB_LOG_LEVEL", s.log_level),
            ("ATB_LOG_TO_STDOUT", "1"),
        ]
        return EnvFile(SET_ENV_SCRIPTS, tuple(apply_env_overrides(variables, s.env)))

    def container(self, ctx: NodeContext) -> ContainerSpec:
        s = settings_of(ctx.spec, MindieSettings)
        table_dir = self.rank_table_path(ctx.spec).rsplit("/", 1)[0]
        # Each TLS file read-only where config.json names it (one mount per
        # target), and the CA also at its own path: readiness, in the
        # container, checks the server against it as the smoke request does
        # on the host.
        targets = dict.fromkeys((f"{s.install_path}/{where}", host) for _, host, _, where in s.tls_files())
        tls = [Mount(host, target, read_only=True) for target, host in targets]
        if s.tls is not None and s.https_enabled:
            tls += [Mount(path, path, read_only=True) for path in (s.tls.ca, s.tls.client_cert, s.tls.client_key)
                    if path is not None]
        return runbook_container(ctx, STANDARD_MOUNTS, [Mount(table_dir, table_dir), *tls], command=("bash",))

    def config_edits(self, ctx: NodeContext) -> list[tuple[str, Any, str]]:
        """Runbook 001 §6.2's 16 edits as (path, value, what sets it), at
        their real key paths (docs/formats.md §3a), per node (only ipAddress
        differs between nodes)."""
        spec, s = ctx.spec, settings_of(ctx.spec, MindieSettings)
        model = "BackendConfig.ModelDeployConfig.ModelConfig[0]"
        return [
            ("ServerConfig.ipAddress", ctx.node.container_ip or ctx.node.address, "nodes[].container_ip or ip"),
            ("ServerConfig.port", s.port, "engine.port"),
            ("ServerConfig.httpsEnabled", bool(s.https_enabled), "engine.https_enabled"),
            ("BackendConfig.multiNodesInferEnabled", len(spec.nodes) > 1, "more than one node"),
            ("ServerConfig.interCommTLSEnabled", bool(s.inter_comm_tls_enabled), "engine.inter_comm_tls_enabled"),
            ("BackendConfig.interNodeTLSEnabled", bool(s.inter_node_tls_enabled), "engine.inter_node_tls_enabled"),
            *self.tls_edits(s),
            ("BackendConfig.npuDeviceIds", [list(range(spec.profile.devices_per_node))], "hardware.profile"),
            (f"{model}.modelName", spec.model.name, "model.name"),
            (f"{model}.modelWeightPath", spec.model.path, "model.path"),
            (f"{model}.worldSize", spec.profile.devices_per_node, "hardware.profile"),
            ("BackendConfig.ScheduleConfig.maxPrefillBatchSize", s.max_prefill_batch_size,
             "engine.max_prefill_batch_size"),
            ("BackendConfig.ModelDeployConfig.maxSeqLen", s.max_seq_len, "engine.max_seq_len"),
            ("BackendConfig.ModelDeployConfig.maxInputTokenLen", s.max_input_token_len, "engine.max_input_token_len"),
            ("BackendConfig.ScheduleConfig.maxPrefillTokens", s.max_prefill_tokens, "engine.max_prefill_tokens"),
            ("BackendConfig.ScheduleConfig.maxBatchSize", s.max_batch_size, "engine.max_batch_size"),
            ("BackendConfig.ScheduleConfig.maxIterTimes", s.max_iter_times, "engine.max_iter_times"),
        ]

    @staticmethod
    def tls_edits(s: MindieSettings) -> list[tuple[str, Any, str]]:
        """The TLS file keys of the switches that are on, set to MindIE's own
        default places (where `container` mounts the stack's files), so an
        image whose config.json names other places still finds them."""
        edits: dict[str, tuple[Any, str]] = {}
        for field, _, keys, where in s.tls_files():
            directory, name = where.rsplit("/", 1)
            for key in keys:
                # A CA is named by a directory and a list of files in it.
                if key.endswith("CaPath"):
                    edits[key] = (directory + "/", "engine.tls.ca")
                elif key.endswith(("CaFile", "CaFiles")):
                    edits[key] = ([name], "engine.tls.ca")
                else:
                    edits[key] = (where, f"engine.tls.{field}")
        return [(key, value, by) for key, (value, by) in edits.items()]

    def config_edit(self, ctx: NodeContext) -> ConfigEdit:
        # The image's own conf/config.json is edited where runbook 001 edits
        # it; the edit list reaches the container as a file under the stack's
        # directory (mounted read-only), and `render` writes it too.
        s = settings_of(ctx.spec, MindieSettings)
        edits = self.config_edits(ctx)
        return ConfigEdit(label="MindIE config.json", target=f"{s.install_path}/conf/config.json",
                          edits_file=f"{ctx.remote_dir}/mindie/config-edits.json",
                          edits=tuple((path, value) for path, value, _ in edits),
                          set_by=tuple((path, key) for path, _, key in edits))

    def config_json(self, ctx: NodeContext) -> dict[str, Any]:
        """The config.json a node ends up with when its image holds MindIE's
        default file (data/mindie_config.default.json): what the offline
        tools can show. On a node the image's own file is edited instead."""
        default = resources.files("ascend_inference.engines").joinpath("data/mindie_config.default.json")
        config = json.loads(default.read_text())
        edited: dict[str, Any] = apply_edits(config, [[path, value] for path, value, _ in self.config_edits(ctx)])
        return edited

    def files(self, ctx: NodeContext) -> dict[str, str]:
        edit = self.config_edit(ctx)
        return {edit.edits_file: edit.edits_json()}

    def serve(self, spec: ClusterSpec, plan: Plan, stack: str) -> ServePlan:
        s = settings_of(spec, MindieSettings)
        return ServePlan(
            command="./bin/mindieservice_daemon", where="every-node",
            log_file="mindie.log", workdir=s.install_path)

    def endpoint(self, spec: ClusterSpec) -> str:
        master = spec.nodes[0]
        scheme = "https" if settings_of(spec, MindieSettings).https_enabled else "http"
        return f"{scheme}://{master.container_ip or master.address}:{spec.engine.port}"

    def https_client(self, spec: ClusterSpec, check: HttpCheck) -> HttpCheck:
        """`check` with the CA it checks the server's certificate against and
        the client certificate it presents (the same paths on the host and in
        the container); as it is for plain HTTP."""
        s = settings_of(spec, MindieSettings)
        if not s.https_enabled or s.tls is None:
            return check
        return dataclasses.replace(check, cacert=s.tls.ca, client_cert=s.tls.client_cert or "",
                                   client_key=s.tls.client_key or "")

    def readiness(self, spec: ClusterSpec) -> HttpCheck:
        return self.https_client(spec, HttpCheck("GET", f"{self.endpoint(spec)}/v1/models", None, (),
                                                 spec.engine.ready_timeout_s, expect=spec.model.name))

    def smoke_request(self, spec: ClusterSpec) -> HttpCheck:
        # Runbook 001 §6.4, the OpenAI form.
        body = json.dumps({"model": spec.model.name,
                           "messages": [{"role": "user", "content": "介绍下杭州西湖"}],
                           "max_tokens": 512, "stream": False}, ensure_ascii=False)
        return self.https_client(spec, HttpCheck(
            "POST", f"{self.endpoint(spec)}/v1/chat/completions", body,
            (("Accept", "application/json"), ("Content-Type", "application/json")), timeout_s=600, expect='"choices"'))


PLUGIN = Mindie()
