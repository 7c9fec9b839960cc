"""What an engine plugin declares. One module per engine implements it.

An engine says, for a stack and its plan: which layouts it accepts, how much
NPU memory it may use, the env file every node gets, the container it runs in,
the node-local files it needs (MindIE's config.json, MindFormers' yaml), how
the cluster forms (Ray or an HCCL rank table or GPUStack's own workers), the
serve command, the readiness probe and the smoke request.

What a change to a setting invalidates is not declared here by hand: it
follows from which of these outputs the setting reaches (a serve flag reaches
only `serve_command`, so only the serving process is redone; an env var reaches
the env file, so containers and Ray are redone). `python -m ascendctl diff`
shows it for any change, and the graph tests pin it per engine.
"""
from __future__ import annotations

import enum
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import Field

from ascend_inference.container import ContainerSpec, Mount, ascend_devices, merge_mounts, standard_mounts
from ascend_inference.errors import Problem
from ascend_inference.images import EnginePackage, version_tuple
from ascend_inference.model_base import StrictModel
from ascend_inference.ranktable import RankTableOptions

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec, Node
    from ascend_inference.topology import Plan


# A port a process listens on or connects to.
Port = Annotated[int, Field(ge=1, le=65535)]
# A count or size that must be at least one (batch sizes, token limits, replicas).
Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
# Seconds to wait for something; at least one.
Seconds = Annotated[int, Field(ge=1, le=7 * 24 * 3600)]

# `export NAME=...` needs NAME to be a shell identifier; anything else breaks
# the env file on every node (or, worse, runs as a command).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Env names whose value is a credential: a literal value would sit in clear in
# the stack file (usually committed) and in every node's env file.
SECRET_ENV_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL",
                             re.IGNORECASE)


def is_secret_env_name(name: str) -> bool:
    return bool(SECRET_ENV_NAME.search(name))


# Ray's token authentication (RAY_AUTH_MODE=token; docs.ray.io
# ray-core/internals/token-authentication.html: the token from RAY_AUTH_TOKEN,
# set the same on every node), from this release on.
RAY_TOKEN_AUTH_SINCE = (2, 52, 0)
# The config key of the Pulumi secret holding Ray's token.
RAY_TOKEN_SECRET = "rayAuthToken"

# A key of the ascend-inference: config namespace (as `ssh.private_key_secret`).
CONFIG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def config_key_for(env_name: str) -> str:
    """A suggested secret config key for an env variable: `HF_TOKEN` -> `hfToken`."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", env_name) if w] or ["secret"]
    key = words[0].lower() + "".join(w.capitalize() for w in words[1:])
    # A config key starts with a letter: `_2FA_TOKEN` -> `env2faToken`.
    return key if key[0].isalpha() else "env" + key[0].upper() + key[1:]


def _bad_env_name(file: str, key: str, name: str) -> Problem:
    return Problem(file, key, f"'{name}' is not a valid environment variable name",
                   f"use letters, digits and _ only, not starting with a digit (e.g. {_as_env_name(name)})")


def _as_env_name(name: str) -> str:
    """A suggestion: `1BAD NAME` -> `_1BAD_NAME`."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name) or "_"
    return cleaned if not cleaned[0].isdigit() else "_" + cleaned


