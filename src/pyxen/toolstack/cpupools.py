"""cpupools (xl cpupool-*) and where pyxend has the kernel schedule domains.

A cpupool is a set of host CPUs with a scheduler name; a domain runs in one
pool, on its CPUs only. As in Xen (common/sched/cpupool.c, libxl_cpupool.c):
Pool-0 (id 0) starts with every host CPU and holds Domain-0, so it can never
be destroyed nor lose its last CPU; a CPU is in at most one pool, and one
taken out of a pool is free (in no pool) until cpupool-cpu-add or
cpupool-create takes it; a pool holding domains cannot be destroyed nor lose
its last CPU; a domain moves only to a pool with CPUs; a new pool gets the
lowest free id. The schedulers are names (credit, credit2): the host
kernel schedules every pool.

`Pools` is the table, kept in the run directory (cpupools.json, with each
domain's pool) so a restarted pyxend has the same pools. `PoolsDaemon` is
the part of pyxend (a base class of daemon.Daemon) that enforces them and
the credit scheduler's weight and cap: on cgroups (toolstack/cgroups.py:
each domain process in pyxen/<instance>/pool<ID>/d<DOMID>, a pool a
cpuset) where the host has them, else through the domain process
(hv/sched.py: nice values, a cap watchdog, vCPU thread affinity within the
pool's CPUs).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups
from .cpumap import host_node_cpus, host_nr_cpus

POOL0 = "Pool-0"
SCHEDULERS = ("credit", "credit2")

# libxl's error lines, as Xen 4.17 prints them (file:line:function)
_LIBXL_CPUADD = "libxl: error: libxl_cpupool.c:302:libxl_cpupool_cpuadd: " \
    "Error moving cpu {cpu} to cpupool: {err}"
_LIBXL_CPUREMOVE = "libxl: error: libxl_cpupool.c:365:libxl_cpupool_cpuremove: " \
    "Error removing cpu {cpu} from cpupool: {err}"
_LIBXL_MOVEDOMAIN = "libxl: error: libxl_cpupool.c:437:libxl_cpupool_movedomain: " \
    "Domain {domid}:Error moving domain to cpupool: {err}"
EBUSY = os.strerror(16)
EINVAL = os.strerror(22)
ENOENT = os.strerror(2)
EPERM = os.strerror(1)


class PoolError(Exception):
    """A refused pool operation; the message is xl's (its lines, for stderr)."""

    def __init__(self, message: str, code: str = "EINVAL"):
        super().__init__(message)
        self.code = code


@dataclass
class Pool:
    id: int
    name: str
    sched: str = "credit"
    cpus: set = field(default_factory=set)

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "sched": self.sched, "cpus": sorted(self.cpus)}


