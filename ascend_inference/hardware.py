"""Hardware profiles: what one Atlas server of each kind brings to the plan.

Numbers are per server. `device_memory_gb` is HBM per NPU chip as `npu-smi info`
reports it (65536 MB on 910B). The Atlas 300I Duo card carries two 310P3 chips
with 48 GB each (the 96 GB card), four cards per server, so 8 chips, as runbook
003 uses (`DEVICE_NUM_PER_NODE=8`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    chip: str
    devices_per_node: int
    device_memory_gb: int
    # The HCCL rank-table "version" the chip generation reads (A2: "1.0").
    rank_table_version: str
    # Whether MindIE's multi-node service (rank table + daemons) runs on it.
    mindie_multinode: bool
    # Prefix of the chip name in `npu-smi info`'s Name column (910B2, 910B3, 310P3):
    # facts.check_node refuses a node whose NPUs lack it (a wrong profile).
    npu_smi_name_prefix: str


PROFILES: dict[str, HardwareProfile] = {
    "atlas-800i-a2": HardwareProfile("atlas-800i-a2", "910B", 8, 64, "1.0", True, "910B"),
    "atlas-800t-a2": HardwareProfile("atlas-800t-a2", "910B3", 8, 64, "1.0", True, "910B"),
    "atlas-300i-duo": HardwareProfile("atlas-300i-duo", "310P3", 8, 48, "1.0", False, "310P"),
}
