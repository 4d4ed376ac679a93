"""The host's CPU and NUMA topology, read from Linux's sysfs, in the terms of
libxl's cputopology / numainfo / pcitopology (what `xl info -n` prints).

Without /sys/devices/system/node (a kernel without NUMA) the host is one
node 0 holding every CPU and all memory (/proc/meminfo)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["parse_cpulist", "cpu_topology", "numa_nodes", "pci_topology"]


def parse_cpulist(text: str) -> set[int]:
    """A sysfs CPU / node list ("0-3,6") as a set."""
    out: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _node_dirs(sysfs: Path) -> dict[int, Path]:
    base = sysfs / "devices/system/node"
    out = {}
    if base.is_dir():
        for p in base.glob("node[0-9]*"):
            if p.name[4:].isdigit():
                out[int(p.name[4:])] = p
    return dict(sorted(out.items()))


def cpu_topology(sysfs: Path = Path("/sys")) -> list[dict]:
    """One entry per possible CPU, in order: {"cpu", "core", "socket", "node"};
    core/socket/node None for a CPU that is offline (libxl's invalid entry)."""
    cpu_base = sysfs / "devices/system/cpu"
    possible = parse_cpulist(_read(cpu_base / "possible") or "0")
    node_of: dict[int, int] = {}
    nodes = _node_dirs(sysfs)
    for n, p in nodes.items():
        for c in parse_cpulist(_read(p / "cpulist") or ""):
            node_of[c] = n
    out = []
    for c in range(max(possible) + 1 if possible else 0):
        core = _read(cpu_base / f"cpu{c}/topology/core_id")
        sock = _read(cpu_base / f"cpu{c}/topology/physical_package_id")
        online = _read(cpu_base / f"cpu{c}/online")
        if core is None or sock is None or (online is not None and online.strip() == "0"):
            out.append({"cpu": c, "core": None, "socket": None, "node": None})
            continue
        out.append({"cpu": c, "core": int(core), "socket": int(sock),
                    "node": node_of.get(c, 0 if not nodes else None)})
    return out


def _meminfo_kb(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        # "/proc/meminfo: MemTotal: N kB", node meminfo: "Node 0 MemTotal: N kB"
        if key in parts:
            return int(parts[parts.index(key) + 1])
    return 0


def numa_nodes(sysfs: Path = Path("/sys"), proc: Path = Path("/proc")) -> list[dict]:
    """Each NUMA node: {"node", "size_mb", "free_mb", "distances"} (distances
    to every node, in node order)."""
    nodes = _node_dirs(sysfs)
    if not nodes:
        text = _read(proc / "meminfo") or ""
        return [{"node": 0, "size_mb": _meminfo_kb(text, "MemTotal") // 1024,
                 "free_mb": _meminfo_kb(text, "MemFree") // 1024, "distances": [10]}]
    out = []
    for n, p in nodes.items():
        text = _read(p / "meminfo") or ""
        dist = [int(x) for x in (_read(p / "distance") or "").split()]
        out.append({"node": n, "size_mb": _meminfo_kb(text, "MemTotal") // 1024,
                    "free_mb": _meminfo_kb(text, "MemFree") // 1024,
                    "distances": dist or [10]})
    return out


def pci_topology(sysfs: Path = Path("/sys")) -> list[dict]:
    """PCI devices with a known NUMA node: {"seg", "bus", "dev", "fn", "node"}."""
    out = []
    base = sysfs / "bus/pci/devices"
    if not base.is_dir():
        return out
    for p in sorted(base.iterdir()):
        node = _read(p / "numa_node")
        try:
            seg, bus, devfn = p.name.split(":")
            dev, fn = devfn.split(".")
            node_id = int(node) if node is not None else -1
            entry = {"seg": int(seg, 16), "bus": int(bus, 16), "dev": int(dev, 16),
                     "fn": int(fn, 16), "node": node_id}
        except ValueError:
            continue
        if node_id >= 0:
            out.append(entry)
    return out