class Pools:
    """The cpupool table and each domain's pool, saved in `path` on every change."""

    def __init__(self, path: Path, nr_cpus: int | None = None):
        self.path = Path(path)
        self.nr_cpus = nr_cpus or host_nr_cpus()
        self.pools: dict[int, Pool] = {}
        self.domains: dict[int, int] = {}          # domid -> pool id
        try:
            data = json.loads(self.path.read_text())
            for p in data.get("pools", []):
                cpus = {c for c in p["cpus"] if 0 <= c < self.nr_cpus}
                self.pools[int(p["id"])] = Pool(int(p["id"]), p["name"], p["sched"], cpus)
            self.domains = {int(k): int(v) for k, v in data.get("domains", {}).items()}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if 0 not in self.pools:
            taken = set().union(*(p.cpus for p in self.pools.values()))
            self.pools[0] = Pool(0, POOL0, "credit", set(range(self.nr_cpus)) - taken)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pools": [p.to_json() for p in self.sorted()],
                                   "domains": {str(k): v for k, v in self.domains.items()}}))
        tmp.replace(self.path)

    def sorted(self) -> list[Pool]:
        return [self.pools[i] for i in sorted(self.pools)]

    def find(self, qualifier: str) -> Pool | None:
        """libxl_cpupool_qualifier_to_cpupoolid: a number is a pool id, else a name."""
        q = str(qualifier)
        if q.isascii() and q.isdigit():
            return self.pools.get(int(q))
        return next((p for p in self.sorted() if p.name == q), None)

    def free_cpus(self) -> set[int]:
        return set(range(self.nr_cpus)) - set().union(*(p.cpus for p in self.pools.values()))

    def n_dom(self, pool: Pool) -> int:
        """Domains in the pool (Pool-0 counts Domain-0, as Xen)."""
        return sum(1 for v in self.domains.values() if v == pool.id) + (pool.id == 0)

    # --- xl's operations -----------------------------------------------------------
    def check_create(self, name: str | None, sched: str | None, cpus: list[int] | None,
                     nodes: list[int] | None) -> tuple[str, str, set[int]]:
        """xl cpupool-create's checks (main_cpupoolcreate): the name, scheduler
        and CPUs of the pool to make."""
        if not name:
            raise PoolError("Missing cpupool name!")
        if self.find_name(name) is not None:
            raise PoolError(f'Pool name "{name}" already exists', "EEXIST")
        sched = sched or "credit"
        if sched not in SCHEDULERS:
            raise PoolError("Unknown scheduler")
        free = self.free_cpus()
        chosen: set[int] = set()
        if nodes is not None:
            for n in nodes:
                chosen |= host_node_cpus(n, self.nr_cpus) & free
            if not chosen:
                raise PoolError("no free cpu found")
        elif cpus is not None:
            for c in cpus:
                if c < 0 or c not in free:
                    raise PoolError(f"cpu {c} illegal or not free")
                chosen.add(c)
        return name, sched, chosen

    def find_name(self, name: str) -> Pool | None:
        return next((p for p in self.sorted() if p.name == name), None)

    def create(self, name: str, sched: str, cpus: set[int]) -> Pool:
        pid = 0
        while pid in self.pools:
            pid += 1
        pool = Pool(pid, name, sched, set(cpus))
        self.pools[pid] = pool
        return pool

    def check_destroy(self, pool: Pool, qualifier: str) -> None:
        if pool.id == 0 or self.n_dom(pool):
            raise PoolError(f"Can't destroy cpupool '{qualifier}'", "EBUSY")

    def check_rename(self, pool: Pool, new: str, qualifier: str) -> None:
        other = self.find_name(new)
        if not new or (other is not None and other is not pool):
            # libxl would write a second pool of the same name; pyxen refuses
            raise PoolError(f"Can't rename cpupool '{qualifier}'", "EEXIST")

    def add_cpus(self, pool: Pool, cpus) -> list[str]:
        """Move free CPUs in; libxl's error line for each one that is not free."""
        errors = []
        free = self.free_cpus()
        for c in sorted(cpus):
            if c in free:
                pool.cpus.add(c)
            else:
                errors.append(_LIBXL_CPUADD.format(cpu=c, err=EBUSY))
        return errors

    def remove_cpus(self, pool: Pool, cpus) -> list[str]:
        """Free CPUs of the pool; refused for a CPU it lacks (EINVAL) and for its
        last CPU while it holds domains (EBUSY), as Xen's cpupool_unassign_cpu."""
        errors = []
        for c in sorted(cpus):
            if c not in pool.cpus:
                errors.append(_LIBXL_CPUREMOVE.format(cpu=c, err=EINVAL))
            elif len(pool.cpus) == 1 and self.n_dom(pool):
                errors.append(_LIBXL_CPUREMOVE.format(cpu=c, err=EBUSY))
            else:
                pool.cpus.discard(c)
        return errors

    def check_migrate(self, domid: int, pool: Pool) -> None:
        if domid == 0:
            raise PoolError(_LIBXL_MOVEDOMAIN.format(domid=0, err=EPERM), "EPERM")
        if not pool.cpus and self.domains.get(domid, 0) != pool.id:
            raise PoolError(_LIBXL_MOVEDOMAIN.format(domid=domid, err=ENOENT), "ENOENT")


def list_lines(pools: list[dict], cpus: bool = False) -> list[str]:
    """xl cpupool-list's output (xl_cpupool.c main_cpupoollist) from the
    cpupool_list request's rows."""
    out = ["%-19s" % "Name" + ("CPU list" if cpus else "CPUs   Sched     Active   Domain count")]
    for p in pools:
        line = "%-19s" % p["name"]
        if cpus:
            line += ",".join(str(c) for c in p["cpus"])
        else:
            line += "%3d %9s       y       %4d" % (len(p["cpus"]), p["sched"], p["n_dom"])
        out.append(line)
    return out


