"""What a stack value may be when it ends up on a command line, in a path
the program writes, chmods or removes, or in an error message.

Pure: no Pulumi import. Each check raises `invalid` (a pydantic error with
its fix) so that a field validator reports one line with file, key and fix.
The reasons are in docs/security.md.
"""
from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import stat
from pathlib import Path

from ascend_inference.model_base import invalid

# --- credentials written where clear values go ------------------------------

# Token shapes of the services a stack is likely to name (Hugging Face,
# GitHub, OpenAI-style API keys, GitLab, Slack, AWS access key ids). Bounded
# by non-token characters so that a path such as /data/sk-models is not one.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|sk-[A-Za-z0-9_-]{20,}|glpat-[A-Za-z0-9_-]{16,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16})")
# `scheme://user:password@host`: a password in a URL (a user alone is not a secret).
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# How much of a secret-looking value an error may quote.
SHOWN_PREFIX = 6


def credential_kind(text: str) -> str | None:
    """What kind of credential `text` holds, or None."""
    if _PRIVATE_KEY.search(text):
        return "a private key"
    if _URL_USERINFO.search(text):
        return "a password in a URL (user:password@)"
    if _TOKEN.search(text):
        return "an access token"
    return None


def masked(text: str) -> str:
    """`text` with every credential-looking part cut to a short prefix, for
    error messages and printouts."""
    text = re.sub(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                  r"-----BEGIN \1PRIVATE KEY-----...", text)
    text = _URL_USERINFO.sub(lambda m: m.group(0).split("://", 1)[0] + "://***@", text)
    return _TOKEN.sub(lambda m: m.group(0)[:SHOWN_PREFIX] + "...", text)


# --- paths on the nodes -------------------------------------------------------

# Directories whose loss or re-permissioning breaks the system: the program
# runs `chmod -R`, `chown`, `rm` and `rsync -a` on some stack paths as root.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
    "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/local", "/usr/sbin", "/usr/share", "/usr/include",
    "/usr/local/bin", "/usr/local/lib", "/usr/local/Ascend", "/var/lib", "/var/log", "/var/run", "/var/tmp",
    "/etc/ssh", "/etc/systemd", "/var/lib/docker",
})
# Pseudo file systems: nothing of the program's belongs there.
_PSEUDO = ("/proc/", "/sys/", "/dev/")


def node_path(value: str, *, what: str = "path") -> str:
    """An absolute path on a node, as written: no `..`, no `.` parts, no
    doubled or trailing slash, no control character, no leading `-`."""
    if not value.strip():
        raise invalid("is empty", f"write an absolute {what}, e.g. /data/models/DeepSeek-R1")
    no_credential(value)
    shown = masked(value)[:120]
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid(f"{shown!r} contains a control character (newline, tab, ...)",
                      f"write the {what} on one line, without control characters")
    if not value.startswith("/"):
        raise invalid(f"'{shown}' is not an absolute path (it would depend on the node's working directory)",
                      f"write an absolute {what} starting with /")
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise invalid(f"'{shown}' has a `..` or `.` part, so it may name another place than it reads",
                      f"write the {what} without `..` or `.`: {posixpath.normpath(value)}")
    normal = posixpath.normpath(value)
    if normal != value and value != "/":
        raise invalid(f"'{shown}' is not in normal form", f"write it as {normal}")
    return value


def owned_path(value: str, *, what: str = "directory") -> str:
    """`node_path`, for a path the program chmods, chowns, fills with rsync or
    removes as root: never `/`, a system directory or a pseudo file system."""
    node_path(value, what=what)
    if value in SYSTEM_DIRS or value.startswith(_PSEUDO) or value in ("/proc", "/sys", "/dev"):
        raise invalid(f"'{value}' is a system directory; the program changes permissions and files under this "
                      "path as root", f"use a {what} of its own, e.g. /data/models/DeepSeek-R1")
    return value


def owned_file(value: str, *, what: str = "file") -> str:
    """`node_path`, for a file the program writes as root: not in `/`, a
    system directory or a pseudo file system (`/etc/passwd` is refused)."""
    node_path(value, what=what)
    parent = posixpath.dirname(value)
    if parent in SYSTEM_DIRS or value.startswith(_PSEUDO):
        raise invalid(f"'{value}' is in the system directory {parent}; the program writes this file as root",
                      f"put the {what} in a directory of its own, e.g. /data/hm/")
    return value


# --- names that reach a command line -----------------------------------------

