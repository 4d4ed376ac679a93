"""The domains' cgroups: where the host kernel schedules them (issue 18).

pyxend puts each domain process in a cgroup of its own,
``pyxen/<instance>/pool<POOLID>/d<DOMID>``, in the cpu, cpuacct and cpuset
hierarchies (cgroup v1) or in the one unified hierarchy (cgroup v2).
<instance> is a hash of pyxend's run directory, so two pyxends on one host
(tests) never share a subtree. A domain's credit-scheduler settings become
the kernel's own:

- weight (1..65535, default 256) -> cpu.weight (v2: 1..10000, default 100,
  so weight * 100 / 256) or cpu.shares (v1: default 1024, weight * 4);
- cap (percent of one CPU, 0 = none) -> cpu.max "CAP*1000 100000" (v2) or
  cpu.cfs_quota_us = CAP*1000 with cpu.cfs_period_us = 100000 (v1): cap 50
  is 50 ms of CPU per 100 ms;
- a cpupool is a cpuset (cpuset.cpus, cpuset.mems) on pool<POOLID>, which
  its domains' cgroups inherit (v2) or copy (v1, where a child's cpus
  must be a subset of its parent's).

Hosts differ: `detect` reads the mount table (/proc/self/mounts) and the
cgroup2 root's cgroup.controllers and picks v2 where its cpu and cpuset
controllers are there, else the v1 hierarchies that have them (a v1-hybrid
host mounts cgroup2 at /sys/fs/cgroup/unified with no cpu controller), else
none (then hv/sched.py's nice values and cap watchdog do the work).
"""
from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset")
PERIOD_US = 100_000            # the cap's period: cap N% = N ms per 100 ms
DEFAULT_WEIGHT = 256


class CgroupError(Exception):
    pass


def _unescape(field_: str) -> str:
    """A /proc/mounts field: space, tab, newline and backslash are octal escapes."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[tuple[str, str, list[str]]]:
    """(mount point, file system type, options) of each line of a mount table."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((_unescape(parts[1]), parts[2], parts[3].split(",")))
    return rows


@dataclass(frozen=True)
class Layout:
    """What the host offers: kind "v2" (v2 is the cgroup2 mount with cpu and
    cpuset), "v1" (v1 maps controller -> its hierarchy's mount) or None;
    `why` says what was found, for `pyxen info` and the warning."""
    kind: str | None
    v2: Path | None = None
    v1: dict = field(default_factory=dict)
    why: str = ""


def detect(mounts: str, root: Path = Path("/")) -> Layout:
    """Choose the cgroup version from a mount table's text (/proc/self/mounts);
    mount points are looked up below `root` (a fake tree in the tests)."""
    def under(mp: str) -> Path:
        return Path(root) / mp.lstrip("/")
    entries = parse_mounts(mounts)
    v2_seen = []
    for mp, fstype, _ in entries:
        if fstype != "cgroup2":
            continue
        try:
            ctrl = (under(mp) / "cgroup.controllers").read_text().split()
        except OSError:
            ctrl = []
        if "cpu" in ctrl and "cpuset" in ctrl:
            return Layout("v2", v2=under(mp), why=f"cgroup v2 at {mp} (cpu, cpuset)")
        v2_seen.append(f"{mp} ({' '.join(ctrl) or 'no controllers'})")
    v1: dict[str, Path] = {}
    for mp, fstype, opts in entries:
        if fstype == "cgroup":
            for c in V1_CONTROLLERS:
                if c in opts and c not in v1:
                    v1[c] = under(mp)
    if "cpu" in v1 and "cpuset" in v1:
        where = ", ".join(f"{c} at /{p.relative_to(root)}" for c, p in v1.items())
        extra = f"; cgroup2 at {', '.join(v2_seen)} lacks cpu/cpuset" if v2_seen else ""
        return Layout("v1", v1=dict(v1), why=f"cgroup v1 ({where}){extra}")
    found = ", ".join(v2_seen + [f"v1 {c}" for c in v1]) or "no cgroup file system"
    return Layout(None, why=f"no cgroup with the cpu and cpuset controllers ({found})")


def detect_host() -> Layout:
    try:
        with open("/proc/self/mounts") as f:
            return detect(f.read())
    except OSError as e:
        return Layout(None, why=f"cannot read /proc/self/mounts: {e}")


