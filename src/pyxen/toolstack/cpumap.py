"""xl's cpumaps (cpus=, cpus_soft=, vcpu-pin): comma-separated "all", "N",
"N-M", "node:N" / "nodes:N-M" (the host's NUMA nodes), each optionally
prefixed with "^" to take CPUs away, read as xl reads them (C's strtoul)."""
from __future__ import annotations

import os
from pathlib import Path

_C_SPACE = " \t\n\v\f\r"


def c_strtol(s: str, unsigned: bool = False) -> tuple[int, str]:
    """C's strtoll (or strtoul) in base 10: the value and the rest of the string
    (all of it when there is no number). Out of range saturates as C does; strtoul
    takes a minus sign modulo 2**64."""
    i = 0
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    neg = i < len(s) and s[i] == "-"
    if i < len(s) and s[i] in "+-":
        i += 1
    j = i
    while j < len(s) and s[j] in "0123456789":
        j += 1
    if j == i:
        return 0, s
    v = int(s[i:j])
    if unsigned:
        v = (1 << 64) - 1 if v > (1 << 64) - 1 else (-v) % (1 << 64) if neg else v
    else:
        v = -v if neg else v
        v = max(-(1 << 63), min((1 << 63) - 1, v))
    return v, s[j:]


class CpumapError(Exception):
    pass


def host_nr_cpus() -> int:
    return os.cpu_count() or 1


def host_node_cpus(node: int, nr_cpus: int) -> set[int]:
    """The host CPUs of NUMA node `node` (/sys/devices/system/node); without
    NUMA in sysfs the host is node 0. A node the host lacks has none."""
    base = Path("/sys/devices/system/node")
    if not base.is_dir():
        return set(range(nr_cpus)) if node == 0 else set()
    try:
        text = (base / f"node{node}" / "cpulist").read_text().strip()
    except OSError:
        return set()
    cpus = set()
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def _parse_range(text: str) -> tuple[int, int] | None:
    """xl's parse_range: "N" or "N-M" (N <= M) as strtoul reads them, nothing after."""
    ulong_max = (1 << 64) - 1
    a, rest = c_strtol(text, unsigned=True)
    if rest == text or a == ulong_max:
        return None
    b = a
    if rest.startswith("-"):
        b, rest2 = c_strtol(rest[1:], unsigned=True)
        if rest2 == rest[1:] or b == ulong_max or b < a:
            return None
        rest = rest2
    return None if rest else (a, b)


def parse_cpurange(text: str, nr_cpus: int) -> set[int]:
    """xl's parse_cpurange: comma-separated "all", "N", "N-M", "node:N" / "nodes:N-M"
    (the host's NUMA nodes), each may start with "^" to take CPUs away. The host CPUs
    it names (CPUs the host lacks are dropped, as libxl's bitmap drops them);
    CpumapError with xl's message when xl refuses it."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        neg = part.startswith("^")
        if neg:
            part = part[1:]
        nodes = False
        for prefix in ("node:", "nodes:"):
            if part.startswith(prefix):
                part, nodes = part[len(prefix):], True
                break
        if part == "all":
            if neg:
                raise CpumapError('Can\'t combine "^" and "all".')
            cpus = set(range(nr_cpus))
            continue
        r = _parse_range(part)
        if r is None:
            raise CpumapError(f"Invalid pcpu range: {part}.")
        a, b = r
        if nodes:
            these = set()
            for node in range(a, min(b, 4095) + 1):
                these |= host_node_cpus(node, nr_cpus)
        else:
            these = set(range(a, min(b, nr_cpus - 1) + 1))
        cpus = cpus - these if neg else cpus | (these & set(range(nr_cpus)))
    return cpus


#: the CPUs a config's cpumap may name (NR_CPUS of Xen's x86 build): a config
#: is checked for its syntax with this many, the host's own count at build
CONFIG_NR_CPUS = 4096


def vcpu_affinities(spec, nr_vcpus: int, nr_cpus: int | None = None) -> list[set[int] | None]:
    """xl.cfg's cpus= / cpus_soft= for each vCPU (xl_parse.c): one cpumap
    string applies to every vCPU; a list gives vCPU i its entry i, and vCPUs
    past its end get none (None: any CPU). CpumapError as xl words it."""
    nr_cpus = nr_cpus or host_nr_cpus()
    if spec is None:
        return [None] * nr_vcpus
    if isinstance(spec, str):
        maps = [parse_cpurange(spec, nr_cpus)] * nr_vcpus
    else:
        maps = [parse_cpurange(s, nr_cpus) for s in spec][:nr_vcpus]
        maps += [None] * (nr_vcpus - len(maps))
    for i, m in enumerate(maps):
        if m is not None and not m:
            raise CpumapError(f"vcpu {i}: its CPU map names no CPU (of {nr_cpus})")
    return maps