class EngineSettingsBase(StrictModel):
    """What every engine's `engine:` section has, validated once here.

    `port` is where the engine's HTTP API listens on the master; `env` adds
    variables to the node env file (a null value drops one the engine would
    set); `ready_timeout_s` bounds the wait for the readiness probe. Engines
    set their own defaults by redeclaring the field with the same type.
    `log_file` is not here: MindIE's daemon and GPUStack's server choose
    their own log, so only the Ray engines have the key.
    """

    port: Port
    env: dict[str, str | None] = {}
    # Env variables whose value is a Pulumi secret: NAME -> the config key that
    # holds it (`pulumi config set --secret ascend-inference:<key>`). They go
    # into the container's environment as secret inputs, never into the env
    # file, a rendered file or a log.
    secret_env: dict[str, str] = {}
    ready_timeout_s: Seconds = 3600

    def insecure_choices(self) -> list[tuple[str, str]]:
        """(stack key, what it leaves open) for every runbook default this
        stack keeps on purpose; preview, validate and the program name each
        one as a warning. Engines with such choices add theirs."""
        return []

    def problems(self, file: str) -> list[Problem]:
        """Rules on the shared settings that need a whole message each: one
        per bad env name, one per credential written in clear."""
        found: list[Problem] = []
        for name, value in self.env.items():
            key = f"ascend-inference:engine.env.{name}"
            if not ENV_NAME.match(name):
                found.append(_bad_env_name(file, key, name))
            elif value is not None and is_secret_env_name(name) and not value.startswith("$"):
                secret_key = config_key_for(name)
                found.append(Problem(
                    file, key, "looks like a credential written in clear (the stack file and every node's "
                    "env file would hold it)",
                    f"remove it from engine.env, add `secret_env: {{{name}: {secret_key}}}` under engine, and "
                    f"run `pulumi config set --secret ascend-inference:{secret_key}`"))
        for name, secret_key in self.secret_env.items():
            key = f"ascend-inference:engine.secret_env.{name}"
            if not ENV_NAME.match(name):
                found.append(_bad_env_name(file, key, name))
            elif name in self.env:
                found.append(Problem(file, key, f"{name} is also set in engine.env",
                                     "keep it in one place: secret_env for a secret, env otherwise"))
            elif not CONFIG_KEY.match(secret_key):
                found.append(Problem(
                    file, key, f"'{secret_key}' is not a config key name",
                    f"use letters, digits and _, starting with a letter (e.g. {config_key_for(name)})"))
        return found

    def host_ports(self) -> dict[str, int]:
        """Ports this engine listens on, on every node, by the stack key (or
        file) that sets them; two equal values cannot both be bound."""
        return {"engine.port": self.port}


class ApiKeySettings(EngineSettingsBase):
    """The serving API key of an engine whose OpenAI-compatible server takes
    one (vLLM, LMDeploy). `api_key_secret` is the config key of a Pulumi
    secret (`pulumi config set --secret ascend-inference:servingApiKey`);
    the runbooks serve without a key, which stays possible only with
    `insecure_no_api_key: true`, named as a warning wherever the stack is shown."""

    api_key_secret: str = "servingApiKey"
    insecure_no_api_key: bool = False

    @property
    def api_key(self) -> str | None:
        """The config key the serving API key is read from, or None (no key)."""
        return None if self.insecure_no_api_key else self.api_key_secret

    def insecure_choices(self) -> list[tuple[str, str]]:
        if not self.insecure_no_api_key:
            return super().insecure_choices()
        return [*super().insecure_choices(),
                ("engine.insecure_no_api_key", f"the engine's API on port {self.port} answers anyone who reaches "
                 "it, with no API key (the runbooks' default)")]

    def problems(self, file: str) -> list[Problem]:
        found = super().problems(file)
        if not self.insecure_no_api_key and not CONFIG_KEY.match(self.api_key_secret):
            found.append(Problem(file, "ascend-inference:engine.api_key_secret",
                                 "is not a config key name",
                                 "use letters, digits and _, starting with a letter (e.g. servingApiKey)"))
        return found


Settings = TypeVar("Settings", bound=EngineSettingsBase)


def settings_of(spec: ClusterSpec, model: type[Settings]) -> Settings:
    """`spec.engine` as the engine's own settings model. An engine plugin is
    chosen by `spec.engine.kind`, so its settings are always that model."""
    settings = spec.engine
    if not isinstance(settings, model):
        raise TypeError(f"engine settings of kind {settings.kind} are not {model.__name__}")
    return settings


@dataclass(frozen=True)
class EnvFile:
    """The env file sourced before anything engine-related runs on a node.

    `sources` are scripts sourced first (the CANN/MindIE set_env.sh files);
    `variables` keep the runbook's order. A value may refer to a variable set
    by a source (`$ASCEND_HOME_PATH/../`); env.sh.j2 lets the shell expand
    such `$NAME`/`${NAME}` references and nothing else in a value.
    """

    sources: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.variables)