# A login name as useradd takes it (and nothing ssh could read as an option).
LOGIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
# A docker image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                   r"(?:@sha256:[0-9a-f]{64})?$")
# A DNS name (RFC 1123 labels); never starts with `-`.
DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# A docker named volume.
VOLUME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def no_credential(value: str) -> None:
    """A credential pasted into a field with a format check: said as such,
    with the secret's fix, never quoted."""
    kind = credential_kind(value)
    if kind == "a private key":
        raise invalid("holds a private key, written in clear in the stack file",
                      "remove it and run `pulumi config set --secret ascend-inference:sshPrivateKey < key`")
    if kind:
        raise invalid(f"holds {kind}, written in clear in the stack file",
                      "store it as a Pulumi secret (`pulumi config set --secret ascend-inference:<name>`)")


def login_name(value: str) -> str:
    no_credential(value)
    if not LOGIN.match(value):
        raise invalid(f"'{masked(value)[:40]}' is not a login name (letters, digits, `_.-`, not starting with `-`)",
                      "write the account's name, e.g. root or admin")
    return value


def image_reference(value: str) -> str:
    no_credential(value)
    if not IMAGE.match(value):
        raise invalid(f"'{masked(value)[:80]}' is not a docker image reference",
                      "write registry/path:tag (e.g. swr.cn-south-1.myhuaweicloud.com/ascendhub/mindie:2.0.RC2), "
                      "without spaces, quotes, `$` or a leading `-`")
    return value


def volume_or_path(value: str) -> str:
    """The host side of a mount: a named volume or a normal absolute path."""
    if value.startswith("/"):
        return node_path(value, what="host path")
    if not VOLUME.match(value):
        raise invalid(f"'{masked(value)[:80]}' is neither an absolute path nor a docker volume name",
                      "write /absolute/host/path or a volume name (letters, digits, `_.-`)")
    return value


def _unusable_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "is the unspecified address (it means every interface, not one machine)"
    if ip.is_loopback:
        return "is a loopback address (every node would reach itself)"
    if ip.is_multicast:
        return "is a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"is the IPv4 address {ip.ipv4_mapped} written as IPv6 (the same node could then be listed twice)"
    return None


def host_name(value: str) -> str:
    """An SSH host: an IP address (not unspecified, loopback, multicast or
    IPv4-mapped) or a DNS name; nothing ssh or a shell could read otherwise."""
    no_credential(value)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if not DNS_NAME.match(value):
            raise invalid(f"'{masked(value)[:80]!s}' is neither an IP address nor a DNS name",
                          "write an IP address or a host name (letters, digits, `.-`, no spaces, not starting "
                          "with `-`)") from None
        return value
    why = _unusable_ip(ip)
    if why:
        raise invalid(f"'{value}' {why}", "write the address the control host reaches this node at")
    if str(ip) != value:
        raise invalid(f"'{value}' is not in the address's normal form", f"write it as {ip}")
    return value


def cluster_ip(value: str) -> str:
    """A node's address on the cluster network: an IPv4 address the nodes use
    to reach each other (rank tables, Ray, URLs such as http://IP:PORT)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise invalid(f"'{masked(value)[:80]}' is not an IP address",
                      "write the node's IPv4 address on the socket interface") from None
    why = _unusable_ip(ip)
    if why:
        raise invalid(f"'{value}' {why}", "write the node's own address on the cluster network")
    if ip.version == 6:
        raise invalid(f"'{value}' is an IPv6 address; the rank tables, Ray and the serving URLs are built "
                      "for IPv4 cluster addresses", "write the node's IPv4 address (`ip:`); `host:` may stay IPv6")
    return value


# --- files the user brings ------------------------------------------------------

def beside_stack_file(stack_file: str, path: str) -> Path:
    """A file the stack names on the control host (a brought rank table, the
    CA the API client checks with): a relative path is relative to the stack
    file's directory, so the same stack finds it from any working directory."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else Path(stack_file).resolve().parent / given


class NotARegularFile(OSError):
    """A device, FIFO or directory where a file is expected, or a file over its cap."""


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them. Opened without
    blocking (a FIFO would wait for a writer forever) and checked to be a
    regular file before reading (/dev/zero never ends)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{path} is not a regular file (a device, FIFO or directory)")
        if info.st_size > limit:
            raise NotARegularFile(f"{path} is {info.st_size:,} bytes, more than the {limit:,} bytes allowed")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise NotARegularFile(f"{path} grew past the {limit:,} bytes allowed while being read")
    return data
