"""xl's cpupool-* commands (xl_cpupool.c) and the per-pool listings of
sched-credit / sched-credit2 (xl_sched.c sched_domain_output). pyxend keeps
the pools (toolstack/cpupools.py); messages and output formats are xl's."""
from __future__ import annotations

import os
import sys

from .toolstack.cpumap import CpumapError, host_nr_cpus, parse_cpurange

CREDIT_POOL_LINE = "Cpupool {}: tslice=30ms ratelimit=1000us migration-delay=0us"
CREDIT2_POOL_LINE = "Cpupool {}: ratelimit=1000us"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


class _Failed(Exception):
    pass


def _call(args, method, **params):
    """A request to pyxend; its refusal's message is xl's, printed as it is."""
    from .toolstack.client import Client, DaemonUnavailable, RpcError
    try:
        with Client(getattr(args, "run_dir", None)) as c:
            return c.call(method, **params)
    except DaemonUnavailable as e:
        _err(f"pyxen: {e}")
        raise _Failed from None
    except RpcError as e:
        _err(e.message)
        raise _Failed from None


def _run(fn):
    def wrapped(args) -> int:
        try:
            return fn(args)
        except _Failed:
            return 1
    wrapped.__doc__ = fn.__doc__
    return wrapped


# --- commands ----------------------------------------------------------------------
@_run
def cmd_cpupool_create(args) -> int:
    """xl cpupool-create [-f FILE] [-n] [FILE] [KEY=VALUE...]"""
    from .toolstack.xlcfg import XlCfgError, parse
    filename, extra = args.defconfig, []
    for a in args.rest:
        if "=" in a:
            extra.append(a)
        elif filename is None:
            filename = a
        else:
            _err("'xl cpupool-create' takes [options] [<ConfigFile>] [Variable=value ...]")
            return 1
    text = ""
    if filename is not None:
        try:
            with open(filename) as f:
                text = f.read()
        except OSError as e:
            _err(f"Failed to read config file: {filename}: {e.strerror}")
            return 1
        src = filename
    else:
        src = "command line"
    if extra:
        text += "\n" + "\n".join(extra) + "\n"
    try:
        cfg = parse(text, src)
    except XlCfgError as e:
        _err(str(e))
        _err(f"Failed to parse config file: {os.strerror(22)}")
        return 1
    name = cfg["name"] if "name" in cfg and isinstance(cfg["name"], str) else None
    if name is None and filename is not None:
        name = os.path.basename(filename)
    sched = cfg["sched"] if "sched" in cfg and isinstance(cfg["sched"], str) else None
    nodes = cpus = None
    if "nodes" in cfg and isinstance(cfg["nodes"], list):
        nodes = [_atoi(x) for x in cfg["nodes"]]
    elif "cpus" in cfg and isinstance(cfg["cpus"], list):
        cpus = [_atoi(x) for x in cfg["cpus"]]
    elif "cpus" in cfg and isinstance(cfg["cpus"], str):
        try:
            cpus = sorted(parse_cpurange(cfg["cpus"], host_nr_cpus()))
        except CpumapError as e:
            _err(str(e))
            return 1
    if not name:
        _err("Missing cpupool name!")
        return 1
    if sched == "":                 # libxl_scheduler_from_string knows no ""
        _err("Unknown scheduler")
        return 1
    r = _call(args, "cpupool_create", name=name, sched=sched or "", cpus=cpus, nodes=nodes,
              dryrun=bool(args.dryrun))
    print(f'Using config file "{src}"')
    print(f"cpupool name:   {r['name']}")
    print(f"scheduler:      {r['sched']}")
    print(f"number of cpus: {len(r['cpus'])}")
    return 0


def _atoi(v) -> int:
    """C's atoi, as xl reads a list item."""
    from .toolstack.cpumap import c_strtol
    return c_strtol(str(v))[0]


@_run
def cmd_cpupool_list(args) -> int:
    from .toolstack.cpupools import list_lines
    params = {"pool": args.pool} if args.pool is not None else {}
    r = _call(args, "cpupool_list", **params)
    for line in list_lines(r["pools"], args.cpus):
        print(line)
    return 0


@_run
def cmd_cpupool_destroy(args) -> int:
    _call(args, "cpupool_destroy", pool=args.pool)
    return 0


@_run
def cmd_cpupool_rename(args) -> int:
    _call(args, "cpupool_rename", pool=args.pool, name=args.name)
    return 0


def _cpus(text: str) -> list[int] | None:
    try:
        return sorted(parse_cpurange(text, host_nr_cpus()))
    except CpumapError as e:
        _err(str(e))
        return None


@_run
def cmd_cpupool_cpu_add(args) -> int:
    cpus = _cpus(args.cpus)
    if cpus is None:
        return 1
    r = _call(args, "cpupool_cpu_add", pool=args.pool, cpus=cpus)
    if r["errors"]:
        for line in r["errors"]:
            _err(line)
        _err(f"some cpus may not have been added to {args.pool}")
    return 0


@_run
def cmd_cpupool_cpu_remove(args) -> int:
    cpus = _cpus(args.cpus)
    if cpus is None:
        return 1
    r = _call(args, "cpupool_cpu_remove", pool=args.pool, cpus=cpus)
    if r["errors"]:
        for line in r["errors"]:
            _err(line)
        _err(f"Some cpus may have not or only partially been removed from '{args.pool}'.")
        _err(f"If a cpu can't be added to another cpupool, add it to '{args.pool}' again "
             "and retry.")
    return 0


@_run
def cmd_cpupool_migrate(args) -> int:
    _call(args, "cpupool_migrate", dom=args.domain, pool=args.pool)
    return 0


