"""vLLM-MindSpore over Ray (runbooks 000: TP16 on 800I A2, 003: TP8/PP2 on 300I Duo).

Every node runs the same container; Ray forms the cluster with the head on the
master (`ray start --head --port=<ray_port>`, workers `--address=<head>:<port>`)
after the env is set, and `vllm-mindspore serve` runs on the head only.
"""
from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from ascend_inference.container import ContainerSpec, Mount
from ascend_inference.engines.base import (
    ApiKeySettings,
    ClusterStyle,
    ContainerChecks,
    Count,
    EnginePlugin,
    EnvFile,
    HttpCheck,
    NodeContext,
    Port,
    ServePlan,
    acl_check_wanted,
    apply_env_overrides,
    runbook_container,
    settings_of,
)
from ascend_inference.errors import Problem
from ascend_inference.images import EnginePackage, version_tuple
from ascend_inference.model_base import invalid
from ascend_inference.safe_values import node_path
from ascend_inference.templating import render_template

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan

# Runbook 000's `docker run -v` list.
STANDARD_MOUNTS = [
    "/usr/local/sbin/:/usr/local/sbin/",
    "/var/log/npu/slog/:/var/log/npu/slog",
    "/var/log/npu/profiling/:/var/log/npu/profiling",
    "/var/log/npu/dump/:/var/log/npu/dump",
    "/var/log/npu/:/usr/slog",
    "/etc/hccn.conf:/etc/hccn.conf",
    "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi",
    "/usr/local/dcmi:/usr/local/dcmi",
    "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
    "/etc/ascend_install.info:/etc/ascend_install.info",
    "/etc/vnpu.cfg:/etc/vnpu.cfg",
]

# Runbook 003 ("300I Duo 新增"): kernels and memory settings the 310P needs.
# Two departures, each for want of a reader (docs/runbooks.md, runbook 003):
# - DISABLE_SHAPE_RESAHPE=on is left out: neither MindSpore nor vllm-mindspore
#   reads that name (only env scripts that copy it set it).
# - MS_ENABLE_TRACE_MEMORY is `off`, not the runbook's `on`: MindSpore reads
#   it only as `== "off"` (mindspore/ccsrc/runtime/graph_scheduler/actor/
#   actor_common.cc, EnableTraceMemory), so `on` changes nothing; MindSpore's
#   own 310P scripts ("310P 新增") export `off`, which is what turns trace
#   memory off there.
# DEVICE_NUM_PER_NODE stays: MindFormers reads it (its env var list: NPUs per
# server, 8 when unset) and vllm-mindspore's CLI sets 16 when it is unset
# (vllm_mindspore/scripts.py, env_setup), wrong for an 8-device 300I Duo.
ATLAS_300I_DUO_ENV = [
    ("MS_SUBMODULE_LOG_v", "{PARSER:2,ANALYZER:2}"),
    ("DEVICE_NUM_PER_NODE", "{devices}"),
    ("MS_ENABLE_INTERNAL_BOOST", "off"),
    ("MS_ENABLE_TRACE_MEMORY", "off"),
    ("MS_DEV_RUNTIME_CONF", "only_local_comm:true"),
    ("MS_ALLOC_CONF", "enable_vmm:true"),
    ("MS_INTERNAL_ENABLE_CUSTOM_KERNEL_LIST",
     "AddRmsNorm,RmsNormQuant,InferenceSwiGLU,TransposeBatchMatmulTranspose"),
]


# vLLM's own rules on the flags the serve command passes, as its parser and
# config classes state them (docs/formats.md §4d):
# `--dtype` choices: vllm/engine/arg_utils.py (ModelConfig's dtype), the same
# from vLLM 0.7 to 0.9.
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# `--block-size` choices: vllm/engine/arg_utils.py `choices=[8, 16, 32, 64, 128]`
# up to 0.8.x; from 0.9 vllm/config.py `BlockSize = Literal[1, 8, 16, 32, 64, 128]`.
VLLM_BLOCK_SIZES = (8, 16, 32, 64, 128)
VLLM_BLOCK_SIZES_FROM_0_9_1 = (1, *VLLM_BLOCK_SIZES)
# The vLLM each vllm-mindspore release runs on (vllm-mindspore's install
# guides: 0.2 with vLLM 0.7.3, 0.3 with 0.8.3, 0.4 with 0.9.1; runbook 003
# pairs vLLM 0.9.1 with vllm-mindspore 0.4.0).
VLLM_OF_VLLM_MINDSPORE: dict[tuple[int, ...], tuple[int, ...]] = {
    (0, 2): (0, 7, 3), (0, 3): (0, 8, 3), (0, 4): (0, 9, 1)}


