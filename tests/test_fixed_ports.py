"""The fixed ports the test servers listen on lie outside the kernel's
ephemeral range: inside a fresh namespace nothing listens on them, but a port
in that range can be the source port of an outgoing connection made just
before the server binds it (GPUStack's pool to PostgreSQL took 48080 once)."""
from __future__ import annotations

from pathlib import Path

import pytest

import emulator.gpustack as emulated_gpustack
import emulator.node as emulated_node
import tests.realsoftware.conftest as realsoftware

pytestmark = pytest.mark.pure

FIXED = {
    "tests/realsoftware: GPUStack API": realsoftware.API_PORT,
    "tests/realsoftware: GPUStack --port": realsoftware.PORT,
    "tests/realsoftware: PostgreSQL": realsoftware.PG_PORT,
    "emulator: GPUStack API": emulated_gpustack.API_PORT,
    "emulator: GPUStack --port": emulated_gpustack.API_PORT + 1,
    "emulator: GPUStack worker": emulated_gpustack.WORKER_PORT,
    "emulator: PostgreSQL": emulated_gpustack.PG_PORT,
    "emulator: sshd": emulated_node.SSH_PORT,
}


def test_no_fixed_port_is_in_the_ephemeral_range():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    inside = {what: port for what, port in FIXED.items() if low <= port <= high}
    assert not inside, f"in the ephemeral range {low}-{high}: {inside}"