@dataclass(frozen=True)
class HttpCheck:
    """An HTTP request made from the master node (readiness or smoke test)."""

    method: str
    url: str
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    timeout_s: int = 60
    # Text the reply must contain to count as success.
    expect: str = ""
    # Send `Authorization: Bearer <key>` with the serving API key, which the
    # script holds in $api_key: read from the step's secret stdin on the host
    # (`read_key_from_stdin`), or from the container's secret env variable
    # `key_env` inside the container (`key_from_env`). The header goes to curl
    # on its own stdin (`-H @-`, curl 7.55+) from bash's builtin printf, so
    # the key is on no command line and in no file.
    bearer: bool = False
    key_env: str = ""
    # An https URL's server is checked against this CA file (curl --cacert,
    # never -k); "" for http. A client certificate and key, when the server
    # asks for one (MindIE's two-way HTTPS).
    cacert: str = ""
    client_cert: str = ""
    client_key: str = ""

    def read_key_from_stdin(self) -> str:
        return ('IFS= read -r api_key || [ -n "$api_key" ] || '
                '{ echo "no serving API key on stdin" >&2; exit 11; }')

    def key_from_env(self) -> str:
        return f'api_key="${{{self.key_env}:?the serving API key is not in the container environment}}"'

    def auth_pipe(self) -> str:
        """What goes before `curl` so that `auth_args` finds the header on stdin."""
        return "printf 'Authorization: Bearer %s\\n' \"$api_key\" | " if self.bearer else ""

    def auth_args(self) -> list[str]:
        return ["-H", "@-"] if self.bearer else []

    def tls_args(self) -> list[str]:
        client = ["--cert", self.client_cert, "--key", self.client_key] if self.client_cert else []
        return ["--cacert", self.cacert, *client] if self.cacert else []

    def curl(self) -> str:
        parts = ["curl", "-sS", "--fail-with-body", "-m", str(self.timeout_s), "-X", self.method, *self.tls_args(),
                 *self.auth_args()]
        for name, value in self.headers:
            parts += ["-H", f"{name}: {value}"]
        if self.body is not None:
            parts += ["-d", self.body]
        parts.append(self.url)
        return self.auth_pipe() + " ".join(shlex.quote(p) for p in parts)



@dataclass
class NodeContext:
    """Everything an engine needs to render one node's files."""

    spec: ClusterSpec
    plan: Plan
    index: int
    node: Node
    stack: str
    rank_table_path: str | None = None

    @property
    def is_master(self) -> bool:
        return self.index == 0

    @property
    def remote_dir(self) -> str:
        return f"{self.spec.paths.remote_dir}/{self.stack}"

    @property
    def run_dir(self) -> str:
        """pid and log files of the serving process (written from the container)."""
        return f"{self.remote_dir}/run"

    def stack_dir_mounts(self) -> list[Mount]:
        """The stack's directory read-only (env file, engine files) and its
        run directory read-write, at the same paths as on the host."""
        return [Mount(self.remote_dir, self.remote_dir, read_only=True), Mount(self.run_dir, self.run_dir)]


@dataclass(frozen=True)
class ServePlan:
    """How the serving process runs: on which nodes, with which command."""

    command: str
    # "head": one process on the master; "every-node": one per node (MindIE);
    # "api": no process of ours, the engine's server deploys it (GPUStack).
    where: str
    log_file: str
    # Working directory inside the container.
    workdir: str = "/"
    # Commands per node when they differ (MindIE runs the same daemon everywhere).
    per_node: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerChecks:
    """What must hold inside a started container before Ray or the engine
    starts there, with the env file sourced (the engine sees the same env).

    `acl`: `import acl` works (pyACL; runbook 000: Ray on Ascend needs it,
    and MindSpore reaches the NPUs through it). `files_from_env`: env
    variables whose value names a file that must exist in the container
    (runbook 000's MINDFORMERS_MODEL_CONFIG, read by vLLM-MindSpore at start).
    """

    acl: bool = False
    files_from_env: tuple[str, ...] = ()
    # container.nnrt_run: install pyACL from it first when `import acl` fails.
    nnrt_run: str | None = None

    def __bool__(self) -> bool:
        return self.acl or bool(self.files_from_env)


