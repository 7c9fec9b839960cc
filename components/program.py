"""The Pulumi program, importable so that tests and the offline preview run
exactly what `pulumi up` runs (`__main__.py` only calls `run()`)."""
from __future__ import annotations

import os

import pulumi

from ascend_inference.errors import Problem, StackError
from ascend_inference.spec import NAMESPACE, SECTION_KEYS
from ascend_inference.stackfile import STACKS_DIR, duplicate_keys_in_file, spec_from_sections


def stack_file_for(stack: str) -> str:
    # The Pulumi CLI runs the program with the project directory as cwd;
    # ASCEND_INFERENCE_STACK_FILE lets the offline tools point elsewhere.
    return os.environ.get("ASCEND_INFERENCE_STACK_FILE") or str(STACKS_DIR / f"Pulumi.{stack}.yaml")


def run() -> None:
    from components import cycle_check, source_positions
    from components.common import StackRunError, begin_run

    cycle_check.install()
    source_positions.install()
    begin_run()
    try:
        _run()
    except StackError as error:
        if isinstance(error, StackRunError):
            raise
        # Same lines as `python -m ascendctl validate`, without a traceback.
        raise StackRunError(error.problems) from None


def _run() -> None:
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
    key_name = loaded.spec.ssh.private_key_secret
    private_key = config.get_secret(key_name)
    if private_key is None:
        raise StackError([Problem(file, f"{NAMESPACE}:{key_name}", "secret not set",
                                  f"run `pulumi config set --secret {NAMESPACE}:{key_name} < ~/.ssh/id_ed25519`")])
    # The runbook defaults the stack keeps on purpose (no API key, ...):
    # named at every run, as `python -m ascendctl preview` names them.
    for line in loaded.spec.insecure_warnings():
        pulumi.log.warn(line)
    # Secrets the engine reads from its environment (engine.secret_env) and
    # its serving API key (engine.api_key_secret).
    engine_secrets: dict[str, pulumi.Output[str]] = {}
    plugin = loaded.spec.engine_plugin
    for secret_key in sorted(set(loaded.spec.engine.secret_env.values()) | set(plugin.secret_keys(loaded.spec))):
        value = config.get_secret(secret_key)
        if value is None:
            raise StackError([Problem(file, f"{NAMESPACE}:{secret_key}", "secret not set",
                                      f"run `pulumi config set --secret {NAMESPACE}:{secret_key}`")])
        engine_secrets[secret_key] = value
    # The hub token model.source.token_secret names (sent on the download's stdin).
    hub_token = None
    if token_key := loaded.spec.model.source.token_secret:
        hub_token = config.get_secret(token_key)
        if hub_token is None:
            raise StackError([Problem(file, f"{NAMESPACE}:{token_key}", "secret not set",
                                      f"run `pulumi config set --secret {NAMESPACE}:{token_key}` (the hub token)")])
    deployment = Deployment(stack, DeploymentArgs(loaded, private_key, engine_secrets, hub_token))
    pulumi.export("endpoint", deployment.endpoint)
    pulumi.export("world_size", deployment.world_size)
    pulumi.export("rank_table_digest", deployment.rank_table_digest)
    pulumi.export("node_facts", deployment.node_facts)
    pulumi.export("images", deployment.image_facts)
    pulumi.export("smoke_reply", deployment.smoke_reply)
    if deployment.gpustack is not None:
        pulumi.export("gpustack_admin_password", deployment.gpustack.admin_password)


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
