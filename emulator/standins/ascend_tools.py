#!/usr/bin/env python3
"""Emulator stand-in for Huawei's `npu-smi` and `hccn_tool` (one file, two names).

Installed on every emulated node as /usr/local/bin/npu-smi,
/usr/local/sbin/npu-smi and /usr/local/Ascend/driver/tools/hccn_tool; which
tool it is follows from the name it was called by. Stdlib only: it also runs
inside containers that bind-mount those paths.

It prints the real tools' output formats, copied from the verbatim samples in
docs/formats.md (section numbers below). Lines marked "not verified" have
no verbatim sample there.

What it reports comes from the node:
  /run/ascemu/node.json    facts written by the emulator (chip, versions, IPs)
  /run/ascemu/faults.json  injected faults (see emulator/faults.py), re-read on
                           every call; `hccn_tool -tls -s` writes it back
  /etc/hccn.conf           device IP configuration, as the real tool keeps it
ASCEMU_RUN_DIR overrides /run/ascemu (used by the emulator's own tests).
"""

import fcntl
import io
import json
import os
import re
import sys

RUN_DIR = os.environ.get("ASCEMU_RUN_DIR", "/run/ascemu")
HCCN_CONF = os.environ.get("ASCEMU_HCCN_CONF", "/etc/hccn.conf")

# Per-device readings shaped like an idle 910B host (docs/formats.md §1a).
POWER = ["96.5", "98.7", "94.2", "91.5", "96.6", "96.0", "97.5", "93.8"]
TEMP = [36, 37, 35, 38, 36, 39, 35, 37]
HBM_USED = [3347, 3350, 3347, 3351, 3347, 3350, 3347, 3347]


class ToolError(Exception):
    pass


# --------------------------------------------------------------------------
# node facts and faults
# --------------------------------------------------------------------------

def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def as_text(raw):
    # Decoded and newline-translated as open(path) in text mode does, so what
    # is parsed is a function of the bytes alone (the answer file keeps them).
    return io.TextIOWrapper(io.BytesIO(raw)).read()


class Inputs:
    """One call's view of the node: the bytes of node.json, faults.json and
    hccn.conf, read once. Every answer is a function of these bytes (and of
    the arguments), which is what lets the answer file hold answers."""

    def __init__(self):
        self.node = read_bytes(os.path.join(RUN_DIR, "node.json"))
        self.faults_raw = read_bytes(os.path.join(RUN_DIR, "faults.json"))
        self.conf_raw = read_bytes(HCCN_CONF)

    def facts(self):
        if self.node is None:
            raise ToolError(
                f"emulator stand-in: {RUN_DIR}/node.json not found. Run this on an emulated node, or in a "
                "container started with the emulator's base mounts (emulator.image.base_mounts())")
        return json.loads(as_text(self.node))

    def faults(self):
        return {} if self.faults_raw is None else json.loads(as_text(self.faults_raw))

    def conf(self):
        conf = {}
        if self.conf_raw is not None:
            for line in as_text(self.conf_raw).split("\n"):  # the lines `for line in open(...)` gives
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    conf[k] = v
        return conf


