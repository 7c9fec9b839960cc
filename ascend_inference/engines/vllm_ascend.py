"""vllm-ascend (vLLM's own Ascend plugin): multi-node data parallel with
expert parallel, or tensor/pipeline parallel across nodes over Ray.

Not from a field runbook: from vllm-ascend 0.23.0.post1's own tutorial
(docs/source/tutorials/models/DeepSeek-R1.md §5.2 "Multi-Node Data Parallel
Deployment", DeepSeek-R1-W8A8 on 2 x Atlas 800 A2). Every node runs
`vllm serve` in its container with the same env but for HCCL_IF_IP; the
master serves the API and hosts the DP coordinator at
`--data-parallel-address:--data-parallel-rpc-port`; the other nodes run
`--headless` with `--data-parallel-start-rank`. No Ray and no rank table:
nothing in vllm_ascend/ reads one (its HCCL groups come from torch.distributed
over the host network that HCCL_IF_IP and HCCL_SOCKET_IFNAME name). The
multi-node checks vllm-ascend asks for (docs/source/installation.md "Verify
Multi-Node Communication": per node hccn_tool link, net_health, netdetect,
gateway, /etc/hccn.conf; across nodes hccn_tool pings between device IPs) are
what preflight and the peer-ping step already do.

Every flag, `VLLM_*` env name and additional_config key a stack can give is
checked at validate against data/vllm_ascend_names.json, extracted from the
real vLLM 0.23.0 wheel and vllm-ascend 0.23.0.post1 sdist by
emulator/tools/extract_vllm_ascend_names.py.

The Ray form, for a TP x PP group wider than one node's NPUs (vllm-ascend
0.23.0.post1 docs/source/tutorials/features/ray.md "Ray Distributed"): the
tutorial's env on every node before Ray starts (HCCL_IF_IP, GLOO_ and
TP_SOCKET_IFNAME, RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1,
ASCEND_RT_VISIBLE_DEVICES), `ray start --head` on node 0 and `ray start
--address=<head>:6379 --node-ip-address=<node>` on the others, then one
`vllm serve ... --distributed-executor-backend ray --tensor-parallel-size
<tp> [--pipeline-parallel-size <pp>]` on the head only ("You only need to run
the vllm command on one node"). Which form a stack gets follows from its
layout alone (`cluster_style_for`); there is no setting to choose it.
"""
from __future__ import annotations

import json
import shlex
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ascend_inference.container import ContainerSpec
from ascend_inference.engines.base import (
    ApiKeySettings,
    ClusterStyle,
    Count,
    EnginePlugin,
    EnvFile,
    HttpCheck,
    NodeContext,
    Port,
    ServePlan,
    apply_env_overrides,
    runbook_container,
    settings_of,
)
from ascend_inference.errors import Problem
from ascend_inference.images import EnginePackage

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan

# The tutorial's `docker run -v` list (A2 series tab), less `/root/.cache`
# (a download cache; the weights are at model.path, mounted as they are).
STANDARD_MOUNTS = [
    "/usr/local/dcmi:/usr/local/dcmi",
    "/usr/local/Ascend/driver/tools/hccn_tool:/usr/local/Ascend/driver/tools/hccn_tool",
    "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver/lib64/:/usr/local/Ascend/driver/lib64/",
    "/usr/local/Ascend/driver/version.info:/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info:/etc/ascend_install.info",
]

# The image's Dockerfile sources these when it builds vllm-ascend; a
# non-login shell in the container does not, so the env file does.
SET_ENV_SCRIPTS = ("/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh")

# The serving API key, as for vLLM-MindSpore: vLLM takes `--api-key` or, without
# it, this variable (vllm/entrypoints/openai/api_server.py, build_app: `if token
# := args.api_key or envs.VLLM_API_KEY`), so the key is on no command line.
API_KEY_ENV = "VLLM_API_KEY"


@cache
def release_names() -> dict[str, Any]:
    """data/vllm_ascend_names.json: the serve options, env names and
    additional_config keys of the pinned release pair."""
    text = resources.files("ascend_inference.engines").joinpath("data/vllm_ascend_names.json").read_text()
    names: dict[str, Any] = json.loads(text)
    return names


def pinned_release() -> str:
    return str(release_names()["vllm_ascend"])


def serve_option_names() -> frozenset[str]:
    """Every option string `vllm serve` accepts at the pinned vLLM, with
    `--no-X` for its boolean options (BooleanOptionalAction)."""
    options: dict[str, str] = release_names()["serve_options"]
    names = set(options)
    names |= {"--no-" + name[2:] for name, kind in options.items() if kind == "bool"}
    return frozenset(names)