@_run
def cmd_cpupool_numa_split(args) -> int:
    _call(args, "cpupool_numa_split")
    return 0


def add_commands(cmd) -> None:
    """Register the cpupool-* commands with cli.build_parser's `cmd` helper."""
    pools = ("pyxend keeps the pools in its run directory; each is a cpuset of the host "
             "(cgroups) or, without cgroups, the CPUs its domains' vCPU threads may use.")
    c = cmd("cpupool-create", cmd_cpupool_create, "create a new CPU pool",
            description="Create a CPU pool as xl cpupool-create, from an xlcpupool.cfg(5) "
            "file and/or KEY=VALUE settings: name= (default: the file's name), sched= "
            "(credit or credit2, default credit), cpus= (a cpumap string such as \"2-3\", "
            "or a list of CPU numbers) or nodes= (a list of NUMA nodes: their free CPUs). "
            "The CPUs must be free: take them out of Pool-0 first (cpupool-cpu-remove), "
            "as in Xen. " + pools)
    c.add_argument("rest", nargs="*", metavar="[FILE] [KEY=VALUE]",
                   help="the config file and settings added to it (xl syntax)")
    c.add_argument("-f", "--defconfig", dest="defconfig", metavar="FILE",
                   help="use the given configuration file")
    c.add_argument("-n", "--dryrun", dest="dryrun", action="store_true",
                   help="dry run: print the resulting configuration, create nothing")
    c = cmd("cpupool-list", cmd_cpupool_list, "list CPU pools on host",
            description="List the CPU pools as xl cpupool-list: Name, CPUs (how many), "
            "Sched, Active (always y) and Domain count (Pool-0 counts Domain-0); with -c "
            "each pool's CPU list.")
    c.add_argument("-c", "--cpus", dest="cpus", action="store_true",
                   help="output the list of CPUs used by each pool")
    c.add_argument("pool", nargs="?", metavar="CPUPOOL", help="only this pool (name or id)")
    c = cmd("cpupool-destroy", cmd_cpupool_destroy, "deactivates a CPU pool",
            description="Destroy a CPU pool; its CPUs become free. Refused for Pool-0 and "
            "for a pool that holds domains (xl: Can't destroy cpupool).")
    c.add_argument("pool", metavar="CPUPOOL")
    c = cmd("cpupool-rename", cmd_cpupool_rename, "renames a CPU pool",
            description="Give a CPU pool a new name (a name another pool has is refused).")
    c.add_argument("pool", metavar="CPUPOOL")
    c.add_argument("name", metavar="NEWNAME")
    c = cmd("cpupool-cpu-add", cmd_cpupool_cpu_add, "adds CPUs to a CPU pool",
            description="Add free host CPUs (a cpumap: N, N-M, node:N, ...) to a pool; "
            "a CPU in another pool is not taken (libxl's error, then xl's 'some cpus may "
            "not have been added').")
    c.add_argument("pool", metavar="CPUPOOL")
    c.add_argument("cpus", metavar="CPUS", help="CPU nr, range or node:N")
    c = cmd("cpupool-cpu-remove", cmd_cpupool_cpu_remove, "removes CPUs from a CPU pool",
            description="Take host CPUs out of a pool; they become free. A pool's last CPU "
            "stays while it holds domains (Device or resource busy), as in Xen; Pool-0 "
            "always holds Domain-0.")
    c.add_argument("pool", metavar="CPUPOOL")
    c.add_argument("cpus", metavar="CPUS", help="CPU nr, range or node:N")
    c = cmd("cpupool-migrate", cmd_cpupool_migrate, "moves a domain into a CPU pool",
            description="Move a running domain to another pool: its cgroup moves to the "
            "pool's cpuset and its vCPUs' hard affinity is reset to the pool's CPUs (as Xen "
            "resets it). The pool must have CPUs; Domain-0 stays in Pool-0.")
    c.add_argument("domain", metavar="DOMAIN")
    c.add_argument("pool", metavar="CPUPOOL")
    cmd("cpupool-numa-split", cmd_cpupool_numa_split,
        "splits up the machine into one CPU pool per NUMA node",
        description="One pool per NUMA node (Pool-node<N>, Pool-0 renamed for its node), "
                    "as xl; refused when pools other than Pool-0 exist. Domain-0's vCPUs "
                    "(the host's CPUs) are not touched.")


# --- sched-credit / sched-credit2 listings by pool ---------------------------------------
def sched_listing(args, scheduler: str, pool: str | None) -> int:
    """Every domain by pool, for the pools of this scheduler (or the one pool
    asked for), as xl's sched_domain_output: unknown pool 'X' for a pool that
    does not exist, nothing for a pool of another scheduler."""
    from .toolstack.cpupools import Pools
    try:
        r = _call(args, "cpupool_list")
        rows = _call(args, "sched_credit")
    except _Failed:
        return 1
    pools = r["pools"]
    if pool is not None:
        want = Pools.__new__(Pools)
        want.pools = {p["id"]: _PoolView(p) for p in pools}
        found = want.find(pool)
        if found is None:
            _err(f"unknown cpupool '{pool}'")
            return 1
        pools = [p for p in pools if p["id"] == found.id]
    line = CREDIT_POOL_LINE if scheduler == "credit" else CREDIT2_POOL_LINE
    for p in pools:
        if p["sched"] != scheduler:
            continue
        print(line.format(p["name"]))
        print("%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap"))
        for d in rows:
            if d.get("poolid", 0) == p["id"]:
                print("%-33s %4d %6d %4d" % (d["name"], d["domid"], d["weight"], d["cap"]))
    return 0


class _PoolView:
    def __init__(self, row: dict):
        self.id, self.name = row["id"], row["name"]
