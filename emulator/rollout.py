"""A stack pointed at an emulated cluster, rolled out by the executor.

    from emulator import Cluster
    from emulator.rollout import StackRollout
    rollout = StackRollout(cluster, "tp16-vllm-mindspore", state_file)
    report = rollout.up()                         # preflight ... smoke test, for real
    report = rollout.up(["engine.max_num_seqs=128"])
    rollout.destroy()

The stack keeps every setting of its runbook; only what names the machines
changes: node hosts, hostnames and device IPs come from the cluster, the model
path is the cluster's fixture, a MindFormers yaml read from the image is the
one the emulator's image ships, the SSH key is the cluster's (as a secret).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.stack import config_for, loaded_with_config
from ascendctl.preview.values import Secret
from emulator.executor import Executor, Report
from emulator.image import MINDFORMERS_YAML
from emulator.userpath import node_host_key, provide_engine_version, provide_image_tar  # noqa: F401 (re-exported)

MODEL_FIXTURE = "/data/models/deepseek-r1"


def emulated_config(loaded: LoadedStack, cluster, *, model_path: str = MODEL_FIXTURE) -> dict:
    config = copy.deepcopy(loaded.raw_config)
    nodes = []
    for node in cluster.nodes:
        entry = {"name": node.name, "host": node.address, "hostname": node.hostname,
                 # The node's real sshd host key (emulator/provision.py makes it):
                 # the emulated rollout pins keys as a real stack must.
                 "host_key": node_host_key(node)}
        if loaded.spec.profile.network.device_ips:
            # A profile without a fabric (300I Duo) has none to declare.
            entry["device_ips"] = list(node.device_ips)
        nodes.append(entry)
    config[f"{NAMESPACE}:nodes"] = nodes
    model = dict(config[f"{NAMESPACE}:model"])
    model["path"] = model_path
    config[f"{NAMESPACE}:model"] = model
    engine = loaded.spec.engine
    if getattr(engine, "mindformers_model_config", None) and not getattr(engine, "write_mindformers_yaml", True):
        # Runbook 000's yaml path is a placeholder for a MindFormers checkout,
        # as its model path is: point it at the predict yaml the emulator's
        # image ships (container-check refuses a path that is not there).
        config[f"{NAMESPACE}:engine"] = {**config[f"{NAMESPACE}:engine"],
                                         "mindformers_model_config": MINDFORMERS_YAML}
    return config





class StackRollout:
    def __init__(self, cluster, stack: str, state_file: Path, *, log: Callable[[str], None] = print,
                 model_path: str = MODEL_FIXTURE):
        self.cluster = cluster
        self.base = load_stack(stack)
        self.config = emulated_config(self.base, cluster, model_path=model_path)
        self.log = log
        from emulator import image as imagelib

        self.executor = Executor(
            Path(state_file),
            extra_mounts=_base_mount_flags(imagelib.base_docker_args()),
            # The sandbox refuses --privileged (emulator/README.md says why).
            privileged_caps=imagelib.privileged_substitute()["docker_run_args"],
            ssh_options=[o for o in cluster.ssh_opts() if o != "-i" and not o.endswith("id_ed25519")],
            log=log)
        self.executor.default_key = str(cluster.ssh_key_path)
        # The node checks run the system ssh, as docker's ssh:// does: the cluster's wrapper knows the key.
        self.executor.local_env = cluster.docker_env(cluster.nodes[0].name)

    def loaded(self, changes: list[str] | None = None) -> tuple[LoadedStack, dict]:
        config = self.config
        for change in changes or []:
            config = apply_change(config, change, self.base.file)
        return loaded_with_config(self.base, config), config

    def up(self, changes: list[str] | None = None) -> Report:
        import os

        from components.program import run

        loaded, config = self.loaded(changes)
        # What a registry would hold for the stack (shared with emulator.userpath).
        provide_engine_version(self.cluster, loaded, self.log)
        provide_image_tar(self.cluster, loaded, self.log)
        values = config_for(loaded, config)
        values[f"{NAMESPACE}:{loaded.spec.ssh.private_key_secret}"] = Secret(self.cluster.ssh_key_path.read_text())
        os.environ["ASCEND_INFERENCE_STACK_FILE"] = loaded.file
        # The executor runs the program in preview mode; this rollout really
        # changes the nodes, so the program checks host keys as `pulumi up`
        # does (for this run only: previews in the same process stay previews).
        os.environ["ASCEND_INFERENCE_CHECK_HOST_KEYS"] = "1"
        try:
            return self.executor.up(run, values, stack=loaded.name)
        finally:
            os.environ.pop("ASCEND_INFERENCE_CHECK_HOST_KEYS", None)

    def destroy(self) -> Report:
        return self.executor.destroy()

    def refresh(self) -> Report:
        return self.executor.refresh()

    def arrange_gpustack(self):
        """For a GPUStack stack: the nodes get what the program's own GPUStack containers need
        (emulator/gpustack.py ProgramGpustack) and the executor adds its mounts and env to them.
        Returns the arrangement; its stop() ends the database it started."""
        from emulator import gpustack

        c = self.base.spec.container
        arranged = gpustack.ProgramGpustack(self.cluster, c.image, c.name)
        arranged.arrange()
        self.executor.container_extras[c.image] = arranged.container_extras()
        return arranged




def _base_mount_flags(args: list[str]) -> list[str]:
    """`host:container[:ro]` strings of the emulator's base mounts."""
    return [args[i + 1] for i, a in enumerate(args) if a == "-v"]