@dataclass(frozen=True)
class ConfigEdit:
    """An engine config file that lives in the image and is edited in place
    (runbook 001 §6.2: MindIE's conf/config.json), not replaced.

    `target` is the file inside the container; `edits` are `[path, value]`
    pairs (`ServerConfig.port`, `BackendConfig.ModelDeployConfig.ModelConfig[0].modelName`);
    `edits_file` is where the program installs the list on the host, under
    the stack's directory that the container mounts read-only."""

    label: str
    target: str
    edits_file: str
    edits: tuple[tuple[str, Any], ...]
    # Edit path -> the stack key (or layout fact) that sets it, for messages.
    set_by: tuple[tuple[str, str], ...] = ()

    def edit_lines(self) -> tuple[str, ...]:
        """`path = <JSON value>`, one per edit."""
        return tuple(f"{path} = {json.dumps(value, ensure_ascii=False)}" for path, value in self.edits)

    def edits_json(self) -> str:
        """`{"file": ..., "edits": [[path, value], ...]}`, one edit per line."""
        edits = ",\n    ".join(json.dumps(list(e), ensure_ascii=False) for e in self.edits)
        return f'{{\n  "file": {json.dumps(self.target, ensure_ascii=False)},\n  "edits": [\n    {edits}\n  ]\n}}\n'


class ClusterStyle(enum.Enum):
    """How the nodes form one cluster; the Pulumi program builds one shape of
    resources per style, and an engine picks one."""

    # Ray head on the master, workers join it; the serve command runs on the head.
    RAY = "ray"
    # One daemon per node, joined by the HCCL rank table alone.
    RANK_TABLE = "rank table"
    # GPUStack's own server and registered workers; the model is deployed
    # through its HTTP API (components/serving.py knows that API).
    GPUSTACK = "gpustack"
    # One serving process per node that the engine joins itself: vLLM's data
    # parallel coordinator on the master (`--data-parallel-address`), the
    # other nodes `--headless`; neither Ray nor a rank table (vllm-ascend).
    ENGINE_PEERS = "engine peers"


@dataclass(frozen=True)
class VersionWindow:
    """The engine releases a feature of the rendered stack works with: from
    `low` (included) up to `below` (excluded); None leaves that side open.
    `why` says what changes at the edges, with its source (docs/engine-versions.md
    has one table per engine)."""

    feature: str
    low: tuple[int, ...] | None
    below: tuple[int, ...] | None
    why: str

    def holds(self, version: str) -> bool:
        found = version_tuple(version)
        return (self.low is None or found >= self.low) and (self.below is None or found < self.below)

    def describe(self) -> str:
        def text(numbers: tuple[int, ...]) -> str:
            return ".".join(str(n) for n in numbers)

        if self.low is not None and self.below is not None:
            major, minor = (self.below + (0, 0))[:2]
            if self.below[2:] in ((), (0,)) and minor > 0:
                # below 0.15.0: the last release line is 0.14.x
                return f"{text(self.low)} to {major}.{minor - 1}.x"
            return f"{text(self.low)} up to (not including) {text(self.below)}"
        if self.low is not None:
            return f"{text(self.low)} or later"
        return f"before {text(self.below or ())}"