def vllm_version(vllm_mindspore: str | None) -> tuple[int, ...] | None:
    """The vLLM a vllm-mindspore release runs on (None: not known)."""
    if vllm_mindspore is None:
        return None
    return VLLM_OF_VLLM_MINDSPORE.get(version_tuple(vllm_mindspore)[:2])


def block_size_choices(vllm_mindspore: str | None) -> tuple[int, ...]:
    """`--block-size` choices of the vLLM under this vllm-mindspore (the
    narrower, older set when the pairing is not known)."""
    vllm = vllm_version(vllm_mindspore)
    if vllm is None and vllm_mindspore is not None and version_tuple(vllm_mindspore) >= (0, 5):
        vllm = (0, 9, 1)  # later releases run later vLLMs
    return VLLM_BLOCK_SIZES_FROM_0_9_1 if vllm is not None and vllm >= (0, 9, 1) else VLLM_BLOCK_SIZES


# vLLM's own variable for the serving API key (vllm/envs.py: VLLM_API_KEY).
API_KEY_ENV = "VLLM_API_KEY"


class VllmMindsporeSettings(ApiKeySettings):
    kind: Literal["vllm-mindspore"]
    port: Port = 8000
    ray_port: Port = 6379
    max_num_seqs: Count = 256
    max_model_len: Count = 32768
    max_num_batched_tokens: Count = 4096
    block_size: Count = 128
    gpu_memory_utilization: float = 0.9
    trust_remote_code: bool = True
    # Runbook 003 passes --no-enable-prefix-caching. Rendered either way
    # (--enable-prefix-caching / --no-enable-prefix-caching): vLLM's default
    # differs between its V0 engine (off) and V1 (on), so the stack's word,
    # not the release's default, decides.
    enable_prefix_caching: bool = True
    # Runbook 003 passes --dtype float16.
    dtype: str | None = None
    # Runbook 003 passes --distributed-executor-backend=ray; 000 leaves it to vLLM.
    distributed_executor_backend: Literal["ray", "mp"] | None = None
    model_backend: str = "MindFormers"
    mindformers_model_config: str = "/path/to/research/deepseek3/deepseek_r1_671b/predict_deepseek_r1_671b_w8a8.yaml"
    _check_config = field_validator("mindformers_model_config")(lambda v: node_path(v, what="config path"))
    # Write runbook 003's MindFormers predict yaml to `mindformers_model_config`
    # on every node (otherwise the one shipped in the image is used).
    write_mindformers_yaml: bool = False
    log_file: str = "vllm.txt"
    # The smoke request's prompt: runbook 000's "I am"; runbook 003 asks "Mindspore is".
    smoke_prompt: Annotated[str, Field(min_length=1)] = "I am"

    def host_ports(self) -> dict[str, int]:
        return {**super().host_ports(), "engine.ray_port": self.ray_port}

    @field_validator("dtype")
    @classmethod
    def _vllm_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in VLLM_DTYPES:
            choices = ", ".join(f"'{c}'" for c in VLLM_DTYPES)
            raise invalid(f"vLLM refuses it at start (\"argument --dtype: invalid choice: '{value}' (choose from "
                          f"{choices})\")", "use float16 (runbook 003) or bfloat16, or leave dtype out (auto)")
        return value


# vllm-mindspore 0.4.0 (with vLLM 0.9.1): `VLLM_MS_MODEL_BACKEND` replaces
# `vLLM_MODEL_BACKEND`, and the MindFormers backend reads the model's own
# Hugging Face config.json; a MINDFORMERS_MODEL_CONFIG in the environment
# makes it raise ValueError ("MINDFORMERS_MODEL_CONFIG is not supported,
# please unset MINDFORMERS_MODEL_CONFIG", vllm-mindspore's
# vllm_mindspore/utils.py; 0.4.0 release notes: no YAML file needed).
VLLM_MS_RENAME = (0, 4, 0)