class PoolsDaemon:
    """pyxend's cpupools and scheduling (a base class of daemon.Daemon, which
    provides domains, lock, run_dir, say, find, _call and ApiError)."""

    pools: Pools
    cgroups: "cgroups.CgroupTree | None" = None
    sched_backend: str = ""

    # --- hooks the daemon calls ------------------------------------------------------
    def _sched_setup(self) -> None:
        """At start: the pool table, and cgroups where the host has them."""
        self.pools = Pools(self.run_dir / "cpupools.json")
        layout = cgroups.detect_host()
        if os.environ.get("PYXEN_CGROUPS", "1") == "0":
            layout = cgroups.Layout(None, why="cgroups turned off (PYXEN_CGROUPS=0)")
        tree = None
        if layout.kind is not None:
            try:
                tree = cgroups.CgroupTree(layout, cgroups.instance_name(self.run_dir))
                tree.setup()
                tree.prune_others()
                for p in self.pools.sorted():
                    if p.cpus:
                        tree.set_pool(p.id, p.cpus)
            except (cgroups.CgroupError, OSError) as e:
                layout = cgroups.Layout(None, why=f"{layout.why}, but {e}")
                tree = None
        self.cgroups = tree
        if tree is None:
            self.sched_backend = "nice+watchdog (" + layout.why + ")"
            self.say("warning: no usable cgroups: weight and cap by nice values and a "
                     f"watchdog, cpupools by vCPU affinity ({layout.why})")
        else:
            self.sched_backend = f"cgroups {layout.kind}: {layout.why}"
            self.say(f"scheduling on {self.sched_backend}")

    def _sched_recovered(self) -> None:
        """After pyxend found the running domains: forget gone ones, put every
        running one back in its pool's cgroup if it left it."""
        with self.lock:
            live = {d.domid: d for d in self.domains.values()}
        for domid in list(self.pools.domains):
            if domid not in live:
                self.pools.domains.pop(domid)
        for d in live.values():
            if d.state == "running" and d.pid:
                pid = self.pools.domains.setdefault(d.domid, 0)
                if self.cgroups is not None and d.pid not in self.cgroups.procs(pid, d.domid):
                    try:
                        self.cgroups.ensure_pool(pid, self.pools.pools[pid].cpus)
                        self.cgroups.add_domain(pid, d.domid, d.pid)
                    except (OSError, KeyError, cgroups.CgroupError) as e:
                        self.say(f"domain {d.domid}: cannot put it in its cgroup: {e}")
        self.pools.save()

    def _sched_check(self, cfg) -> None:
        """Before a domain is made: its config's pool= must name a pool with CPUs."""
        name = getattr(cfg, "pool", None)
        if name is None:
            return
        pool = self.pools.find(name)
        if pool is None or not pool.cpus:
            raise self._api_error("EINVAL", f"Illegal pool specified: {name}")

    def _sched_place(self, d) -> None:
        """A new domain process (connected, paused): into its pool's cgroup,
        with the config's weight and cap, and its pool's CPUs."""
        cfg = d.config
        pool = self.pools.find(cfg["pool"]) if cfg.get("pool") is not None else self.pools.pools[0]
        if pool is None:
            pool = self.pools.pools[0]
        self.pools.domains[d.domid] = pool.id
        self.pools.save()
        weight = cfg.get("cpu_weight")
        cap = cfg.get("cap")
        if self.cgroups is not None:
            try:
                self.cgroups.ensure_pool(pool.id, pool.cpus)
                self.cgroups.add_domain(pool.id, d.domid, d.pid)
            except (OSError, cgroups.CgroupError) as e:
                raise RuntimeError(f"cannot put the domain in its cgroup: {e}") from None
            self.cgroups.apply(pool.id, d.domid, weight or cgroups.DEFAULT_WEIGHT, cap or 0)
        self._call(d, "sched", weight=weight, cap=cap, external=self.cgroups is not None)
        self._call(d, "sched_pool", cpus=sorted(pool.cpus))

    def _sched_forget(self, d) -> None:
        """The domain is gone: its cgroup goes."""
        poolid = self.pools.domains.pop(d.domid, None)
        if poolid is None:
            return
        self.pools.save()
        if self.cgroups is not None:
            self.cgroups.remove_domain(poolid, d.domid)

    def _sched_stop(self) -> None:
        if self.cgroups is not None:
            with self.lock:
                if not self.domains:
                    self.cgroups.prune()

    def _sched_set(self, d, weight, cap) -> dict:
        """sched_credit for one domain: the kernel's settings (cgroup) and the
        domain's record of them."""
        if self.cgroups is not None and (weight is not None or cap is not None):
            poolid = self.pools.domains.get(d.domid, 0)
            try:
                self.cgroups.apply(poolid, d.domid, weight, cap)
            except OSError as e:
                raise self._api_error("EIO", f"domain {d.domid}: cgroup: {e}") from None
        r = self._call(d, "sched", weight=weight, cap=cap, external=self.cgroups is not None)
        return {**r, **self._pool_of(d.domid)}

    def _pool_of(self, domid: int) -> dict:
        pool = self.pools.pools.get(self.pools.domains.get(domid, 0), self.pools.pools[0])
        return {"pool": pool.name, "poolid": pool.id, "pool_sched": pool.sched}

    def _sched_info(self, d, row: dict) -> None:
        """Fill a list row: its pool, and the cgroup's own CPU time."""
        row.update(self._pool_of(d.domid))
        if self.cgroups is not None and d.domid in self.pools.domains:
            used = self.cgroups.usage_seconds(self.pools.domains[d.domid], d.domid)
            if used is not None:
                row["cgroup_cpu_time"] = used

    def _api_error(self, code: str, message: str):
        """daemon.ApiError, from the daemon's module as it runs (it may be __main__)."""
        import sys
        return sys.modules[type(self).__module__].ApiError(code, message)

    def _pool(self, qualifier: str, msg: str = "unknown cpupool '{}'") -> Pool:
        pool = self.pools.find(qualifier)
        if pool is None:
            raise self._api_error("ENOENT", msg.format(qualifier))
        return pool

    def _pool_changed(self, pool: Pool) -> None:
        """The pool's CPUs changed: its cpuset, and its domains' vCPU affinity."""
        if self.cgroups is not None and pool.cpus:
            try:
                self.cgroups.ensure_pool(pool.id, pool.cpus)
            except (OSError, cgroups.CgroupError) as e:
                self.say(f"cpupool {pool.name}: cpuset not updated: {e}")
        self.pools.save()
        with self.lock:
            doms = [d for d in self.domains.values()
                    if self.pools.domains.get(d.domid) == pool.id and d.state == "running"]
        for d in doms:
            try:
                self._call(d, "sched_pool", cpus=sorted(pool.cpus))
            except Exception as e:          # noqa: BLE001 - one domain must not stop the rest
                self.say(f"domain {d.domid}: new pool CPUs not applied: {e}")

    # --- API -------------------------------------------------------------------------
    def api_cpupool_list(self, pool):
        with self.lock:
            pools = [self._pool(pool, "Pool '{}' does not exist")] if pool is not None \
                else self.pools.sorted()
            rows = []
            for p in pools:
                row = {**p.to_json(), "n_dom": self.pools.n_dom(p)}
                if self.cgroups is not None and p.cpus:
                    try:
                        row["effective_cpus"] = sorted(self.cgroups.pool_cpus(p.id))
                    except OSError:
                        pass
                rows.append(row)
            return {"pools": rows, "free_cpus": sorted(self.pools.free_cpus()),
                    "backend": self.sched_backend}

    def api_cpupool_create(self, name, sched, cpus, nodes, dryrun):
        with self.lock:
            try:
                name, sched, chosen = self.pools.check_create(name, sched, cpus, nodes)
            except PoolError as e:
                raise self._api_error(e.code, str(e)) from None
            if dryrun:
                return {"name": name, "sched": sched, "cpus": sorted(chosen), "id": None}
            pool = self.pools.create(name, sched, chosen)
            try:
                if self.cgroups is not None and pool.cpus:
                    self.cgroups.ensure_pool(pool.id, pool.cpus)
            except (OSError, cgroups.CgroupError) as e:
                self.pools.pools.pop(pool.id)
                raise self._api_error("EIO", f"error on creating cpupool ({e})") from None
            self.pools.save()
            self.say(f"cpupool {pool.id} ({name}) created, {sched}, cpus "
                     f"{cgroups.cpu_list(pool.cpus) or 'none'}")
            return {"name": name, "sched": sched, "cpus": sorted(chosen), "id": pool.id}

    def api_cpupool_destroy(self, pool):
        with self.lock:
            p = self._pool(pool)
            try:
                self.pools.check_destroy(p, pool)
            except PoolError as e:
                raise self._api_error(e.code, str(e)) from None
            del self.pools.pools[p.id]
            self.pools.save()
            if self.cgroups is not None:
                self.cgroups.remove_pool(p.id)
            self.say(f"cpupool {p.id} ({p.name}) destroyed")

    def api_cpupool_rename(self, pool, name):
        with self.lock:
            p = self._pool(pool)
            try:
                self.pools.check_rename(p, name, pool)
            except PoolError as e:
                raise self._api_error(e.code, str(e)) from None
            p.name = name
            self.pools.save()

    def api_cpupool_cpu_add(self, pool, cpus):
        with self.lock:
            p = self._pool(pool)
            errors = self.pools.add_cpus(p, cpus)
        self._pool_changed(p)
        return {"errors": errors}

    def api_cpupool_cpu_remove(self, pool, cpus):
        with self.lock:
            p = self._pool(pool)
            errors = self.pools.remove_cpus(p, cpus)
        self._pool_changed(p)
        return {"errors": errors}

    def api_cpupool_migrate(self, dom, pool):
        try:
            d = self.find(dom)
        except Exception:               # noqa: BLE001 - xl's message for any unknown domain
            if str(dom) in ("0", "Domain-0"):
                raise self._api_error("EPERM", _LIBXL_MOVEDOMAIN.format(domid=0, err=EPERM))
            raise self._api_error("ENOENT", f"unknown domain '{dom}'") from None
        with self.lock:
            p = self._pool(pool)
            old = self.pools.domains.get(d.domid, 0)
            if old == p.id:
                return
            try:
                self.pools.check_migrate(d.domid, p)
            except PoolError as e:
                raise self._api_error(e.code, str(e)) from None
            if self.cgroups is not None and d.pid:
                try:
                    self.cgroups.ensure_pool(p.id, p.cpus)
                    self.cgroups.move_domain(d.domid, old, p.id, d.pid)
                except (OSError, cgroups.CgroupError) as e:
                    raise self._api_error("EIO", _LIBXL_MOVEDOMAIN.format(
                        domid=d.domid, err=e.strerror or e)) from None
            self.pools.domains[d.domid] = p.id
            self.pools.save()
        self._call(d, "sched_pool", cpus=sorted(p.cpus), moved=True)
        self.say(f"domain {d.domid} ({d.name}) moved to cpupool {p.name}")

    def api_cpupool_numa_split(self):
        """xl cpupool-numa-split: a pool per NUMA node, Pool-0 renamed
        Pool-node<N> for the node of its first CPU; refused once pools are in use."""
        with self.lock:
            if len(self.pools.pools) > 1:
                raise self._api_error("EBUSY", "splitting not possible, already cpupools in use")
            p0 = self.pools.pools[0]
            nodes = {}
            for c in range(self.pools.nr_cpus):
                node = next((n for n in range(64) if c in host_node_cpus(n, self.pools.nr_cpus)),
                            0)
                nodes.setdefault(node, set()).add(c)
            first = min(p0.cpus) if p0.cpus else 0
            node0 = next(n for n, cs in nodes.items() if first in cs)
            p0.name = f"Pool-node{node0}"
            made = []
            for n, cs in sorted(nodes.items()):
                if n == node0:
                    continue
                self.pools.remove_cpus(p0, cs)
                pool = self.pools.create(f"Pool-node{n}", p0.sched, cs & self.pools.free_cpus())
                made.append(pool)
            self._pool_changed(p0)
            for pool in made:
                self._pool_changed(pool)
            return {"pools": [p.name for p in self.pools.sorted()]}
