"""LMDeploy PyTorchEngine over Ray with an HCCL rank table (runbook 004).

Env (incl. ASCEND_RANK_TABLE_FILE_PATH) is set before `ray start` on every
node; workers join with `--node-ip-address`; `lmdeploy serve api_server` runs
on the head with `--eager-mode` (multi-node supports eager mode only).
"""
from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from ascend_inference.container import ContainerSpec, Mount
from ascend_inference.engines.base import (
    ApiKeySettings,
    ClusterStyle,
    EnginePlugin,
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
from ascend_inference.model_base import invalid
from ascend_inference.ranktable import RankTableOptions
from ascend_inference.safe_values import owned_file

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan

# Runbook 004's `docker run -v` list, with one fix: the runbook mounts
# /usr/log/npu/conf/slog/slog.conf, a path no Ascend host has; the driver
# installs slog.conf under /var/log/npu/conf/slog/ and every public Ascend
# `docker run` (LMDeploy's own Ascend guide among them) mounts it from there.
STANDARD_MOUNTS = [
    "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
    "/usr/local/Ascend/add-ons/:/usr/local/Ascend/add-ons",
    "/usr/local/sbin/:/usr/local/sbin",
    "/usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi",
    "/var/log/npu/conf/slog/slog.conf:/var/log/npu/conf/slog/slog.conf",
    "/var/log/npu/slog/:/var/log/npu/slog/",
    "/var/log/npu/profiling/:/var/log/npu/profiling/",
    "/var/log/npu/dump/:/var/log/npu/dump/",
    "/var/log/npu/:/usr/slog",
    "/lib/modules:/lib/modules",
]


# Multi-node LMDeploy on Ascend reads the HCCL rank table this program writes
# (ASCEND_RANK_TABLE_FILE_PATH, `get_ascend_device_rank_mapping` in
# lmdeploy/pytorch/engine/executor/ray_executor.py, which asserts that the
# master is `server_list[0]`) from v0.8.0, the first release with multi-node
# Ascend support, to v0.14.x. v0.15.0 removed that reader (commit e1b73cd1,
# "Refine multi-node support on ascend-A3"): it places each Ray worker on the
# device of its index within its node and needs no rank table; the program
# does not render that path yet, so a 0.15+ image is refused with this fix.
RANK_TABLE_WINDOW = VersionWindow(
    "multi-node LMDeploy on Ascend over the HCCL rank table", (0, 8, 0), (0, 15, 0),
    "multi-node Ascend support first appears in 0.8.0; 0.15.0 removed the rank-table reader "
    "(InternLM/lmdeploy commit e1b73cd1) and forms the cluster from Ray alone, which this program does not render")
# A version in an image tag: `a2-v0.14.0`, `v0.14.0-ascend`, `0.14.0`.
TAG_VERSION = re.compile(r"(?:^|[-_])v?(\d+\.\d+\.\d+(?:\.post\d+)?)(?=$|[-_])")


# The container variable that holds the serving API key (ours: LMDeploy reads none).
API_KEY_ENV = "ASCEND_INFERENCE_API_KEY"


class LmdeploySettings(ApiKeySettings):
    kind: Literal["lmdeploy"]
    port: Port = 23333
    ray_port: Port = 6379
    backend: Literal["pytorch"] = "pytorch"
    device: Literal["ascend"] = "ascend"
    # Multi-node runs in eager mode only (runbook 004 §0 and §4).
    eager_mode: bool = True
    rank_table_path: str = "/data/hm/rank_table.json"
    # Written as root on every node.
    _check_table = field_validator("rank_table_path")(lambda v: owned_file(v, what="rank table"))
    # HCCL's port on each NPU's own network (rank table `device_port`), not a host port.
    device_port: str = "16667"
    # Share of free NPU memory LMDeploy gives the KV cache (its own default).
    # LMDeploy asserts `0 < cache_max_entry_count < 1`, "invalid
    # cache_max_entry_count" (PytorchEngineConfig.__post_init__,
    # lmdeploy/messages.py, v0.8.0 to v0.14.0).
    cache_max_entry_count: float = 0.8
    log_file: str = "lmdeploy.log"

    def host_ports(self) -> dict[str, int]:
        return {**super().host_ports(), "engine.ray_port": self.ray_port}

    @field_validator("cache_max_entry_count")
    @classmethod
    def _cache_share(cls, value: float) -> float:
        if not 0 < value < 1:
            raise invalid(f"{value}: LMDeploy refuses it at start (\"invalid cache_max_entry_count\": it must be "
                          "between 0 and 1, both excluded)", "use e.g. 0.8 (LMDeploy's default)")
        return value

    @field_validator("device_port")
    @classmethod
    def _device_port_in_range(cls, value: str) -> str:
        if not (value.isdigit() and 1 <= int(value) <= 65535):
            raise invalid(f"'{value}' is not a port", "use a port from 1 to 65535 (runbook 004 uses 16667)")
        return value


class Lmdeploy(EnginePlugin):
    kind = "lmdeploy"
    settings_model = LmdeploySettings
    cluster_style = ClusterStyle.RAY
    uses_rank_table = True
    # Ray (ray-start.sh.j2): runbook 004 §3's workers join with their own
    # address; its §2.2 head starts without one, which on a host with several
    # NICs lets Ray take another address than the rank table's server_id
    # (LMDeploy fails "master address does not match rank table"): every Ray
    # engine's head and workers get --node-ip-address.
    runbook = "004"
    image_package = EnginePackage("lmdeploy", dist="lmdeploy")

    def version_matters(self, spec: ClusterSpec) -> str:
        if len(spec.nodes) < 2:
            return ""
        return ("LMDeploy reads the rank table only from 0.8.0 up to 0.14.x (multi-node Ascend appears in 0.8.0, "
                "0.15.0 removed the reader)")

    def version_from_image(self, image: str) -> str | None:
        match = TAG_VERSION.search(image_tag(image))
        return match.group(1) if match else None

    def version_windows(self, spec: ClusterSpec) -> list[VersionWindow]:
        return [RANK_TABLE_WINDOW] if len(spec.nodes) > 1 else []

    def check(self, spec: ClusterSpec, plan: Plan | None, file: str) -> list[Problem]:
        if plan is not None:
            return []
        problems: list[Problem] = []
        if len(spec.nodes) > 1 and not settings_of(spec, LmdeploySettings).eager_mode:
            problems.append(Problem(file, "ascend-inference:engine.eager_mode",
                                    "multi-node LMDeploy on Ascend supports eager mode only (runbook 004)",
                                    "set eager_mode: true"))
        return problems

    def memory_fraction(self, spec: ClusterSpec) -> float:
        # Weights load first; the KV cache takes its share of what is left, so
        # weights may use nearly all of it. Keep 10% for activations.
        return 0.9

    def ray_port(self, spec: ClusterSpec) -> int:
        return settings_of(spec, LmdeploySettings).ray_port

    def rank_table_path(self, spec: ClusterSpec) -> str:
        return settings_of(spec, LmdeploySettings).rank_table_path

    def rank_table_options(self, spec: ClusterSpec) -> RankTableOptions:
        # LMDeploy 0.8-0.14 (lmdeploy/pytorch/engine/executor/ray_executor.py,
        # get_ascend_device_rank_mapping and _init_ascend_distributed_environment):
        # asserts that server_list[0] is Ray's head; gives rank k to the Ray
        # worker of the k-th device listed and opens NPU `index in its server's
        # device list` (not device_id); reads neither server_count nor container_ip.
        return RankTableOptions(engine=self.kind, device_port=settings_of(spec, LmdeploySettings).device_port,
                                first_server_is_master=True, ranks_follow_the_listing=True)

    def env(self, ctx: NodeContext) -> EnvFile:
        spec, s = ctx.spec, settings_of(ctx.spec, LmdeploySettings)
        ifname = spec.network.socket_ifname
        assert ctx.node.address is not None, "check_spec refuses a node without an address"
        variables = [
            ("GLOO_SOCKET_IFNAME", ifname),
            ("TP_SOCKET_IFNAME", ifname),
            # An IP, not an interface name (runbook 004 §2.1); per node.
            ("HCCL_IF_IP", ctx.node.address),
            ("RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES", "1"),
            # Set before `ray start` so every Ray worker process inherits it.
            ("ASCEND_RANK_TABLE_FILE_PATH", s.rank_table_path),
        ]
        return EnvFile((), tuple(apply_env_overrides(variables, s.env)))

    def container(self, ctx: NodeContext) -> ContainerSpec:
        table_dir = s_dir(settings_of(ctx.spec, LmdeploySettings).rank_table_path)
        key = self.api_key_secret(ctx.spec)
        return runbook_container(ctx, STANDARD_MOUNTS, [Mount(table_dir, table_dir)], entrypoint=("/bin/bash",),
                                 secret_env=[(API_KEY_ENV, key)] if key else [])

    def serve_argv(self, spec: ClusterSpec, plan: Plan) -> list[str]:
        s = settings_of(spec, LmdeploySettings)
        argv = ["lmdeploy", "serve", "api_server", spec.model.path,
                "--backend", s.backend, "--device", s.device]
        if s.eager_mode:
            argv.append("--eager-mode")
        argv += ["--tp", str(plan.tp)]
        if s.port != 23333:
            argv += ["--server-port", str(s.port)]
        if s.cache_max_entry_count != 0.8:
            argv += ["--cache-max-entry-count", str(s.cache_max_entry_count)]
        return argv

    def serve(self, spec: ClusterSpec, plan: Plan, stack: str) -> ServePlan:
        command = " ".join(shlex.quote(a) for a in self.serve_argv(spec, plan))
        if self.api_key_secret(spec):
            # LMDeploy takes its keys only as `--api-keys` (lmdeploy/cli/utils.py,
            # ArgumentHelper.api_keys: nargs='*', no env variable, no file), so
            # the key is in the serving process's argv on the master (`ps` there
            # shows it). The script holds only the variable's name; the
            # container's secret env holds the value. `=` joins key and flag: a key
            # that starts with "-" (1 in 64 of `token_urlsafe`'s) would otherwise be
            # read by argparse as an option, and LMDeploy would stop at once.
            command += f' --api-keys="${API_KEY_ENV}"'
        return ServePlan(command, where="head", log_file=settings_of(spec, LmdeploySettings).log_file)

    def endpoint(self, spec: ClusterSpec) -> str:
        return f"http://{spec.nodes[0].address}:{spec.engine.port}"

    def readiness(self, spec: ClusterSpec) -> HttpCheck:
        return HttpCheck("GET", f"{self.endpoint(spec)}/v1/models", None, (), spec.engine.ready_timeout_s,
                         expect='"data"', bearer=self.api_key_secret(spec) is not None, key_env=API_KEY_ENV)

    def smoke_request(self, spec: ClusterSpec) -> HttpCheck:
        body = json.dumps({"model": spec.model.path, "prompt": "Hakuna Matata", "max_tokens": 64, "temperature": 0})
        return HttpCheck("POST", f"{self.endpoint(spec)}/v1/completions", body, timeout_s=600, expect='"choices"',
                         bearer=self.api_key_secret(spec) is not None)


def s_dir(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


PLUGIN = Lmdeploy()