def renamed_env(spec: ClusterSpec) -> bool:
    """Whether the image's vllm-mindspore (container.engine_version, which
    validate requires for this engine) takes the 0.4.0 names."""
    version = PLUGIN.engine_version(spec)
    return version is not None and version_tuple(version) >= VLLM_MS_RENAME


def backend_env(spec: ClusterSpec, s: VllmMindsporeSettings) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """The model-backend variable and the MindFormers config variable(s)
    for the engine version in the image. From 0.4.0 the backend variable is
    VLLM_MS_MODEL_BACKEND (the old name only warns), and MINDFORMERS_MODEL_CONFIG
    is gone: with the MindFormers backend the engine raises ValueError when it
    is set, and reads the model directory's config.json instead
    (vllm-mindspore's vllm_mindspore/utils.py; its 0.4.0 release notes)."""
    if not renamed_env(spec):
        return ("vLLM_MODEL_BACKEND", s.model_backend), [("MINDFORMERS_MODEL_CONFIG", s.mindformers_model_config)]
    return ("VLLM_MS_MODEL_BACKEND", s.model_backend), []


class VllmMindspore(EnginePlugin):
    kind = "vllm-mindspore"
    settings_model = VllmMindsporeSettings
    cluster_style = ClusterStyle.RAY
    supports_pp = True
    runbook = "000/003"
    image_package = EnginePackage("vllm-mindspore", dist="vllm_mindspore")

    def version_matters(self, spec: ClusterSpec) -> str:
        return ("vllm-mindspore 0.4.0 renamed its env (VLLM_MS_MODEL_BACKEND; MINDFORMERS_MODEL_CONFIG raises at "
                "import), so the env file depends on the release")

    def env_era(self, version: str | None) -> str:
        if version is not None and version_tuple(version) >= VLLM_MS_RENAME:
            return "vllm-mindspore 0.4.0 or later"
        return "vllm-mindspore before 0.4.0"

    def check(self, spec: ClusterSpec, plan: Plan | None, file: str) -> list[Problem]:
        s = settings_of(spec, VllmMindsporeSettings)
        problems: list[Problem] = []
        if plan is None and not 0 < s.gpu_memory_utilization <= 1:
            problems.append(Problem(file, "ascend-inference:engine.gpu_memory_utilization",
                                    f"{s.gpu_memory_utilization} is not in (0, 1]", "use e.g. 0.9 (runbook 000)"))
        version = self.engine_version(spec)
        sizes = block_size_choices(version)
        if plan is None and s.block_size not in sizes:
            problems.append(Problem(
                file, "ascend-inference:engine.block_size",
                f"vLLM{_under(version)} refuses it at start (\"argument --block-size: invalid choice: {s.block_size} "
                f"(choose from {', '.join(str(n) for n in sizes)})\")", "use 128 (runbooks 000 and 003)"))
        if plan is None and s.max_num_batched_tokens < s.max_num_seqs:
            # vLLM's SchedulerConfig check (vllm/config.py, _verify_args).
            problems.append(Problem(
                file, "ascend-inference:engine.max_num_batched_tokens",
                f"vLLM refuses it at start (\"max_num_batched_tokens ({s.max_num_batched_tokens}) must be greater "
                f"than or equal to max_num_seqs ({s.max_num_seqs})\")",
                f"raise max_num_batched_tokens to at least {s.max_num_seqs}, or lower max_num_seqs"))
        if plan is None and s.max_num_batched_tokens < s.block_size:
            problems.append(Problem(file, "ascend-inference:engine.max_num_batched_tokens",
                                    f"{s.max_num_batched_tokens} is below block_size {s.block_size}",
                                    "use 4096 (runbook 000's recommendation)"))
        if renamed_env(spec) and s.write_mindformers_yaml:
            problems.append(Problem(
                file, "ascend-inference:engine.write_mindformers_yaml",
                f"vllm-mindspore {self.engine_version(spec)} reads the model's own config.json and refuses "
                "MINDFORMERS_MODEL_CONFIG, so the predict yaml would never be read",
                "remove write_mindformers_yaml, or set container.engine_version to the image's pre-0.4.0 version"))
        return problems

    def memory_fraction(self, spec: ClusterSpec) -> float:
        return settings_of(spec, VllmMindsporeSettings).gpu_memory_utilization

    def ray_port(self, spec: ClusterSpec) -> int:
        return settings_of(spec, VllmMindsporeSettings).ray_port

    def env(self, ctx: NodeContext) -> EnvFile:
        spec, s = ctx.spec, settings_of(ctx.spec, VllmMindsporeSettings)
        devices = ",".join(str(i) for i in range(spec.profile.devices_per_node))
        ifname = spec.network.socket_ifname
        variables: list[tuple[str, str]] = []
        backend, model_config = backend_env(spec, s)
        if spec.hardware.profile == "atlas-300i-duo":
            # Runbook 003's block, in its order.
            variables += [
                backend,
                ("MS_ENABLE_LCCL", "off"),
                ("ASCEND_RT_VISIBLE_DEVICES", devices),
                ("GLOO_SOCKET_IFNAME", ifname),
                ("TP_SOCKET_IFNAME", ifname),
            ]
            variables += [(k, v.replace("{devices}", str(spec.profile.devices_per_node)))
                          for k, v in ATLAS_300I_DUO_ENV]
            if ctx.plan.pp > 1:
                variables.append(("VLLM_PP_LAYER_PARTITION", ",".join(str(n) for n in ctx.plan.pp_layer_split)))
            variables += model_config
            sources: tuple[str, ...] = ()
        else:
            # Runbook 000's block, in its order, less ASCEND_CUSTOM_PATH: only
            # build scripts read it (MindSpore's CMake, to find CANN), nothing
            # at run time (docs/runbooks.md, runbook 000).
            sources = ("/usr/local/Ascend/ascend-toolkit/set_env.sh",)
            variables += [
                ("GLOO_SOCKET_IFNAME", ifname),
                ("HCCL_SOCKET_IFNAME", ifname),
                ("TP_SOCKET_IFNAME", ifname),
                ("MS_ENABLE_LCCL", "off"),
                ("HCCL_OP_EXPANSION_MODE", "AIV"),
                ("MS_ALLOC_CONF", "enable_vmm:true"),
                ("ASCEND_RT_VISIBLE_DEVICES", devices),
                ("RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES", "1"),
                backend,
                *model_config,
            ]
            if ctx.plan.pp > 1:
                variables.append(("VLLM_PP_LAYER_PARTITION", ",".join(str(n) for n in ctx.plan.pp_layer_split)))
        return EnvFile(sources, tuple(apply_env_overrides(variables, s.env)))

    def container(self, ctx: NodeContext) -> ContainerSpec:
        s = settings_of(ctx.spec, VllmMindsporeSettings)
        # The predict yaml is read inside the container at the path
        # MINDFORMERS_MODEL_CONFIG names (runbook 003: /workspace/...).
        yaml_mount = [Mount(self.yaml_on_host(ctx), s.mindformers_model_config, read_only=True)] \
            if s.write_mindformers_yaml else []
        # A profile without a RoCE fabric (300I Duo) has no /etc/hccn.conf:
        # docker would make an empty directory there, and the mount check
        # refuses a missing source, so runbook 000's list goes without it.
        mounts = STANDARD_MOUNTS if ctx.spec.profile.network.fabric else [
            m for m in STANDARD_MOUNTS if not m.startswith("/etc/hccn.conf:")]
        # The serving API key as the container's VLLM_API_KEY, a secret input
        # of the container: vLLM takes `--api-key` or, without it, this variable
        # (vllm/entrypoints/openai/api_server.py, build_app: `if token :=
        # args.api_key or envs.VLLM_API_KEY`), so the key is on no command line.
        key = self.api_key_secret(ctx.spec)
        return runbook_container(ctx, mounts, yaml_mount, command=("bash",),
                                 secret_env=[(API_KEY_ENV, key)] if key else [])

    def files(self, ctx: NodeContext) -> dict[str, str]:
        s = settings_of(ctx.spec, VllmMindsporeSettings)
        if not s.write_mindformers_yaml:
            return {}
        return {self.yaml_on_host(ctx): render_template(
            "mindformers_predict_deepseek_r1_671b.yaml.j2", spec=ctx.spec, plan=ctx.plan)}

    def container_checks(self, ctx: NodeContext) -> ContainerChecks:
        # Runbook 000: with vLLM_MODEL_BACKEND=MindFormers the engine reads the
        # predict yaml MINDFORMERS_MODEL_CONFIG names; the runbook never checks
        # that it is there, and the engine only finds out at start.
        # From 0.4.0 there is no such variable (backend_env): nothing to check.
        s = settings_of(ctx.spec, VllmMindsporeSettings)
        files = (("MINDFORMERS_MODEL_CONFIG",) if s.model_backend == "MindFormers" and not renamed_env(ctx.spec)
                 else ())
        return ContainerChecks(acl=acl_check_wanted(ctx.spec), files_from_env=files,
                               nnrt_run=ctx.spec.container.nnrt_run)

    def yaml_on_host(self, ctx: NodeContext) -> str:
        config = settings_of(ctx.spec, VllmMindsporeSettings).mindformers_model_config
        return f"{ctx.remote_dir}/mindformers/{config.rsplit('/', 1)[-1]}"

    def serve_argv(self, spec: ClusterSpec, plan: Plan) -> list[str]:
        s = settings_of(spec, VllmMindsporeSettings)
        argv = ["vllm-mindspore", "serve", spec.model.path]
        if s.trust_remote_code:
            argv.append("--trust-remote-code")
        argv.append("--enable-prefix-caching" if s.enable_prefix_caching else "--no-enable-prefix-caching")
        if s.dtype:
            argv += ["--dtype", s.dtype]
        argv.append(f"--tensor-parallel-size={plan.tp}")
        if plan.pp > 1:
            argv.append(f"--pipeline-parallel-size={plan.pp}")
        argv += [
            f"--max-num-seqs={s.max_num_seqs}",
            f"--max-model-len={s.max_model_len}",
            f"--max-num-batched-tokens={s.max_num_batched_tokens}",
            f"--block-size={s.block_size}",
            f"--gpu-memory-utilization={s.gpu_memory_utilization}",
        ]
        if s.distributed_executor_backend:
            argv.append(f"--distributed-executor-backend={s.distributed_executor_backend}")
        if s.port != 8000:
            argv.append(f"--port={s.port}")
        return argv

    def serve(self, spec: ClusterSpec, plan: Plan, stack: str) -> ServePlan:
        return ServePlan(
            command=" ".join(shlex.quote(a) for a in self.serve_argv(spec, plan)),
            where="head", log_file=settings_of(spec, VllmMindsporeSettings).log_file)

    def endpoint(self, spec: ClusterSpec) -> str:
        return f"http://{spec.nodes[0].address}:{spec.engine.port}"

    def readiness(self, spec: ClusterSpec) -> HttpCheck:
        return HttpCheck("GET", f"{self.endpoint(spec)}/v1/models", None, (), spec.engine.ready_timeout_s,
                         expect=spec.model.path, bearer=self.api_key_secret(spec) is not None, key_env=API_KEY_ENV)

    def smoke_request(self, spec: ClusterSpec) -> HttpCheck:
        # Runbook 000's request; "model" is the served path, as the runbooks
        # say. json.dumps, so a path or prompt with a quote stays valid JSON.
        s = settings_of(spec, VllmMindsporeSettings)
        body = json.dumps({"model": spec.model.path, "prompt": s.smoke_prompt, "max_tokens": 120, "temperature": 0,
                           "top_p": 1.0, "top_k": 1, "repetition_penalty": 1.0})
        return HttpCheck("POST", f"{self.endpoint(spec)}/v1/completions", body, timeout_s=600, expect='"choices"',
                         bearer=self.api_key_secret(spec) is not None)


def _under(vllm_mindspore: str | None) -> str:
    """` 0.9.1 (under vllm-mindspore 0.4.0)`, or "" when the pairing is not known."""
    vllm = vllm_version(vllm_mindspore)
    if vllm is None:
        return ""
    return f" {'.'.join(str(n) for n in vllm)} (under vllm-mindspore {vllm_mindspore})"


PLUGIN = VllmMindspore()