def known_env_names() -> frozenset[str]:
    data = release_names()
    return frozenset(data["vllm_env"]) | frozenset(data["vllm_ascend_env"])


def flag_name(arg: str) -> str:
    """`--max_model_len=8` -> `--max-model-len`: vLLM's FlexibleArgumentParser
    takes underscores for dashes (vllm/utils/argparse_utils.py)."""
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


JsonObject = dict[str, Any]


class VllmAscendSettings(ApiKeySettings):
    kind: Literal["vllm-ascend"]
    port: Port = 8000
    # The DP coordinator's port on the master (tutorial: 13389), same on every node.
    data_parallel_rpc_port: Port = 13389
    # Ray's GCS port on the head, in the Ray form only (ray.md: `ray start --head`,
    # Ray's default 6379; the workers join `<head>:6379`).
    ray_port: Port = 6379
    served_model_name: Annotated[str, Field(min_length=1)] | None = None
    # "ascend": vllm-ascend's quantization method (vllm_ascend/platform.py
    # pre_register_and_update adds it to --quantization's choices); W8A8 weights need it.
    quantization: str | None = "ascend"
    seed: int | None = 1024
    max_num_seqs: Count = 16
    max_model_len: Count = 16384
    max_num_batched_tokens: Count = 4096
    gpu_memory_utilization: float = 0.92
    trust_remote_code: bool = True
    enable_prefix_caching: bool = True
    # JSON-valued flags, passed as the tutorial does.
    speculative_config: JsonObject | None = None
    compilation_config: JsonObject | None = None
    # vllm-ascend's own options (vllm_ascend/ascend_config.py AscendConfig).
    additional_config: JsonObject = {}
    # Further `vllm serve` arguments, appended as they are ("--flag", "--flag=value", "value").
    extra_args: list[str] = []
    log_file: str = "vllm.log"

    def host_ports(self) -> dict[str, int]:
        return {**super().host_ports(), "engine.data_parallel_rpc_port": self.data_parallel_rpc_port,
                "engine.ray_port": self.ray_port}


