"""The Pulumi program, importable so that tests and the offline preview run
exactly what `pulumi up` runs (`__main__.py` only calls `run()`)."""
from __future__ import annotations

import os

import pulumi

from ascend_inference.errors import StackError
from ascend_inference.spec import NAMESPACE, SECTION_KEYS
from ascend_inference.stackfile import STACKS_DIR, duplicate_keys_in_file, secret_not_set, spec_from_sections


def stack_file_for(stack: str) -> str:
    # The Pulumi CLI runs the program with the project directory as cwd;
    # ASCEND_INFERENCE_STACK_FILE lets the offline tools point elsewhere.
    return os.environ.get("ASCEND_INFERENCE_STACK_FILE") or str(STACKS_DIR / f"Pulumi.{stack}.yaml")


def run() -> None:
    from components import cycle_check, debug_log, linear_wait, source_positions
    from components.common import StackRunError

    cycle_check.install()
    source_positions.install()
    linear_wait.install()
    debug_log.install()
    try:
        _run()
    except StackError as error:
        if isinstance(error, StackRunError):
            raise
        # Same lines as `python -m ascendctl validate`, without a traceback.
        raise StackRunError(error.problems) from None


def _run() -> None:
    from components.common import room_for_node_checks
    from components.deployment import Deployment, DeploymentArgs

    stack = pulumi.get_stack()
    file = stack_file_for(stack)
    # However the Pulumi CLI reads two equal keys (not ours to control),
    # pulumi.Config hands over one value; refuse them as `validate` does.
    if duplicates := duplicate_keys_in_file(file):
        raise StackError(duplicates)
    config = pulumi.Config(NAMESPACE)
    # Structured keys come from Pulumi's config (the stack file, or
    # `pulumi config set --path`), and are checked by the same code as
    # `python -m ascendctl validate`: a bad stack fails here, with the same
    # messages, before any resource is registered.
    sections = {key: value for key in SECTION_KEYS if (value := config.get_object(key)) is not None}
    loaded = spec_from_sections(stack, file, sections, _other_keys())
    _host_keys(loaded)
    # Every secret the stack reads (the SSH key, engine.secret_env, the hub
    # token), each missing one reported with `validate --require-secrets`'s line.
    found = {key: config.get_secret(key) for key in loaded.spec.secret_keys()}
    if missing := [secret_not_set(loaded.spec, file, key) for key, value in found.items() if value is None]:
        raise StackError(missing)
    secrets = {key: value for key, value in found.items() if value is not None}
    private_key = secrets[loaded.spec.ssh.private_key_secret]
    # The runbook defaults the stack keeps on purpose (no API key, ...):
    # named at every run, as `python -m ascendctl preview` names them.
    # (The engine prints its own "warning: " before each.)
    for line in loaded.spec.insecure_warnings():
        pulumi.log.warn(line.removeprefix("warning: "))
    # Secrets the engine reads from its environment (engine.secret_env) and
    # its serving API key (engine.api_key_secret).
    plugin = loaded.spec.engine_plugin
    engine_secrets = {key: secrets[key] for key in sorted(set(loaded.spec.engine.secret_env.values())
                                                           | set(plugin.secret_keys(loaded.spec)))}
    # The hub token model.source.token_secret names (sent on the download's stdin).
    token_key = loaded.spec.model.source.token_secret
    hub_token = secrets[token_key] if token_key else None
    room_for_node_checks(len(loaded.spec.nodes))
    deployment = Deployment(stack, DeploymentArgs(loaded, private_key, engine_secrets, hub_token))
    pulumi.export("endpoint", deployment.endpoint)
    pulumi.export("world_size", deployment.world_size)
    pulumi.export("rank_table_digest", deployment.rank_table_digest)
    pulumi.export("node_facts", deployment.node_facts)
    pulumi.export("images", deployment.image_facts)
    pulumi.export("smoke_reply", deployment.smoke_reply)
    if deployment.gpustack is not None:
        pulumi.export("gpustack_admin_password", deployment.gpustack.admin_password)


def _host_keys(loaded) -> None:
    """`pulumi up` connects only to pinned host keys (or with the stack's
    explicit opt-out, named as a warning), and stops before anything runs
    when a node offers another key than its pinned one: one line per node
    with both fingerprints (at the engine's preview too, which reaches the
    nodes for the node checks). A preview only warns of missing keys."""
    from pulumi.runtime.mocks import MockMonitor

    from ascend_inference.host_keys import changed_host_keys, insecure_host_keys_warning, missing_host_keys
    from ascend_inference.safe_values import masked

    spec, file = loaded.spec, loaded.file
    if spec.ssh.insecure_ignore_host_keys:
        pulumi.log.warn(insecure_host_keys_warning(file))
    missing = missing_host_keys(spec, file)
    really_up = not pulumi.runtime.is_dry_run()
    if missing and really_up:
        raise StackError(missing)
    # The engine's preview (`pulumi preview`, and the one `pulumi up` runs first)
    # runs the node checks over ssh, which would refuse a changed key with ssh's
    # own warning: the line naming both fingerprints comes first. The offline
    # preview (the SDK's mocks) connects to nothing.
    if not really_up and isinstance(pulumi.runtime.settings.get_monitor(), MockMonitor):
        return
    changed = changed_host_keys(spec)
    if changed:
        from components.common import NodeFactRunError

        error = NodeFactRunError("(host keys)", "SSH host key", "")
        error.args = ("\n".join(masked(line) for line in changed),)
        raise error


def _other_keys() -> dict:
    """Config keys of our namespace beyond the sections (secrets and strays),
    so `pulumi up` refuses an unknown key or a secret in clear exactly as
    `validate` does. The SDK has no public way to list config keys; this
    reads the same settings `pulumi.Config` reads."""
    from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

    prefix = f"{NAMESPACE}:"
    every = {**get_config_env(), **CONFIG.get()}
    return {key[len(prefix):]: ({"secure": "(set)"} if is_config_secret(key) else value)
            for key, value in every.items()
            if key.startswith(prefix) and key[len(prefix):] not in SECTION_KEYS}
