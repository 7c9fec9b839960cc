"""Hardware profiles: what one Atlas server of each kind brings to the plan.

Numbers are per server. `device_memory_gb` is HBM per NPU chip as `npu-smi info`
reports it (65536 MB on 910B). The Atlas 300I Duo card carries two 310P3 chips
with 48 GB each (the 96 GB card), four cards per server, so 8 chips, as runbook
003 uses (`DEVICE_NUM_PER_NODE=8`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NetworkChecks:
    """Which of the runbooks' network checks apply to a server generation.

    Each flag names one check of runbook 001 §3.1 / 004 §5.1; where it is off,
    preflight does not run the tool call behind it and nothing judges it.
    What healthy looks like (docs/formats.md §2):

    roce_links   `hccn_tool -i N -link -g` is `link status: UP` and
                 `-net_health -g` is `net health status: Success`
    device_ips   `-ip -g` prints an IPv4 `ipaddr:` (and equals nodes[].device_ips)
    tls          `-tls -g` switch equals network.hccl_tls on every device and node
    lldp         `-lldp -g` names a switch port (`Ifname:`): a neighbour is cabled
    netdetect    `-netdetect -g` prints a `netdetect address:`
    gateway      `-gateway -g` prints a `default gateway:` inside the device's
                 subnet, and `-ping -g address <gateway>` from the device answers
    peer_ping    every device pings device d of its peers (`-ping`)

    HCCS (the links between the chips of one server) has no flag: no tool
    output of it is read here, so nothing could judge it.
    """

    roce_links: bool = True
    device_ips: bool = True
    tls: bool = True
    lldp: bool = True
    netdetect: bool = True
    gateway: bool = True
    peer_ping: bool = True

    @property
    def fabric(self) -> bool:
        """Whether the server has a RoCE fabric that preflight reads with hccn_tool."""
        return any((self.roce_links, self.device_ips, self.tls, self.lldp, self.netdetect, self.gateway,
                    self.peer_ping))


# The Atlas 800I/800T A2: eight 910B NPUs, each with a 200GE RoCE port
# (runbooks 000, 001, 002, 004 check all of these).
ROCE_FABRIC = NetworkChecks()
# The Atlas 300I Duo: PCIe cards without RoCE ports. Runbook 003 has no hccn
# step and sets MS_DEV_RUNTIME_CONF=only_local_comm:true; nodes talk over the
# host network (Ray, socket_ifname) only.
NO_FABRIC = NetworkChecks(roce_links=False, device_ips=False, tls=False, lldp=False, netdetect=False,
                          gateway=False, peer_ping=False)


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
    # Which network checks apply (see NetworkChecks); A2 servers by default.
    network: NetworkChecks = field(default=ROCE_FABRIC)
    # Chips per NPU id in `npu-smi info` (the 300I Duo lists each card twice,
    # chip 0 and chip 1). devices_per_node counts chips: the devices a stack
    # uses. None: not checked (a profile that does not say).
    chips_per_card: int | None = None

    @property
    def cards_per_node(self) -> int | None:
        return self.devices_per_node // self.chips_per_card if self.chips_per_card else None


PROFILES: dict[str, HardwareProfile] = {
    "atlas-800i-a2": HardwareProfile("atlas-800i-a2", "910B", 8, 64, "1.0", True, "910B", chips_per_card=1),
    "atlas-800t-a2": HardwareProfile("atlas-800t-a2", "910B3", 8, 64, "1.0", True, "910B", chips_per_card=1),
    # 4 cards x 2 chips; an Atlas 300I Pro (one 310P3 per card) is refused by the chip count.
    "atlas-300i-duo": HardwareProfile("atlas-300i-duo", "310P3", 8, 48, "1.0", False, "310P",
                                      network=NO_FABRIC, chips_per_card=2),
}
