"""Emulated Ascend NPU cluster for trying the Pulumi program before real servers.

Test tooling, not a product path: users deploy with the Pulumi CLI onto real
nodes. See emulator/README.md; the command line is `python -m emulator --help`.

Public API (for tests and the real-CLI user path, emulator/userpath.py):

    Cluster.up(n, state_dir=None, *, prefix="ascemu", hostnames=None,
               duplicate_hostname=False, layout=None, hardware=None, log=print) -> Cluster
    Cluster.load(state_dir=None) -> Cluster
    Cluster.down_state_dir(state_dir=None, *, log=print) -> list[str]   # works after a partial up
    cluster.down(log=print) -> list[str]
    cluster.nodes[i].name / .address / .hostname / .device_ips / .netns / .holder_pid
                    / .ssh_target / .docker_host / .run_dir
    cluster.node("node0" | 0 | "198.18.0.10") -> Node
    cluster.ssh_key_path, cluster.known_hosts_path, cluster.ssh_config_path, cluster.ssh_opts()
    cluster.ssh(node, "cmd") -> CompletedProcess         # real ssh
    cluster.exec(node, "cmd" | [argv]) -> CompletedProcess  # nsenter, no ssh
    cluster.docker_env(node) -> env for `docker` over ssh://
    cluster.set_fault(node, **faults) -> dict ; cluster.clear_faults(node) ; cluster.faults(node)
    node.exec("cmd") ; node.ssh(cluster.ssh_config_path, "cmd") ; node.is_running() ; node.problems()
    cluster.health_problems() -> list[str] ; cluster.describe() -> dict

    image.IMAGE, image.base_mounts(), image.base_docker_args(), image.base_pulumi_volumes(),
    image.privileged_substitute()

Modules, split by job as kind splits a provider: cluster.py (the record in
cluster.json and the object above), provision.py (making and removing nodes),
node.py (the node handle: exec, ssh, health), faults.py (injecting and
clearing faults); network.py, nodefs.py, image.py and holder.py are the
pieces provisioning uses.
"""

# The names above load on first use (PEP 562): the stand-in plugins
# (emulator/plugins), which the engine starts once per provider per operation,
# import this package and need none of it; loading the cluster modules cost
# each plugin start about 0.2 s of CPU.
_LAZY = {
    "Cluster": "cluster", "DEFAULT_STATE_DIR": "cluster",
    "FAULT_KEYS": "faults", "FaultError": "faults",
    "IMAGE": "image", "base_docker_args": "image", "base_mounts": "image", "base_pulumi_volumes": "image",
    "privileged_substitute": "image",
    "ClusterError": "node", "Node": "node",
    "Hardware": "nodefs", "Layout": "nodefs",
}

__all__ = ["Cluster", "ClusterError", "Node", "DEFAULT_STATE_DIR", "FAULT_KEYS", "FaultError", "IMAGE",
           "Hardware", "Layout", "base_docker_args", "base_mounts", "base_pulumi_volumes", "image",
           "privileged_substitute"]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name == "image":
        return importlib.import_module(f"{__name__}.image")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