class VllmAscend(EnginePlugin):
    kind = "vllm-ascend"
    settings_model = VllmAscendSettings
    # The data parallel form's style; a TP x PP group wider than a node is the
    # Ray form (cluster_style_for).
    cluster_style = ClusterStyle.ENGINE_PEERS
    supports_pp = True
    supports_dp = True
    supports_ep = True
    # ray.md's worker line: `ray start --address='{head_node_ip}:6379' --node-ip-address={local_ip}`;
    # its head line is a bare `ray start --head` (here with --node-ip-address, as every
    # Ray engine's head: ray-start.sh.j2).
    runbook = "vllm-ascend's DeepSeek-R1 tutorial"
    image_package = EnginePackage("vllm-ascend", dist="vllm_ascend")

    def cluster_style_for(self, spec: ClusterSpec) -> ClusterStyle:
        p = spec.parallel
        return ClusterStyle.RAY if p.tp * p.pp > spec.profile.devices_per_node else ClusterStyle.ENGINE_PEERS

    def ray_port(self, spec: ClusterSpec) -> int:
        return settings_of(spec, VllmAscendSettings).ray_port

    def check(self, spec: ClusterSpec, plan: Plan | None, file: str) -> list[Problem]:
        if plan is not None:
            return []
        s = settings_of(spec, VllmAscendSettings)
        key = "ascend-inference:engine"
        problems: list[Problem] = []
        release = pinned_release()
        declared = spec.container.engine_version
        if declared is not None and declared != release:
            problems.append(Problem(
                file, "ascend-inference:container.engine_version",
                f"vllm-ascend {declared} is outside this program's window: its flags, env names and "
                f"additional_config keys are checked against vllm-ascend {release} with vLLM "
                f"{release_names()['vllm']} only",
                f"use an image with vllm-ascend {release} and set engine_version: {release}"))
        if not 0 < s.gpu_memory_utilization <= 1:
            problems.append(Problem(file, f"{key}.gpu_memory_utilization",
                                    f"{s.gpu_memory_utilization} is not in (0, 1]", "use e.g. 0.92 (the tutorial)"))
        p, nodes, per_node = spec.parallel, len(spec.nodes), spec.profile.devices_per_node
        if self.uses_ray(spec):
            # ray.md: "vLLM will utilize NPU resources across all nodes in the Ray
            # cluster"; one model instance over every NPU, no data parallel.
            if p.dp != 1:
                problems.append(Problem(
                    file, "ascend-inference:parallel.dp",
                    f"dp {p.dp} with tp {p.tp} x pp {p.pp} wider than a node: the Ray form runs one instance "
                    "over every NPU of the cluster", f"set dp: 1 and tp x pp = {nodes} x {per_node}, or keep "
                    f"tp x pp within a node (<= {per_node}) for the data parallel form"))
        elif p.pp > 1:
            problems.append(Problem(
                file, "ascend-inference:parallel.pp",
                f"pp {p.pp} within a node: this program builds pipeline parallel only across nodes (Ray form)",
                f"set pp: 1 and scale with dp, or make tp x pp = {nodes} x {per_node}"))
        elif p.dp % nodes or (p.dp // nodes) * p.tp != per_node:
            problems.append(Problem(
                file, "ascend-inference:parallel.dp",
                f"dp {p.dp} x tp {p.tp} does not put the same whole DP ranks on each of the {nodes} nodes' "
                f"{per_node} NPUs (--data-parallel-size-local is dp / nodes, each rank takes tp NPUs)",
                f"use a tp that divides {per_node} with dp: {nodes} x {per_node} / tp "
                f"(e.g. tp: {per_node}, dp: {nodes})"))
        # vLLM's expert parallel flattens TP across DP: EP = DP x TP
        # (vllm/model_executor/layers/fused_moe/config.py FusedMoEParallelConfig.make).
        if p.ep > 1 and p.ep != p.tp * p.dp:
            problems.append(Problem(
                file, "ascend-inference:parallel.ep",
                f"ep {p.ep}: with --enable-expert-parallel vLLM spreads experts over all DP x TP = "
                f"{p.tp * p.dp} ranks", f"set ep: {p.tp * p.dp}, or ep: 1 for no expert parallel"))
        known_flags = serve_option_names()
        for i, arg in enumerate(s.extra_args):
            if arg.startswith("-") and flag_name(arg) not in known_flags:
                problems.append(Problem(
                    file, f"{key}.extra_args[{i}]",
                    f"{arg.split('=', 1)[0]} is not a `vllm serve` option of vLLM {release_names()['vllm']}",
                    "remove it, or spell it as `vllm serve --help` of that release does"))
        known_env = known_env_names()
        for name in s.env:
            if name.startswith("VLLM_") and name not in known_env:
                problems.append(Problem(
                    file, f"{key}.env.{name}",
                    f"neither vLLM {release_names()['vllm']}'s vllm/envs.py nor vllm-ascend {release}'s "
                    "vllm_ascend/envs.py reads it", "remove it, or check its spelling against those files"))
        known_config = set(release_names()["additional_config"])
        for name in s.additional_config:
            if name not in known_config:
                problems.append(Problem(
                    file, f"{key}.additional_config.{name}",
                    f"vllm-ascend {release}'s config reader (vllm_ascend/ascend_config.py) does not read it",
                    "remove it, or check its spelling against that file"))
        return problems

    def memory_fraction(self, spec: ClusterSpec) -> float:
        return settings_of(spec, VllmAscendSettings).gpu_memory_utilization

    def env(self, ctx: NodeContext) -> EnvFile:
        s = settings_of(ctx.spec, VllmAscendSettings)
        ifname = ctx.spec.network.socket_ifname
        assert ctx.node.address is not None, "check_spec refuses a node without an address"
        if self.uses_ray(ctx.spec):
            # ray.md's "Start Ray Cluster" block, the same on head and workers but
            # HCCL_IF_IP; it must be set before `ray start` (ray-start.sh sources it).
            variables = [
                ("HCCL_IF_IP", ctx.node.address),
                ("GLOO_SOCKET_IFNAME", ifname),
                ("TP_SOCKET_IFNAME", ifname),
                ("RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES", "1"),
                ("ASCEND_RT_VISIBLE_DEVICES", ",".join(str(i) for i in range(ctx.spec.profile.devices_per_node))),
            ]
            return EnvFile(SET_ENV_SCRIPTS, tuple(apply_env_overrides(variables, s.env)))
        # The tutorial's §5.2 block, in its order, the same on every node but HCCL_IF_IP.
        variables = [
            ("HCCL_IF_IP", ctx.node.address),
            ("GLOO_SOCKET_IFNAME", ifname),
            ("TP_SOCKET_IFNAME", ifname),
            ("HCCL_SOCKET_IFNAME", ifname),
            ("OMP_PROC_BIND", "false"),
            ("OMP_NUM_THREADS", "1"),
            ("HCCL_BUFFSIZE", "200"),
            ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True"),
            ("VLLM_ASCEND_BALANCE_SCHEDULING", "1"),
            ("HCCL_INTRA_PCIE_ENABLE", "1"),
            ("HCCL_INTRA_ROCE_ENABLE", "0"),
        ]
        return EnvFile(SET_ENV_SCRIPTS, tuple(apply_env_overrides(variables, s.env)))

    def container(self, ctx: NodeContext) -> ContainerSpec:
        key = self.api_key_secret(ctx.spec)
        return runbook_container(ctx, STANDARD_MOUNTS, command=("bash",),
                                 secret_env=[(API_KEY_ENV, key)] if key else [])

    def served_name(self, spec: ClusterSpec) -> str:
        return settings_of(spec, VllmAscendSettings).served_model_name or spec.model.name

    def serve_argv(self, spec: ClusterSpec, plan: Plan, index: int) -> list[str]:
        """Node `index`'s `vllm serve`. Data parallel form: the tutorial's
        Node 0 form on the master, its Node 1 form (`--headless`,
        `--data-parallel-start-rank`) on the others. Ray form (head only):
        ray.md's `--distributed-executor-backend ray` with the TP/PP sizes."""
        s = settings_of(spec, VllmAscendSettings)
        argv = ["vllm", "serve", spec.model.path, "--host", "0.0.0.0", "--port", str(s.port)]
        if self.uses_ray(spec):
            argv += ["--distributed-executor-backend", "ray", "--tensor-parallel-size", str(plan.tp)]
            if plan.pp > 1:
                argv += ["--pipeline-parallel-size", str(plan.pp)]
            return argv + self._model_args(spec, plan)
        local = plan.dp // plan.nodes
        if index > 0:
            argv.append("--headless")
        argv += ["--data-parallel-size", str(plan.dp), "--data-parallel-size-local", str(local)]
        if index > 0:
            argv += ["--data-parallel-start-rank", str(index * local)]
        argv += ["--data-parallel-address", str(spec.nodes[0].address),
                 "--data-parallel-rpc-port", str(s.data_parallel_rpc_port),
                 "--tensor-parallel-size", str(plan.tp)]
        return argv + self._model_args(spec, plan)

    def _model_args(self, spec: ClusterSpec, plan: Plan) -> list[str]:
        """The flags after the layout's, the same in both forms."""
        s = settings_of(spec, VllmAscendSettings)
        argv: list[str] = []
        if s.quantization:
            argv += ["--quantization", s.quantization]
        if s.seed is not None:
            argv += ["--seed", str(s.seed)]
        argv += ["--served-model-name", self.served_name(spec)]
        if plan.ep > 1:
            argv.append("--enable-expert-parallel")
        argv += ["--max-num-seqs", str(s.max_num_seqs), "--max-model-len", str(s.max_model_len),
                 "--max-num-batched-tokens", str(s.max_num_batched_tokens)]
        if s.trust_remote_code:
            argv.append("--trust-remote-code")
        if not s.enable_prefix_caching:
            argv.append("--no-enable-prefix-caching")
        argv += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        for flag, value in (("--speculative-config", s.speculative_config),
                            ("--compilation-config", s.compilation_config),
                            ("--additional-config", s.additional_config or None)):
            if value is not None:
                argv += [flag, json.dumps(value, separators=(",", ":"))]
        return argv + s.extra_args

    def serve(self, spec: ClusterSpec, plan: Plan, stack: str) -> ServePlan:
        log_file = settings_of(spec, VllmAscendSettings).log_file
        if self.uses_ray(spec):
            return ServePlan(command=shlex.join(self.serve_argv(spec, plan, 0)), where="head", log_file=log_file)
        commands = {node.name: " ".join(shlex.quote(a) for a in self.serve_argv(spec, plan, i))
                    for i, node in enumerate(spec.nodes)}
        return ServePlan(command=commands[spec.nodes[0].name], where="every-node",
                         log_file=settings_of(spec, VllmAscendSettings).log_file, per_node=commands)

    def endpoint(self, spec: ClusterSpec) -> str:
        return f"http://{spec.nodes[0].address}:{spec.engine.port}"

    def readiness(self, spec: ClusterSpec) -> HttpCheck:
        return HttpCheck("GET", f"{self.endpoint(spec)}/v1/models", None, (), spec.engine.ready_timeout_s,
                         expect=json.dumps(self.served_name(spec)), bearer=self.api_key_secret(spec) is not None,
                         key_env=API_KEY_ENV)

    def smoke_request(self, spec: ClusterSpec) -> HttpCheck:
        # The tutorial's §6 "Functional Verification" request.
        body = json.dumps({"model": self.served_name(spec), "prompt": "The future of AI is",
                           "max_completion_tokens": 50, "temperature": 0})
        return HttpCheck("POST", f"{self.endpoint(spec)}/v1/completions", body, timeout_s=600, expect='"choices"',
                         bearer=self.api_key_secret(spec) is not None)


PLUGIN = VllmAscend()