def load_faults():
    try:
        with open(os.path.join(RUN_DIR, "faults.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def update_faults(change):
    """Read-modify-write faults.json under a lock (concurrent hccn_tool calls)."""
    with open(os.path.join(RUN_DIR, "faults.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        faults = load_faults()
        change(faults)
        tmp = os.path.join(RUN_DIR, f"faults.json.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(faults, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(RUN_DIR, "faults.json"))


def present_devices(facts, faults):
    missing = set(faults.get("missing_devices", []))
    return [d for d in range(facts["npu_count"]) if d not in missing]


def driver_version(facts, faults):
    return faults.get("driver_version", facts["driver_version"])


def health(dev, faults):
    return faults.get("unhealthy_devices", {}).get(str(dev), "OK")


# --------------------------------------------------------------------------
# npu-smi
# --------------------------------------------------------------------------

SOLID = "+" + "-" * 96 + "+"
THIN = "+" + "-" * 27 + "+" + "-" * 15 + "+" + "-" * 52 + "+"
THICK = "+" + "=" * 27 + "+" + "=" * 15 + "+" + "=" * 52 + "+"


def npu_smi_info(facts, faults):
    """`npu-smi info`: docs/formats.md §1a (one chip per NPU, 910B class)."""
    if facts.get("chips_per_npu", 1) > 1:
        return npu_smi_info_dies(facts, faults)
    version = driver_version(facts, faults)
    devices = present_devices(facts, faults)
    out = [SOLID,
           f"| npu-smi {version:<25}Version: {version:<53}|",
           THIN,
           "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
           "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
           THICK]
    for d in devices:
        i = d % len(POWER)
        top = f" {d:<6}{facts['chip_name']:<20}| {health(d, faults):<14}| {POWER[i]:<12}{TEMP[i]:<18}{0:<5}/ {0:<14}"
        bus = facts["bus_ids"][d % len(facts["bus_ids"])]
        bottom = f" {0:<26}| {bus:<14}| {0:<12}{0:<5}/ {0:<11}{HBM_USED[i]:<5}/ {facts['hbm_mb']:<14}"
        out += [f"|{top}|", f"|{bottom}|", THICK]
    out += [THIN,
            "| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |",
            THICK]
    for d in devices:
        out += [f"| {'No running processes found in NPU ' + str(d):<95}|", THICK]
    return "\n".join(out)


def npu_smi_info_dies(facts, faults):
    """`npu-smi info` of an Atlas A3: docs/formats.md §1c (npu-smi 25.2.0,
    `Chip  Phy-ID`, each NPU in two blocks, '-' power on the second die)."""
    version = driver_version(facts, faults)
    per_npu = facts["chips_per_npu"]
    out = [SOLID,
           f"| npu-smi {version:<25}Version: {version:<53}|",
           THIN,
           "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
           "| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
           THICK]
    for d in present_devices(facts, faults):
        npu, chip = divmod(d, per_npu)
        i = d % len(POWER)
        power = POWER[i] if chip == 0 else "-"
        top = f" {npu:<6}{facts['chip_name']:<20}| {health(d, faults):<14}| {power:<12}{TEMP[i]:<18}{0:<5}/ {0:<14}"
        bus = facts["bus_ids"][d % len(facts["bus_ids"])]
        bottom = f" {chip:<6}{d:<20}| {bus:<14}| {0:<12}{0:<5}/ {0:<11}{HBM_USED[i]:<5}/ {facts['hbm_mb']:<14}"
        out += [f"|{top}|", f"|{bottom}|", THICK if chip == per_npu - 1 else SOLID]
    out += [THIN,
            "| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |",
            THICK]
    for npu in sorted({d // per_npu for d in present_devices(facts, faults)}):
        out += [f"| {'No running processes found in NPU ' + str(npu):<95}|", THICK]
    return "\n".join(out)


def npu_smi_spod_info(facts, faults, npu, chip):
    """`npu-smi info -t spod-info -i NPU -c CHIP`: docs/formats.md §1i, printed
    as npu-smi's source prints it ("\t%-30s : %u"); the SDID laid out as the
    A3 DCMI reference gives it. Server Index: the node's index, or the fault's."""
    if facts.get("super_pod_id") is None:
        return "This device does not support querying spod-info."  # docs/formats.md §1i
    per_npu = facts.get("chips_per_npu", 1)
    die = npu * per_npu + chip
    if die not in present_devices(facts, faults) or chip >= per_npu:
        raise ToolError(f"Error: the device {npu} chip {chip} does not exist.")  # not verified
    server = int(faults.get("server_index", facts["index"]))
    sdid = (server << 22) | (npu << 18) | (chip << 16) | die
    return kv([("SDID", sdid), ("Super Pod Size", 384), ("Super Pod ID", facts["super_pod_id"]),
               ("Server Index", server)])


# The 310P3 layout (docs/formats.md §1d, the 310P3 sample): columns of 31, 17
# and 54 characters; each card's chips are blocks split by a thin rule.
CARD_THIN = "+" + "-" * 31 + "+" + "-" * 17 + "+" + "-" * 54 + "+"
CARD_THICK = "+" + "=" * 31 + "+" + "=" * 17 + "+" + "=" * 54 + "+"


def npu_smi_info_cards(facts, faults):
    """`npu-smi info` of a server whose cards carry several chips (300I Duo:
    two 310P3 per card): one block per chip, `NPU` is the card, `Chip` and
    `Device` the chip on the card and its device (logical) id. Device d is
    chip d % chips of card d // chips."""
    version = driver_version(facts, faults)
    chips = facts["chips_per_card"]
    devices = present_devices(facts, faults)
    out = ["+" + "-" * 104 + "+",
           f"| npu-smi {version:<41}Version: {version:<45}|",
           CARD_THIN,
           "| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |",
           "| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |",
           CARD_THICK]
    cards = sorted({d // chips for d in devices})
    for card in cards:
        on_card = [d for d in devices if d // chips == card]
        bus = facts["bus_ids"][card % len(facts["bus_ids"])]
        for n, d in enumerate(on_card):
            i = d % len(POWER)
            used = HBM_USED[i]
            top = f" {card:<8}{facts['chip_name']:<22}| {health(d, faults):<16}| {'NA':<13}{TEMP[i]:<18}{0:<6}/ {0:<14}"
            memory = f"{used:<5}/ {facts['hbm_mb']}"
            bottom = f" {d % chips:<8}{d:<22}| {bus:<16}| {0:<13}{memory:<40}"
            out += [f"|{top}|", f"|{bottom}|", CARD_THICK if n == len(on_card) - 1 else CARD_THIN]
    out += [CARD_THIN,
            "| NPU     Chip                  | Process id      | "
            "Process name             | Process memory(MB)        |",
            CARD_THICK]
    for card in cards:
        out += [f"| {'No running processes found in NPU ' + str(card):<103}|", CARD_THICK]
    return "\n".join(out)


def npu_smi_mapping(facts, faults):
    """`npu-smi info -m`: docs/formats.md §1e (910B3 with Mcu rows)."""
    row = "{:<31}{:<31}{:<31}{}"
    out = [row.format("NPU ID", "Chip ID", "Chip Logic ID", "Chip Name")]
    for d in present_devices(facts, faults):
        out.append(row.format(d, 0, d, f"Ascend {facts['chip_name']}"))
        out.append(row.format(d, 1, "-", "Mcu"))
    return "\n".join(out)


def kv(pairs):
    # npu-smi prints key/value lines with "\t%-30s : %s" (docs/formats.md §1g, not verified).
    return "\n".join(f"\t{k:<30} : {v}" if k else "" for k, v in pairs)


def npu_smi_detail(facts, faults, kind, dev, chip):
    """`npu-smi info -t board|health|usages|common|ecc -i N [-c C]`: docs/formats.md §1g."""
    if dev not in present_devices(facts, faults):
        # Not verified: the real tool's wording for an absent device.
        raise ToolError(f"Error: the device {dev} does not exist.")
    bus = facts["bus_ids"][dev % len(facts["bus_ids"])]
    i = dev % len(POWER)
    if kind == "board" and chip is None:
        return kv([("NPU ID", dev), ("Software Version", driver_version(facts, faults)),
                   ("Firmware Version", facts["firmware_version"]), ("Compatibility", "OK"),
                   ("Board ID", "0x02"), ("PCB ID", "A"), ("BOM ID", "1"), ("PCIe Bus Info", bus),
                   ("Slot ID", dev), ("Class ID", "NA"), ("PCI Vendor ID", "0x19e5"),
                   ("PCI Device ID", "0xD802"), ("Subsystem Vendor ID", "0x0200"),
                   ("Subsystem Device ID", "0x0100"), ("Chip Count", 1)])
    if kind == "board":
        return kv([("NPU ID", dev), ("Chip ID", chip), ("Chip Type", "Ascend"),
                   ("Chip Name", facts["chip_name"]), ("Chip Version", "V1"), ("Board ID", "0x02"),
                   ("PCB ID", "NA"), ("BOM ID", "1"), ("Chip Position ID", dev), ("PCIe Bus Info", bus),
                   ("Firmware Version", facts["firmware_version"])])
    if kind == "health":
        return kv([("Health Status", health(dev, faults)), ("Error Code", "NA"),
                   ("Error Information", "NA")])
    if kind == "usages":
        return kv([("NPU ID", dev), ("Chip Count", 1), ("", ""), ("DDR Capacity(MB)", 0),
                   ("DDR Usage Rate(%)", 0), ("DDR Hugepages Total(page)", 0),
                   ("DDR Hugepages Usage Rate(%)", 0), ("HBM Capacity(MB)", facts["hbm_mb"]),
                   ("HBM Usage Rate(%)", round(100 * HBM_USED[i] / facts["hbm_mb"])),
                   ("Aicore Usage Rate(%)", 0), ("Aicpu Usage Rate(%)", 0), ("Ctrlcpu Usage Rate(%)", 0),
                   ("DDR Bandwidth Usage Rate(%)", 0), ("HBM Bandwidth Usage Rate(%)", 0), ("Chip ID", 0)])
    if kind == "common":
        return kv([("NPU ID", dev), ("Chip Count", 1), ("Chip ID", 0), ("Memory Usage Rate(%)", 0),
                   ("HBM Usage Rate(%)", round(100 * HBM_USED[i] / facts["hbm_mb"])),
                   ("Aicore Usage Rate(%)", 0), ("Aicore Freq(MHZ)", 1800), ("Aicore curFreq(MHZ)", 1800),
                   ("Aicore Count", 20), ("Temperature(C)", TEMP[i]), ("NPU Real-time Power(W)", POWER[i])])
    if kind == "ecc":
        keys = ["DDR Single Bit Error Count", "DDR Double Bit Error Count",
                "DDR Single Bit Aggregate Total Err Cnt", "DDR Double Bit Aggregate Total Err Cnt",
                "DDR Single Bit Isolated Pages Count", "DDR Double Bit Isolated Pages Count",
                "HBM Single Bit Error Count", "HBM Double Bit Error Count",
                "HBM Single Bit Aggregate Total Err Cnt", "HBM Double Bit Aggregate Total Err Cnt",
                "HBM Single Bit Isolated Pages Count", "HBM Double Bit Isolated Pages Count"]
        return "\n".join([f"\t{'NPU ID':<40} : {dev}", f"\t{'Chip Count':<40} : 1", ""] +
                         [f"\t{k:<40} : 0" for k in keys] + [f"\t{'Chip ID':<40} : 0"])
    raise ToolError(f"emulator stand-in: npu-smi info -t {kind} is not emulated "
                    "(emulated: board, health, usages, common, ecc)")


def npu_smi(argv, inputs):
    facts, faults = inputs.facts(), inputs.faults()
    if not argv or argv[0] in ("-h", "--help", "help"):
        return "Usage: npu-smi info [-m] [-t TYPE -i ID [-c CHIP]]   (emulator stand-in)"
    if argv[0] in ("-v", "-V", "--version"):
        return f"npu-smi version: {driver_version(facts, faults)}"  # not verified
    if argv[0] != "info":
        raise ToolError(f"emulator stand-in: npu-smi {argv[0]} is not emulated (emulated: info)")
    opts, rest = {}, argv[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "-m":
            opts["m"] = True
        elif flag in ("-t", "-i", "-c") and rest:
            opts[flag[1]] = rest.pop(0)
        else:
            raise ToolError(f"emulator stand-in: unexpected npu-smi argument {flag!r}")
    if opts.get("m"):
        return npu_smi_mapping(facts, faults)
    if "t" in opts:
        if "i" not in opts:
            raise ToolError("Error: -i is required with -t")  # not verified
        if opts["t"] == "spod-info":
            return npu_smi_spod_info(facts, faults, int(opts["i"]), int(opts.get("c", 0)))
        return npu_smi_detail(facts, faults, opts["t"], int(opts["i"]),
                              int(opts["c"]) if "c" in opts else None)
    if facts.get("chips_per_card", 1) > 1:
        return npu_smi_info_cards(facts, faults)
    return npu_smi_info(facts, faults)


# --------------------------------------------------------------------------
# hccn_tool
# --------------------------------------------------------------------------

def device_ip(facts, faults, conf, dev):
    override = faults.get("wrong_device_ip", {}).get(str(dev))
    ip = override or conf.get(f"address_{dev}") or facts["device_ips"][dev]
    return ip, conf.get(f"netmask_{dev}", facts["netmask"])


PING_COUNT = 3
# -i 0.2 instead of ping's default 1 s keeps a full mesh check fast;
# -W 1 bounds each wait like the real tool's per-packet timeout.
# (standins/ascend_front.c runs the same command and reads it the same way.)
PING_ARGS = ["ping", "-n", "-c", str(PING_COUNT), "-W", "1", "-i", "0.2", "-I"]  # then source, target


def ping_plan(facts, faults, conf, dev, target):
    """Where `-ping -g address TARGET` from device dev pings from, and
    whether it pings at all: (source address, reachable)."""
    src, _ = device_ip(facts, faults, conf, dev)
    if target == facts["gateway"]:
        # The gateway is the host's side of the cluster's bridge, and every
        # emulated cluster on a host has the same gateway and device IPs: the
        # host would send its reply to a device IP out of whichever bridge
        # it routes 198.19.0.0/16 through first. From the node's own address
        # (unique per cluster) the reply comes back over this cluster's bridge;
        # the request still leaves through the node's routes (a blackhole
        # to the gateway stops it).
        src = facts["address"]
    reachable = (dev not in faults.get("link_down", []) and target not in faults.get("unreachable", [])
                 and not (faults.get("gateway_unreachable") and target == facts["gateway"]))
    return src, reachable


def hccn_ping(facts, faults, conf, dev, target):
    """`-ping -g address IP`: a real ping from the node's namespace, printed in
    hccn_tool's format (docs/formats.md §2c). A failed packet prints
    "recv time out seq=N"; 100% loss exits non-zero."""
    count = PING_COUNT
    replies = {}
    src, reachable = ping_plan(facts, faults, conf, dev, target)
    if reachable:
        import subprocess  # here only: a preflight calls this tool about 60 times, pinging in few

        proc = subprocess.run([*PING_ARGS, src, target], capture_output=True, text=True)
        for m in re.finditer(r"icmp_seq=(\d+).*?time=([\d.]+) ms", proc.stdout):
            replies[int(m.group(1)) - 1] = float(m.group(2))
    lines = [f"device {dev} PING {target}"]
    for seq in range(count):
        if seq in replies:
            lines.append(f"recv seq={seq},time={replies[seq]:.6f}ms")
        else:
            lines.append(f"recv time out seq={seq}")
    loss = 100.0 * (count - len(replies)) / count
    lines.append(f"{count} packets transmitted, {len(replies)} received, {loss:.2f}% packet loss")
    return "\n".join(lines), 0 if replies else 1


def hccn_tool(argv, inputs):
    facts, faults = inputs.facts(), inputs.faults()
    args = list(argv)
    if "-i" not in args or args.index("-i") + 1 >= len(args):
        raise ToolError("emulator stand-in: usage hccn_tool -i DEVICE -COMMAND -g|-s [...]")
    pos = args.index("-i")
    dev = int(args[pos + 1])
    del args[pos:pos + 2]
    if dev not in present_devices(facts, faults):
        raise ToolError(f"Error: device {dev} does not exist.")  # not verified
    mode = next((a for a in args if a in ("-g", "-s")), None)
    commands = [a for a in args if a.startswith("-") and a not in ("-g", "-s")]
    if not commands or mode is None:
        raise ToolError("emulator stand-in: usage hccn_tool -i DEVICE -COMMAND -g|-s [...]")
    cmd = commands[0][1:]
    extra = args[args.index(mode) + 1:]
    link_up = dev not in faults.get("link_down", [])
    conf = inputs.conf()
    gateway = conf.get(f"gateway_{dev}", facts["gateway"])
    netdetect = conf.get(f"netdetect_{dev}", facts["netdetect"])

    if "-inet6" in args:
        raise ToolError("emulator stand-in: IPv6 device addresses are not emulated")
    if mode == "-s":
        if cmd == "tls" and len(extra) == 2 and extra[0] == "enable" and extra[1] in ("0", "1"):
            def change(f, on=extra[1] == "1"):
                tls = set(f.get("tls_on", []))
                (tls.add if on else tls.discard)(dev)
                f["tls_on"] = sorted(tls)
            update_faults(change)
            return "Cmd executed successfully!", 0  # docs/formats.md §2h
        raise ToolError(f"emulator stand-in: hccn_tool -{cmd} -s {' '.join(extra)} is not emulated "
                        "(emulated: -tls -s enable 0|1)")
    if cmd == "ip":
        ip, netmask = device_ip(facts, faults, conf, dev)
        return f"ipaddr:{ip}\nnetmask:{netmask}", 0  # docs/formats.md §2a
    if cmd == "link":
        return f"link status: {'UP' if link_up else 'DOWN'}", 0  # docs/formats.md §2a
    no_netdetect = dev in faults.get("netdetect_fail", [])
    if cmd == "net_health":
        if no_netdetect:
            return "net health status: Init", 0  # docs/formats.md §2b: before a netdetect address is set
        ok = link_up and dev not in faults.get("net_health_fail", [])
        return f"net health status: {'Success' if ok else 'Fault'}", 0  # docs/formats.md §2b
    if cmd == "netdetect":
        if no_netdetect:
            # Not verified: worded like the verified `-ip -g` answer without an address (§2a).
            return "Get netdetect failed, because no netdetect ip was preset there!", 1
        return f"netdetect address: {netdetect}", 0  # docs/formats.md §2h
    if cmd == "gateway":
        return f"default gateway:{gateway}, Iface:eth{dev}", 0  # docs/formats.md §2h
    if cmd == "tls":
        on = 1 if dev in faults.get("tls_on", []) else 0
        return (f"dev_id:{dev}, tls switch[{on}](0:disable, 1:enable), tls preconfigured[1]"
                "(0:non-preset, 1:preset), tls alarm time threshold[60]days"), 0  # docs/formats.md §2a
    if cmd == "lldp":
        if not link_up or dev in faults.get("lldp_missing", []):
            return "lldp neighbor info is empty", 1  # not verified: no neighbour on a down link
        # docs/formats.md §2d; switch port names as in §2h
        port = f"400GE1/{dev // 2 + 1}/5:{dev % 2 + 1}"
        return "\n".join(["Chassis ID TLV", "\tMAC: 38:ad:be:00:00:01", "Port ID TLV", f"\tIfname: {port}",
                          "System Description TLV", "\tVersatile Routing Platform Software",
                          "VRP (R) software, Version 8.211 (DX511 V200R021C10SPC600)", "", "Huarong DX511", "",
                          "System Capabilities TLV", "\tEnabled capabilities: Bridge, Router",
                          "Management Address TLV", f"\tIPv4: {gateway}", "Maximum Frame Size TLV", "\t9216",
                          "End of LLDPDU TLV"]), 0
    if cmd == "fec":
        return "fec mode: rs FEC mode", 0  # docs/formats.md §2a
    if cmd == "ping":
        if len(extra) >= 2 and extra[0] == "address":
            return hccn_ping(facts, faults, conf, dev, extra[1])
        raise ToolError("emulator stand-in: usage hccn_tool -i DEVICE -ping -g address IP")
    raise ToolError(f"emulator stand-in: hccn_tool -{cmd} -g is not emulated (emulated: ip, link, "
                    "net_health, netdetect, gateway, tls, lldp, fec, ping)")


# --------------------------------------------------------------------------
# the answer file (read by the compiled front, standins/ascend_front.c)
# --------------------------------------------------------------------------

def answer(tool, argv, inputs):
    """What main prints for `tool argv`: (stream 1 or 2, exit status, text)."""
    try:
        if tool == "npu-smi":
            return 1, 0, npu_smi(argv, inputs)
        text, rc = hccn_tool(argv, inputs)
        return 1, rc, text
    except ToolError as exc:
        return 2, 1, str(exc)
    except (ValueError, IndexError) as exc:
        return 2, 1, f"emulator stand-in: bad arguments {argv}: {exc}"


def cached_questions(facts):
    """The calls whose answers depend on nothing but the three input files:
    every query a preflight makes (pings and `-s` writes are not among them)."""
    questions = [("npu-smi", ["info"]), ("npu-smi", ["info", "-m"])]
    if facts.get("super_pod_id") is not None:
        per_npu = facts.get("chips_per_npu", 1)
        questions += [("npu-smi", ["info", "-t", "spod-info", "-i", str(npu), "-c", str(chip)])
                      for npu in range(facts["npu_count"] // per_npu) for chip in range(per_npu)]
    if facts.get("fabric", True):
        questions += [("hccn_tool", ["-i", str(dev), f"-{cmd}", "-g"]) for dev in range(facts["npu_count"])
                      for cmd in ("ip", "link", "net_health", "netdetect", "gateway", "tls", "lldp", "fec")]
    return questions


def ping_plans(facts, faults, conf):
    """(arguments, plan text) of the pings the front may run itself: per device,
    one plan for every target but the few that a fault or the gateway rule
    treats apart (keyed without the target), and one for each of those."""
    unreachable = faults.get("unreachable", [])
    if not facts.get("fabric", True) or not isinstance(unreachable, list):
        return []
    apart = {facts["gateway"], *(t for t in unreachable if isinstance(t, str))}
    plans = []
    for dev in present_devices(facts, faults):
        base = ["-i", str(dev), "-ping", "-g", "address"]
        # A target no list holds and no comparison matches stands for every other one.
        for argv, target in [(base, object()), *((base + [t], t) for t in sorted(apart))]:
            src, reachable = ping_plan(facts, faults, conf, dev, target)
            plans.append((argv, f"{1 if reachable else 0} {src}"))
    return plans


def field(raw):
    return b"-\n" if raw is None else b"%d\n" % len(raw) + raw


def answers_head(inputs):
    return (b"ascemu-answers 1\n" + field(inputs.node) + field(inputs.faults_raw)
            + field(os.fsencode(HCCN_CONF)) + field(inputs.conf_raw))


def write_answers(inputs):
    """Keep RUN_DIR/answers holding this node's answers to cached_questions,
    headed by the exact bytes of the inputs they were computed from: the
    compiled front answers from it only while those files still hold those
    bytes, and calls this script otherwise (which rewrites it)."""
    path = os.path.join(RUN_DIR, "answers")
    head = answers_head(inputs)
    current = read_bytes(path)
    if inputs.node is None or (current is not None and current.startswith(head)):
        return
    records = [head]
    for tool, argv in cached_questions(inputs.facts()):
        stream, rc, text = answer(tool, argv, inputs)
        key = os.fsencode(tool + "\0" + "\0".join(argv))
        try:
            out = (text + "\n").encode("ascii")  # print's bytes under any locale
        except UnicodeEncodeError:
            continue  # left to this script
        records.append(b"%d %d %d %d\n" % (len(key), stream, rc, len(out)) + key + out)
    for argv, plan in ping_plans(inputs.facts(), inputs.faults(), inputs.conf()):
        key = os.fsencode("hccn_tool\0" + "\0".join(argv))
        try:
            out = (plan + "\n").encode("ascii")
        except UnicodeEncodeError:
            continue
        records.append(b"%d 3 0 %d\n" % (len(key), len(out)) + key + out)  # stream 3: a ping plan
    records.append(b"end\n")
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(b"".join(records))
    os.replace(tmp, path)  # the front never reads half a file


def main():
    name = os.path.basename(sys.argv[0])
    if name.startswith("npu-smi") or name.startswith("npu_smi"):
        tool = "npu-smi"
    elif name.startswith("hccn_tool"):
        tool = "hccn_tool"
    else:
        print(f"emulator stand-in: call me as npu-smi or hccn_tool, not {name}", file=sys.stderr)
        return 1
    inputs = Inputs()
    stream, rc, text = answer(tool, sys.argv[1:], inputs)
    print(text, file=sys.stdout if stream == 1 else sys.stderr)
    try:
        write_answers(inputs)
    except Exception:
        # Facts the cached questions cannot be answered from (a test's partial
        # node.json), a read-only run dir: no answer file, and this call's
        # answer and status stay what they are; the front then runs this script.
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