class EnginePlugin:
    """One engine. Every engine-specific choice the renderer and the program
    make is an attribute or method here; nothing outside the engine modules
    compares engine kinds."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[EngineSettingsBase]]
    cluster_style: ClassVar[ClusterStyle]
    uses_rank_table: ClassVar[bool] = False
    supports_pp: ClassVar[bool] = False
    supports_dp: ClassVar[bool] = False
    supports_ep: ClassVar[bool] = False
    # Runbook the defaults come from (cited in docs/stack-file.md and errors).
    runbook: ClassVar[str] = ""
    # Where the engine's version is read inside its image (the image check).
    image_package: ClassVar[EnginePackage]

    def env_era(self, version: str | None) -> str:
        """Which env the engine takes at this version (None: not known). The
        image check refuses an image whose era differs from the one the env
        was rendered for; an engine whose env never changed has one."""
        return "any"

    def version_matters(self, spec: ClusterSpec) -> str:
        """Why what the program renders for this stack depends on the
        engine's release ("": it does not). Then the stack must say which
        release: `container.engine_version`, or an image tag that names it."""
        return ""

    def version_from_image(self, image: str) -> str | None:
        """The engine version an image reference pins by its tag, if the
        engine's images name it there (`...:a2-v0.14.0`); None otherwise
        (`latest`, a digest, a tag without a version)."""
        return None

    def engine_version(self, spec: ClusterSpec) -> str | None:
        """The engine version the stack is rendered for: `container.engine_version`,
        else the one the image tag names."""
        return spec.container.engine_version or self.version_from_image(spec.container.image)

    def version_windows(self, spec: ClusterSpec) -> list[VersionWindow]:
        """The windows this stack's features need (e.g. multi-node over a
        rank table); a version outside one is refused at validate (declared)
        and by the image check (found)."""
        return []

    def version_refusal(self, spec: ClusterSpec, version: str) -> tuple[str, str] | None:
        """(what, fix) when `version` is outside a window this stack needs."""
        label = self.image_package.label
        for window in self.version_windows(spec):
            if not window.holds(version):
                return (f"{label} {version} is outside {window.describe()}, the releases {window.feature} needs "
                        f"({window.why})",
                        f"use an image with {label} {window.describe()} and set "
                        "ascend-inference:container.engine_version to its version (docs/engine-versions.md)")
        return None

    # --- layout ---------------------------------------------------------
    def check(self, spec: ClusterSpec, plan: Plan | None, file: str) -> list[Problem]:
        """Problems with the stack for this engine: called once before the plan
        exists (`plan` None) and once with it."""
        return []

    def memory_fraction(self, spec: ClusterSpec) -> float:
        raise NotImplementedError

    def secret_keys(self, spec: ClusterSpec) -> list[str]:
        """Config keys of the Pulumi secrets the engine itself reads (its API
        key, Ray's token)."""
        return [key for key in (self.api_key_secret(spec), self.ray_auth_secret(spec)) if key]

    def ray_auth_secret(self, spec: ClusterSpec) -> str | None:
        """The config key of Ray's token when the stack's Ray is started with
        token authentication: a Ray cluster whose declared version has it
        (2.52.0 and later: docs.ray.io ray-security/token-auth.html, "Token
        authentication is available in Ray 2.52.0 or later")."""
        version = spec.container.ray_version
        if self.uses_ray(spec) and version is not None and version_tuple(version) >= RAY_TOKEN_AUTH_SINCE:
            return RAY_TOKEN_SECRET
        return None

    def insecure_choices(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        """(stack key, what it leaves open) for every open door this stack
        keeps: the settings' explicit choices, and Ray without authentication."""
        found = spec.engine.insecure_choices()
        if self.uses_ray(spec) and self.ray_auth_secret(spec) is None:
            declared = spec.container.ray_version
            found.append((
                "container.ray_version",
                f"{'is not set' if declared is None else f'is {declared}'}: Ray runs without authentication "
                "(token authentication needs Ray 2.52.0 or later), so whoever reaches the head's GCS port "
                f"{self.ray_port(spec)} or Ray's other ports on a node can run code in the privileged, "
                "host-network containers; keep the cluster network closed to all but the nodes and the "
                "control host, or use an image with Ray 2.52.0 or later and declare it"))
        return found

    def api_key_secret(self, spec: ClusterSpec) -> str | None:
        """The config key of the serving API key, when the engine is served with one."""
        settings = spec.engine
        return settings.api_key if isinstance(settings, ApiKeySettings) else None

    def cluster_style_for(self, spec: ClusterSpec) -> ClusterStyle:
        """The style this stack's layout is built with. One per engine
        (`cluster_style`) unless the engine has more than one form:
        vllm-ascend forms a Ray cluster only for a TP/PP group wider than a node."""
        return self.cluster_style

    def uses_ray(self, spec: ClusterSpec) -> bool:
        return self.cluster_style_for(spec) is ClusterStyle.RAY

    # --- per node -------------------------------------------------------
    # `chmod -R` mode the weights check sets on the model directory ("": leave it).
    weights_mode: ClassVar[str] = ""

    def env(self, ctx: NodeContext) -> EnvFile:
        raise NotImplementedError

    def container(self, ctx: NodeContext) -> ContainerSpec:
        raise NotImplementedError

    def files(self, ctx: NodeContext) -> dict[str, str]:
        """Node-local files besides the env file: {absolute path: content}."""
        return {}

    def container_checks(self, ctx: NodeContext) -> ContainerChecks:
        """What the container-check step verifies in the started container:
        by default `import acl` where `container.check_acl` asks for it
        (unset: when the cluster forms over Ray, as runbook 000 says)."""
        return ContainerChecks(acl=acl_check_wanted(ctx.spec), nnrt_run=ctx.spec.container.nnrt_run)

    def config_edit(self, ctx: NodeContext) -> ConfigEdit | None:
        """The image's config file this engine edits in place, if any."""
        return None

    # --- cluster --------------------------------------------------------
    def rank_table_path(self, spec: ClusterSpec) -> str | None:
        return None

    def rank_table_options(self, spec: ClusterSpec) -> RankTableOptions:
        return RankTableOptions()

    def ray_port(self, spec: ClusterSpec) -> int | None:
        return None

    def serve(self, spec: ClusterSpec, plan: Plan, stack: str) -> ServePlan:
        raise NotImplementedError

    def pre_start(self, ctx: NodeContext) -> list[str]:
        """Shell lines serve-start runs in the container right before the
        serve command (already quoted: they go into the script as they are)."""
        return []

    def endpoint(self, spec: ClusterSpec) -> str:
        raise NotImplementedError

    def readiness(self, spec: ClusterSpec) -> HttpCheck:
        raise NotImplementedError

    def smoke_request(self, spec: ClusterSpec) -> HttpCheck:
        raise NotImplementedError

    # The smoke script's template; it gets `smoke` (the request) and whatever
    # `smoke_context` adds.
    smoke_template: ClassVar[str] = "smoke.sh.j2"

    def smoke_context(self, spec: ClusterSpec) -> dict[str, Any]:
        return {}


def acl_check_wanted(spec: ClusterSpec) -> bool:
    """`container.check_acl`, or when unset: is pyACL installed from
    `container.nnrt_run`, or does the engine form its cluster over Ray
    (runbook 000: "on Ascend, Ray needs the pyACL package")."""
    wanted = spec.container.check_acl
    if wanted is None:
        return spec.container.nnrt_run is not None or spec.engine_plugin.uses_ray(spec)
    return wanted


def apply_env_overrides(variables: list[tuple[str, str]],
                        overrides: dict[str, str | None]) -> list[tuple[str, str]]:
    """Stack `engine.env` entries replace in place, add at the end, or (null) drop."""
    out: list[tuple[str, str]] = []
    for k, v in variables:
        value = overrides.get(k, v)
        if value is not None:
            out.append((k, value))
    known = {k for k, _ in variables}
    out += [(k, v) for k, v in overrides.items() if k not in known and v is not None]
    return out


def runbook_container(ctx: NodeContext, standard: list[str], extra: Sequence[Mount] = (), *,
                      stack_dir: bool = True, secret_env: Sequence[tuple[str, str]] = (),
                      **fields: Any) -> ContainerSpec:
    """The container every runbook starts: all NPU devices, the runbook's
    standard Ascend mounts, the model at the same path, the stack's directory
    (env file, engine files, run dir), the stack's own extra mounts last (they
    win on the same target), and the stack's container settings. `fields`
    carries what differs per engine (command, entrypoint, ...)."""
    spec = ctx.spec
    c = spec.container
    # The nnrt `.run` pyACL is installed from, inside the container (read-only).
    nnrt = [Mount(c.nnrt_run, c.nnrt_run, read_only=True)] if c.nnrt_run else []
    mounts = merge_mounts(
        standard_mounts(standard),
        [Mount(spec.model.path, spec.model.path), *extra, *nnrt],
        ctx.stack_dir_mounts() if stack_dir else [],
        standard_mounts(c.mounts),
    )
    # Ray's token authentication: the mode and the token in the container's
    # environment, so `ray start`, `ray status` and the engine's own ray.init
    # (every process docker exec starts there) authenticate alike.
    ray_token = spec.engine_plugin.ray_auth_secret(spec)
    ray_env = {"RAY_AUTH_TOKEN": ray_token} if ray_token else {}
    env = (*fields.pop("env", ()), *((("RAY_AUTH_MODE", "token"),) if ray_token else ()))
    return ContainerSpec(
        name=c.name, image=c.image, devices=ascend_devices(spec.profile.devices_per_node), mounts=mounts,
        shm_size=c.shm_size, privileged=c.privileged, ipc_host=c.ipc_host, restart=c.restart, env=env,
        secret_env=tuple(sorted({**spec.engine.secret_env, **dict(secret_env), **ray_env}.items())), **fields)