def cpu_list(cpus) -> str:
    """A CPU set as cpuset.cpus takes it: "0-3,6"."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [c]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def parse_cpu_list(text: str) -> set[int]:
    cpus = set()
    for part in filter(None, text.strip().split(",")):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def weight_value(kind: str, weight: int) -> str:
    """The credit weight as cpu.weight (v2) or cpu.shares (v1)."""
    if kind == "v2":
        return str(max(1, min(10000, round(weight * 100 / DEFAULT_WEIGHT))))
    return str(max(2, min(262144, weight * 4)))


def instance_name(run_dir: Path) -> str:
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


class CgroupTree:
    """One pyxend's subtree: pyxen/<instance>/pool<ID>/d<DOMID>."""

    def __init__(self, layout: Layout, instance: str):
        if layout.kind is None:
            raise CgroupError(layout.why)
        self.layout = layout
        self.kind = layout.kind
        self.rel = Path("pyxen") / instance

    # --- paths ------------------------------------------------------------------
    def _mounts(self, controller: str | None = None) -> list[Path]:
        if self.kind == "v2":
            return [self.layout.v2]
        if controller is not None:
            p = self.layout.v1.get(controller)
            return [p] if p is not None else []
        seen: list[Path] = []
        for p in self.layout.v1.values():
            if p not in seen:
                seen.append(p)
        return seen

    def path(self, *parts: str, controller: str | None = None) -> Path:
        return self._mounts(controller)[0] / self.rel / Path(*parts) if parts else \
            self._mounts(controller)[0] / self.rel

    def _cpuset_root(self) -> Path:
        return self._mounts("cpuset")[0]

    # --- the subtree ----------------------------------------------------------------
    def setup(self) -> None:
        """Make pyxen/<instance> (and turn on cpu and cpuset below it, v2).
        CgroupError when the host will not let us (not root, a container)."""
        try:
            if self.kind == "v2":
                top = self.layout.v2
                _enable(top)
                for p in (top / "pyxen", top / self.rel):
                    p.mkdir(exist_ok=True)
                    _enable(p)
            else:
                for m in self._mounts():
                    (m / self.rel).mkdir(parents=True, exist_ok=True)
                cs = self._cpuset_root()
                for p in (cs / "pyxen", cs / self.rel):       # v1: a cpuset starts empty
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        if not (p / f).read_text().strip():
                            _write(p / f, (p.parent / f).read_text().strip())
        except OSError as e:
            raise CgroupError(f"cannot make {self.rel} in the {self.kind} hierarchy: "
                              f"{e.strerror or e}") from None

    def prune(self, rel: Path | None = None) -> None:
        """Remove what holds no process: empty domain cgroups and pools, then
        the instance's directory (ours, or `rel`: another's)."""
        for m in self._mounts():
            base = m / (rel or self.rel)
            if not base.is_dir():
                continue
            for pool in base.iterdir():
                if pool.is_dir():
                    for d in pool.iterdir():
                        if d.is_dir():
                            _rmdir(d, tries=1)
                    _rmdir(pool, tries=1)
            _rmdir(base, tries=1)

    def prune_others(self) -> None:
        """Other instances' directories that hold no process (a pyxend killed
        with its domains gone leaves them behind). A live pyxend without
        domains may lose its empty ones too: it makes them again before it
        uses them (ensure_pool)."""
        for m in self._mounts():
            top = m / "pyxen"
            for inst in (top.iterdir() if top.is_dir() else ()):
                if inst.is_dir() and inst.name != self.rel.name:
                    self.prune(Path("pyxen") / inst.name)

    def ensure_pool(self, poolid: int, cpus) -> None:
        """The instance's and the pool's directories exist (again) with these CPUs."""
        self.setup()
        self.set_pool(poolid, cpus)

    # --- pools -------------------------------------------------------------------
    def set_pool(self, poolid: int, cpus) -> None:
        """Make pool<ID> (if new) with these CPUs; domains in it follow (v1:
        their cpusets shrink before the pool's and grow after it)."""
        name = f"pool{poolid}"
        mems = (self._cpuset_root() / self.rel / "cpuset.mems").read_text().strip() \
            if self.kind == "v1" else None
        for m in self._mounts():
            (m / self.rel / name).mkdir(exist_ok=True)
            if self.kind == "v2":
                _enable(m / self.rel / name)
        pool = self._cpuset_root() / self.rel / name
        value = cpu_list(cpus)
        if self.kind == "v2":
            # empty would mean "the parent's": a pool without CPUs holds no domain
            _write(pool / "cpuset.cpus", value)
            return
        if not (pool / "cpuset.mems").read_text().strip():
            _write(pool / "cpuset.mems", mems)
        doms = [d for d in pool.iterdir() if d.is_dir()]
        old = parse_cpu_list((pool / "cpuset.cpus").read_text())
        if set(cpus) <= old:
            for d in doms:
                _write(d / "cpuset.cpus", value)
            _write(pool / "cpuset.cpus", value)
        else:
            _write(pool / "cpuset.cpus", value)
            for d in doms:
                _write(d / "cpuset.cpus", value)

    def remove_pool(self, poolid: int) -> None:
        for m in self._mounts():
            _rmdir(m / self.rel / f"pool{poolid}")

    def pool_cpus(self, poolid: int) -> set[int]:
        """The CPUs the kernel gives the pool's cpuset (effective)."""
        p = self._cpuset_root() / self.rel / f"pool{poolid}"
        name = "cpuset.cpus.effective" if self.kind == "v2" else "cpuset.effective_cpus"
        return parse_cpu_list((p / name).read_text())

    # --- domains -----------------------------------------------------------------
    def domain_dirs(self, poolid: int, domid: int) -> list[Path]:
        return [m / self.rel / f"pool{poolid}" / f"d{domid}" for m in self._mounts()]

    def add_domain(self, poolid: int, domid: int, pid: int) -> None:
        """Make the domain's cgroup in the pool and move its process (all its
        threads) there."""
        for d in self.domain_dirs(poolid, domid):
            d.mkdir(exist_ok=True)
            if self.kind == "v1" and (d / "cpuset.cpus").exists():
                for f in ("cpuset.mems", "cpuset.cpus"):
                    _write(d / f, (d.parent / f).read_text().strip())
        for d in self.domain_dirs(poolid, domid):
            _write(d / "cgroup.procs", str(pid))

    def find_domain(self, domid: int) -> int | None:
        """The pool whose directory holds d<DOMID>, if any."""
        base = self._mounts()[0] / self.rel
        for p in base.glob(f"pool*/d{domid}"):
            try:
                return int(p.parent.name[4:])
            except ValueError:
                pass
        return None

    def procs(self, poolid: int, domid: int) -> list[int]:
        d = self.domain_dirs(poolid, domid)[0]
        try:
            return [int(x) for x in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def move_domain(self, domid: int, old: int, new: int, pid: int) -> None:
        settings = self.get_settings(old, domid)
        self.add_domain(new, domid, pid)
        self.apply(new, domid, *settings)
        self.remove_domain(old, domid)

    def remove_domain(self, poolid: int, domid: int) -> None:
        for d in self.domain_dirs(poolid, domid):
            _rmdir(d)

    # --- weight, cap, usage ------------------------------------------------------------
    def _cpu_dir(self, poolid: int, domid: int) -> Path:
        return self._mounts("cpu")[0] / self.rel / f"pool{poolid}" / f"d{domid}"

    def apply(self, poolid: int, domid: int, weight: int | None, cap: int | None) -> None:
        d = self._cpu_dir(poolid, domid)
        if weight is not None:
            _write(d / ("cpu.weight" if self.kind == "v2" else "cpu.shares"),
                   weight_value(self.kind, weight))
        if cap is not None:
            if self.kind == "v2":
                _write(d / "cpu.max", f"{cap * PERIOD_US // 100 if cap else 'max'} {PERIOD_US}")
            else:
                _write(d / "cpu.cfs_period_us", str(PERIOD_US))
                _write(d / "cpu.cfs_quota_us", str(cap * PERIOD_US // 100 if cap else -1))

    def get_settings(self, poolid: int, domid: int) -> tuple[int, int]:
        """(weight, cap) as the cgroup files hold them, in xl's units."""
        d = self._cpu_dir(poolid, domid)
        if self.kind == "v2":
            w = round(int((d / "cpu.weight").read_text()) * DEFAULT_WEIGHT / 100)
            quota, period = (d / "cpu.max").read_text().split()
        else:
            w = int((d / "cpu.shares").read_text()) // 4
            quota = (d / "cpu.cfs_quota_us").read_text().strip()
            period = (d / "cpu.cfs_period_us").read_text().strip()
        cap = 0 if quota in ("max", "-1") else round(int(quota) * 100 / int(period))
        return w, cap

    def usage_seconds(self, poolid: int, domid: int) -> float | None:
        """The CPU time the kernel charged the domain's cgroup."""
        try:
            if self.kind == "v2":
                for line in (self._cpu_dir(poolid, domid) / "cpu.stat").read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        return int(v) / 1e6
                return None
            acct = self._mounts("cpuacct")
            if not acct:
                return None
            p = acct[0] / self.rel / f"pool{poolid}" / f"d{domid}" / "cpuacct.usage"
            return int(p.read_text()) / 1e9
        except (OSError, ValueError):
            return None


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, value.encode() if value else b"\n")
    finally:
        os.close(fd)


def _enable(path: Path) -> None:
    """v2: let path's children have the cpu and cpuset controllers."""
    have = (path / "cgroup.subtree_control").read_text().split()
    want = [c for c in ("cpuset", "cpu") if c not in have]
    if want:
        _write(path / "cgroup.subtree_control", " ".join("+" + c for c in want))


def _rmdir(path: Path, tries: int = 50) -> None:
    """Remove a cgroup; its last threads may take a moment to leave it."""
    for i in range(tries):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or i == tries - 1:
                return
            time.sleep(0.02)
