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
    # Chips (dies) per NPU id as `npu-smi info` lists them; each chip is one
    # device a stack uses: one HCCL rank, one /dev/davinciN, one `hccn_tool -i N`
    # device. A2: 1; 300I Duo: 2 (a card shows two 310P3 chips; an Atlas 300I
    # Pro, one); A3: 2 dies per NPU. facts.check_node refuses another count.
    chips_per_npu: int = 1
    # Whether preflight reads `npu-smi info -t spod-info -i NPU -c CHIP` for
    # every die (SDID, Super Pod ID, Server Index: the rank table 1.2 fields).
    # Only the 910_93 chips (Atlas A3) answer it; the others print "This
    # device does not support querying spod-info."
    spod_info: bool = False
    # Which network checks apply (see NetworkChecks); A2 servers by default.
    network: NetworkChecks = field(default=ROCE_FABRIC)

    @property
    def npus_per_node(self) -> int:
        return self.devices_per_node // self.chips_per_npu


PROFILES: dict[str, HardwareProfile] = {
    "atlas-800i-a2": HardwareProfile("atlas-800i-a2", "910B", 8, 64, "1.0", True, "910B"),
    "atlas-800t-a2": HardwareProfile("atlas-800t-a2", "910B3", 8, 64, "1.0", True, "910B"),
    # 4 cards x 2 chips; an Atlas 300I Pro (one 310P3 per card) is refused by the chip count.
    "atlas-300i-duo": HardwareProfile("atlas-300i-duo", "310P3", 8, 48, "1.0", False, "310P",
                                      network=NO_FABRIC, chips_per_npu=2),
}

# Atlas A3 (chip 910_93): 8 NPUs of 2 dies per server, `npu-smi info` names
# each die "Ascend910" and shows 65536 MB HBM on each (docs/formats.md §1c);
# HCCL ranks, /dev/davinci0..15 and `hccn_tool -i 0..15` count the 16 dies
# (vLLM-Ascend's DeepSeek-R1 guide: "1 Atlas 800 A3 (64G x 16)"; the A3
# hccn_tool guide: "-i ... Atlas 800I A3 ...: 0~15"). Rank table "1.2"
# (CANN's HCCL guide, A3): super_device_id per die, host_ip per server,
# super_pod_list. The SuperPoD profile is the compute node of an Atlas 900
# A3 SuperPoD: the same 16 dies and checks. MindCluster's documentation calls
# the 800I A3 and 800T A3 "SuperPoD servers" too: servers of one super pod
# talk over HCCS, so their SDIDs must differ (facts.check_super_pods).
PROFILES.update({
    "atlas-800i-a3": HardwareProfile("atlas-800i-a3", "Ascend910", 16, 64, "1.2", True, "Ascend910",
                                     chips_per_npu=2, spod_info=True),
    "atlas-800t-a3": HardwareProfile("atlas-800t-a3", "Ascend910", 16, 64, "1.2", True, "Ascend910",
                                     chips_per_npu=2, spod_info=True),
    "atlas-900-a3-superpod": HardwareProfile("atlas-900-a3-superpod", "Ascend910", 16, 64, "1.2", True,
                                             "Ascend910", chips_per_npu=2, spod_info=True),
})
