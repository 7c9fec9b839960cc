"""SSH host keys: which the stack pins, the known_hosts lines built from
them, and the check that a node still offers its pinned key.

No Pulumi import. `scan` runs `ssh-keyscan` (OpenSSH) on the control host
with a bounded timeout per host; it is used by `ascendctl hostkeys` and by
the program before `pulumi up` touches a node (docs/security.md).
"""
from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable

from ascend_inference.errors import Problem
from ascend_inference.spec import JUMP_HOST, NAMESPACE, ClusterSpec, host_key_fingerprint, host_key_line

# Seconds ssh-keyscan waits for one host (its -T); hosts are scanned in parallel.
SCAN_TIMEOUT_S = 5
# The alias the node-to-master copies check the master's key under
# (`ssh -o HostKeyAlias=...`), whatever address or port they reach it at.
MASTER_ALIAS = "ascend-inference-master"


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: bare for port 22, else `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def jump_endpoint(spec: ClusterSpec) -> tuple[str, int] | None:
    if not spec.ssh.jump_host:
        return None
    match = JUMP_HOST.match(spec.ssh.jump_host)
    assert match is not None, "the spec checks jump_host's form"
    return match["host"], int(match["port"] or 22)


def known_hosts_text(spec: ClusterSpec) -> str:
    """known_hosts lines for every pinned key: each node at its SSH host and
    port, and the jump host."""
    lines = []
    for node in spec.nodes:
        if node.host_key:
            lines.append(f"{known_hosts_name(node.host, node.port or spec.ssh.port)} {node.host_key}")
    jump = jump_endpoint(spec)
    if jump and spec.ssh.jump_host_key:
        lines.append(f"{known_hosts_name(*jump)} {spec.ssh.jump_host_key}")
    return "".join(line + "\n" for line in lines)


def insecure_host_keys_warning(file: str) -> str:
    """What `preview` (ours and Pulumi's) prints for the opt-out."""
    return (f"{file}: {NAMESPACE}:ssh.insecure_ignore_host_keys is true: SSH host keys are not checked, so whoever "
            "answers at a node's address gets the stack's root key and its secrets (a throwaway lab only; pin the "
            "keys with `python3 -m ascendctl hostkeys --stack NAME --write`)")


def missing_host_keys(spec: ClusterSpec, file: str) -> list[Problem]:
    """Every connection needs a pinned key, unless the stack opts out."""
    if spec.ssh.insecure_ignore_host_keys:
        return []
    fix = ("run `python3 -m ascendctl hostkeys --stack NAME`, compare the fingerprints with the nodes' "
           "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on each), then add `--write`; a throwaway lab "
           "may set ssh.insecure_ignore_host_keys: true instead")
    problems = [Problem(file, f"{NAMESPACE}:nodes[{i}].host_key", f"no SSH host key pinned for {node.name}", fix)
                for i, node in enumerate(spec.nodes) if not node.host_key]
    if spec.ssh.jump_host and not spec.ssh.jump_host_key:
        problems.append(Problem(file, f"{NAMESPACE}:ssh.jump_host_key", "no SSH host key pinned for the jump host",
                                fix))
    return problems


def scan(endpoints: Iterable[tuple[str, int]], key_type: str | None = None,
         timeout: int = SCAN_TIMEOUT_S) -> dict[tuple[str, int], list[str]]:
    """`type base64` keys each (host, port) offers; hosts that do not answer
    within `timeout` seconds are missing from the result."""
    if shutil.which("ssh-keyscan") is None:
        raise FileNotFoundError("ssh-keyscan (OpenSSH client) is not installed")
    by_port: dict[int, list[str]] = defaultdict(list)
    for host, port in endpoints:
        by_port[port].append(host)
    found: dict[tuple[str, int], list[str]] = defaultdict(list)
    for port, hosts in by_port.items():
        argv = ["ssh-keyscan", "-T", str(timeout), "-p", str(port)]
        if key_type:
            argv += ["-t", key_type]
        # ssh-keyscan reads hosts from stdin with `-f -`: never an option.
        done = subprocess.run([*argv, "-f", "-"], input="\n".join(hosts) + "\n", capture_output=True, text=True,
                              timeout=timeout * (len(hosts) + 2) + 30, check=False)
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) < 3 or line.startswith("#"):
                continue
            name = parts[0]
            host = name[1:].rsplit("]:", 1)[0] if name.startswith("[") else name
            try:
                found[(host, port)].append(host_key_line(" ".join(parts[1:3])))
            except Exception:  # noqa: BLE001 - a key type we do not pin (e.g. sk-*): skip it
                continue
    return dict(found)


def changed_host_keys(spec: ClusterSpec, timeout: int = SCAN_TIMEOUT_S) -> list[str]:
    """One line per node that answers with another key of its pinned key's
    type: both fingerprints. Nodes behind a jump host cannot be scanned from
    here; pulumi-command's own host_key check refuses them on connection."""
    if spec.ssh.jump_host:
        return []
    wanted: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
    for node in spec.nodes:
        if node.host_key:
            key_type = node.host_key.split()[0]
            wanted[key_type].append((node.host, node.port or spec.ssh.port, node.name, node.host_key))
    lines = []
    for key_type, nodes in wanted.items():
        offered = scan([(host, port) for host, port, _, _ in nodes], key_type, timeout)
        for host, port, name, pinned in nodes:
            keys = offered.get((host, port))
            if keys and pinned not in keys:
                lines.append(
                    f"node {name}: SSH host key changed: {host}:{port} offers {key_type} "
                    f"{host_key_fingerprint(keys[0])}, the stack pins {host_key_fingerprint(pinned)} "
                    f"(fix: nothing was run on {name}; if the node was reinstalled, confirm the new key with its "
                    "administrator and run `python3 -m ascendctl hostkeys --stack NAME --write`, otherwise "
                    "someone may be answering in its place)")
    return lines


# --- `ascendctl hostkeys`: collect, show, write ------------------------------------

# The key type asked for first: what `ssh` itself prefers.
PREFERRED_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def preferred(keys: list[str]) -> str | None:
    for key_type in PREFERRED_TYPES:
        for key in keys:
            if key.split()[0] == key_type:
                return key
    return None


def endpoints(spec: ClusterSpec) -> list[tuple[str, str, int]]:
    """(what, host, port) of every SSH endpoint: the nodes, then the jump host."""
    found = [(f"nodes[{i}] {node.name}", node.host, node.port or spec.ssh.port) for i, node in enumerate(spec.nodes)]
    jump = jump_endpoint(spec)
    if jump:
        found.append(("ssh.jump_host", *jump))
    return found


def write_host_keys(text: str, keys: dict[str, str]) -> str:
    """The stack file's text with `host_key` set in every node mapping named
    in `keys` (by node index as "nodes[i]", or "ssh.jump_host"), comments and
    layout kept: each value is inserted or replaced as one YAML line."""
    import json

    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines = text.splitlines(keepends=True)

    def mapping_at(path: str) -> yaml.MappingNode | None:
        assert isinstance(root, yaml.MappingNode)
        config = next((v for k, v in root.value if k.value == "config"), None)
        if not isinstance(config, yaml.MappingNode):
            return None
        section, _, rest = path.partition(".")
        if section.startswith("nodes["):
            nodes = next((v for k, v in config.value if k.value == f"{NAMESPACE}:nodes"), None)
            index = int(section[len("nodes["):-1])
            node = nodes.value[index] if isinstance(nodes, yaml.SequenceNode) else None
            return node if isinstance(node, yaml.MappingNode) else None
        found = next((v for k, v in config.value if k.value == f"{NAMESPACE}:{section}"), None)
        return found if isinstance(found, yaml.MappingNode) else None

    replaced: list[tuple[int, int, int, str]] = []
    inserted: list[tuple[int, str]] = []
    for where, key in keys.items():
        mapping = mapping_at(where)
        field = "host_key" if where.startswith("nodes[") else "jump_host_key"
        if mapping is None or mapping.flow_style:
            raise ValueError(f"{where}: not a block mapping in the stack file; add `{field}: {key}` by hand")
        value = json.dumps(key)
        existing = next((v for k, v in mapping.value if k.value == field), None)
        if existing is not None:
            replaced.append((existing.start_mark.line, existing.start_mark.column, existing.end_mark.column, value))
        else:
            first_key, first_value = mapping.value[0]
            one_line = first_value.end_mark.line == first_key.start_mark.line
            if not (isinstance(first_value, yaml.ScalarNode) and one_line):
                raise ValueError(f"{where}: its first key's value spans lines; add `{field}: {key}` by hand")
            column = first_key.start_mark.column
            inserted.append((first_key.start_mark.line, " " * column + f"{field}: {value}\n"))
    for line, start, end, value in replaced:
        lines[line] = lines[line][:start] + value + lines[line][end:]
    for line, new in sorted(inserted, reverse=True):
        lines.insert(line + 1, new)
    return "".join(lines)
