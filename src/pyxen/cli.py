"""pyxen — the xl-compatible command line. Commands talk to pyxend over its
API; `create` also runs a domain stand-alone in the foreground when no
pyxend is running."""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import sys
import time
from pathlib import Path

from .toolstack.xlcfg import XlCfgError


# --- helpers -----------------------------------------------------------------------------
def _console_writer(stream):
    out = stream.buffer if hasattr(stream, "buffer") else stream

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()
    return write


def _crlf(write):
    """In raw terminal mode a bare LF does not return the carriage."""
    def w(data: bytes) -> None:
        write(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return w


def err(msg: str) -> None:
    print(msg, file=sys.stderr)


def client(args):
    from .toolstack.client import Client
    return Client(getattr(args, "run_dir", None))


def api(args, method, **params):
    from .toolstack.client import DaemonUnavailable, RpcError
    try:
        with client(args) as c:
            return c.call(method, **params)
    except DaemonUnavailable as e:
        err(f"pyxen: {e}")
        raise SystemExit(1)
    except RpcError as e:
        err(f"pyxen: {e.message}")
        raise SystemExit(1)


def state_letters(row: dict) -> str:
    letters = {"poweroff": "-", "reboot": "r", "suspend": "s", "crash": "c", "watchdog": "w",
               "soft_reset": "S"}
    return "".join([
        "r" if row.get("running") else "-",
        "b" if row.get("blocked") else "-",
        "p" if row.get("paused") else "-",
        "s" if row.get("shutdown") else "-",
        letters.get(row.get("reason"), "-") if row.get("shutdown") else "-",
        "d" if row.get("dying") else "-"])


def fmt_uptime(sec: float, short: bool = False) -> str:
    """An uptime as xl prints it (xl_info.c uptime_to_string): hours padded
    to two places, seconds left out in the short (-s) form."""
    days, rest = divmod(int(sec), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    t = "%2d:%02d" % (h, m) if short else "%2d:%02d:%02d" % (h, m, s)
    if days:
        return "%d day%s, %s" % (days, "s" if days > 1 else "", t)
    return t


# --- create ------------------------------------------------------------------------------
def cmd_create(args) -> int:
    from .toolstack.client import daemon_running
    if not args.quiet:
        err(f"Parsing config from {args.config}")
    try:
        with open(args.config) as f:
            text = f.read()
    except OSError as e:
        err(f"pyxen: cannot read {args.config}: {e.strerror}")
        return 66
    if daemon_running(getattr(args, "run_dir", None)) and not args.foreground:
        res = api(args, "create", config=text, path=os.path.abspath(args.config),
                  overrides=list(args.overrides), paused=args.paused)
        for w in res.get("warnings", []):
            err(w)
        if args.console:
            return attach_console(args, str(res["domid"]))
        return 0
    return create_foreground(args)


def create_foreground(args) -> int:
    from .build.errors import KernelImageError
    from .kvm import KvmUnavailable
    from .toolstack.domconfig import DomainConfig
    from .toolstack.builder import CreateError
    from .toolstack.runner import run_foreground

    try:
        cfg = DomainConfig.from_file(args.config, args.overrides)
    except XlCfgError as e:
        err(f"pyxen: {e}")
        return 64
    except OSError as e:
        err(f"pyxen: cannot read {args.config}: {e.strerror}")
        return 66
    for w in cfg.warnings:
        err(w)
    log_file = None
    logdir = os.environ.get("PYXEN_LOG_DIR") or os.path.expanduser("~/.local/state/pyxen")
    if args.console:
        console = _console_writer(sys.stdout)
    else:
        os.makedirs(logdir, exist_ok=True)
        path = os.path.join(logdir, f"guest-{cfg.name}.log")
        log_file = open(path, "ab")
        console = _console_writer(log_file)
        if not args.quiet:
            err(f"pyxen: no pyxend running: {cfg.name} runs in the foreground; "
                f"its console is logged to {path}")
    trace = open(args.trace, "w") if args.trace else None
    stdin = None
    saved_tty = None
    if args.console and sys.stdin is not None and not sys.stdin.closed:
        try:
            stdin = sys.stdin
            if sys.stdin.isatty():
                import termios
                import tty
                saved_tty = termios.tcgetattr(sys.stdin.fileno())
                tty.setraw(sys.stdin.fileno())
                console = _crlf(console)
        except (OSError, ValueError):
            stdin = None
    try:
        outcome = run_foreground(cfg, console=console, trace=trace, stdin=stdin,
                                 dump_dir=Path(logdir) / "dump")
    except KvmUnavailable as e:
        err(f"pyxen: {e}")
        return 69
    except (KernelImageError, CreateError) as e:
        err(f"pyxen: {e}")
        return 65
    finally:
        if saved_tty is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved_tty)
        if trace:
            trace.close()
        if log_file:
            log_file.close()
    res = outcome.result
    for core in outcome.cores:
        err(f"pyxen: core of domain {outcome.name} written to {core}")
    if res.reason == "crash":
        err(f"\npyxen: domain {outcome.name} crashed: {res.message}")
    elif not args.quiet:
        code = f" (code {res.code})" if res.code is not None else ""
        err(f"\npyxen: domain {outcome.name} shut down: {res.reason}{code}")
    return outcome.exit_status


# --- console -----------------------------------------------------------------------------
def attach_console(args, dom: str) -> int:
    from .toolstack.client import DaemonUnavailable
    fd_in = sys.stdin.fileno() if sys.stdin is not None and not sys.stdin.closed else None
    saved = None
    if fd_in is not None and os.isatty(fd_in):
        # raw mode first, and without flushing: keys typed while we attach are kept
        import termios
        import tty
        saved = termios.tcgetattr(fd_in)
        tty.setraw(fd_in, termios.TCSANOW)
    try:
        c = client(args)
        c.conn.send({"id": 1, "method": "console", "params": {"dom": dom}})
        reply = c.conn.recv()
    except DaemonUnavailable as e:
        _restore_tty(fd_in, saved)
        err(f"pyxen: {e}")
        return 1
    if reply is None or "error" in reply:
        _restore_tty(fd_in, saved)
        err(f"pyxen: {reply['error']['message'] if reply else 'pyxend closed the connection'}")
        return 1
    sock = c.conn.sock
    sock.settimeout(None)
    if c.conn.buf:
        os.write(1, bytes(c.conn.buf))
    try:
        watch = [sock] + ([fd_in] if fd_in is not None else [])
        while True:
            r, _, _ = select.select(watch, [], [])
            if sock in r:
                data = sock.recv(4096)
                if not data:
                    break
                os.write(1, data)
            if fd_in is not None and fd_in in r:
                data = os.read(fd_in, 1024)
                if not data:
                    watch.remove(fd_in)
                    fd_in = None
                    continue
                if b"\x1d" in data:            # Ctrl-] detaches
                    data = data[:data.index(b"\x1d")]
                    if data:
                        sock.sendall(data)
                    break
                sock.sendall(data)
    finally:
        _restore_tty(fd_in, saved)
        c.close()
    return 0


def _restore_tty(fd, saved) -> None:
    if saved is not None:
        import termios
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def cmd_console(args) -> int:
    return attach_console(args, args.domain)


# --- listing -----------------------------------------------------------------------------
def cmd_list(args) -> int:
    rows = api(args, "list")
    if args.domains:
        wanted = set(args.domains)
        rows = [r for r in rows if r["name"] in wanted or str(r["domid"]) in wanted]
        missing = wanted - {r["name"] for r in rows} - {str(r["domid"]) for r in rows}
        if missing:
            err(f"{sorted(missing)[0]} is an invalid domain identifier (rc=-6)")
            return 1
    if args.long:
        out = [{"domid": r["domid"], "config": {"c_info": {"name": r["name"], "uuid": r["uuid"],
                                                           "type": "pv"},
                                                "b_info": r.get("config", {})}}
               for r in rows if r["domid"] != 0]
        print(json.dumps(out, indent=4))
        return 0
    head = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    if args.verbose:
        head += "   UUID                            Reason-Code\tSecurity Label"
    print(head)
    codes = {"poweroff": 0, "reboot": 1, "suspend": 2, "crash": 3, "watchdog": 4}
    for r in rows:
        line = "%-40s %5d %5lu %5d     %s  %8.1f" % (r["name"], r["domid"], r["mem_mb"],
                                                     r["vcpus"], state_letters(r), r["cpu_time"])
        if args.verbose:
            code = codes.get(r.get("reason"), 0) if r.get("shutdown") else 0
            line += " %s %8d     %s" % (r["uuid"], code, "-")
        print(line)
    return 0


def cmd_info(args) -> int:
    i = api(args, "info")
    pairs = [("host", i["host"]), ("release", i["release"]), ("version", i["version"]),
             ("machine", i["machine"]), ("nr_cpus", i["nr_cpus"]),
             ("max_cpu_id", i["nr_cpus"] - 1), ("nr_nodes", 1), ("cores_per_socket", i["nr_cpus"]),
             ("threads_per_core", 1), ("cpu_mhz", i["cpu_mhz"]), ("virt_caps", i["virt_caps"]),
             ("total_memory", i["total_memory"]), ("free_memory", i["free_memory"]),
             ("memory_limit", i["memory_limit"]), ("promised_memory", i["promised_memory"]),
             ("xen_major", i["xen_major"]), ("xen_minor", i["xen_minor"]),
             ("xen_extra", i["xen_extra"]),
             ("xen_version", f"{i['xen_major']}.{i['xen_minor']}{i['xen_extra']}"),
             ("xen_caps", i["xen_caps"]), ("xen_scheduler", i["xen_scheduler"]),
             ("xen_pagesize", i["xen_pagesize"]), ("xen_commandline", ""),
             ("hypervisor", i["hypervisor"]), ("cc_compiler", f"Python {sys.version.split()[0]}"),
             ("xend_config_format", 4)]
    for k, v in pairs:
        print(f"{k:<23}: {v}")
    return 0


def format_cpumap(cpus, nr_cpus: int) -> str:
    """A set of host CPUs as xl's print_bitmap writes it: ranges ("0-3,6"), "all"
    when it runs from CPU 0 to the last, "none" when empty."""
    runs, start = [], None
    for i in range(nr_cpus + 1):
        if i < nr_cpus and i in cpus:
            start = i if start is None else start
        elif start is not None:
            runs.append((start, i - 1))
            start = None
    if not runs:
        return "none"
    if runs == [(0, nr_cpus - 1)]:
        return "all"
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def vcpu_line(v: dict, nr_cpus: int) -> str:
    """One row of xl vcpu-list (xl_vcpu.c print_vcpuinfo)."""
    line = "%-32s %5u %5u" % (v["name"], v["domid"], v["id"])
    if not v["online"]:
        line += "%5c %3c%cp " % ("-", "-", "-")
    else:
        line += "%5u %3c%c- " % (v.get("cpu", 0), "r" if v["state"] == "running" else "-",
                                 "b" if v["state"] == "blocked" else "-")
    hard = v.get("affinity") or range(nr_cpus)
    line += "%9.1f  " % v["cpu_time"]
    return line + format_cpumap(set(hard), nr_cpus) + " / " + \
        format_cpumap(set(range(nr_cpus)), nr_cpus)


def cmd_vcpu_list(args) -> int:
    print("%-32s %5s %5s %5s %5s %9s %s" % ("Name", "ID", "VCPU", "CPU", "State", "Time(s)",
                                            "Affinity (Hard / Soft)"))
    nr_cpus = host_nr_cpus()
    for dom in args.domains or [None]:
        rows = api(args, "vcpu_list", dom=dom) if dom is not None else api(args, "vcpu_list")
        for v in rows:
            print(vcpu_line(v, nr_cpus))
    return 0


def cmd_uptime(args) -> int:
    rows = api(args, "uptime")
    if args.domains:
        rows = [r for r in rows if r["name"] in args.domains or str(r["domid"]) in args.domains]
    if not args.short:
        print("Name                                ID Uptime")
    for r in rows:
        if args.short:
            print(" %s up %s, %s (%d)" % (time.strftime("%H:%M:%S"),
                                          fmt_uptime(r["uptime"], short=True),
                                          r["name"], r["domid"]))
        else:
            print("%-33s %4d %s" % (r["name"], r["domid"], fmt_uptime(r["uptime"])))
    return 0


def cmd_sched_credit(args) -> int:
    params = {}
    if args.weight is not None:
        params["weight"] = args.weight
    if args.cap is not None:
        params["cap"] = args.cap
    if params and not args.domain:
        err("Must specify a domain.")
        return 1
    rows = api(args, "sched_credit", dom=args.domain, **params) if args.domain else \
        api(args, "sched_credit")
    if params:
        return 0
    if not args.domain:             # all domains: by cpupool, as xl lists them
        print("Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us")
    print("%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap"))
    for r in rows:
        print("%-33s %4d %6d %4d" % (r["name"], r["domid"], r["weight"], r["cap"]))
    return 0


def cmd_top(args) -> int:
    """A live table like xentop (-b batch mode, -i iterations, -d delay)."""
    prev = {}
    n = 0
    while True:
        rows = api(args, "list")
        now = time.monotonic()
        total_mem = rows[0]["mem_mb"] * 1024 if rows else 1
        lines = ["      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS"]
        for r in rows:
            key = r["domid"]
            pct = 0.0
            if key in prev:
                t0, c0 = prev[key]
                if now > t0:
                    pct = 100 * (r["cpu_time"] - c0) / (now - t0)
            prev[key] = (now, r["cpu_time"])
            mem = r["mem_mb"] * 1024
            maxm = r.get("max_mem_mb", r["mem_mb"]) * 1024
            lines.append("%10s %6s %10d %6.1f %10d %6.1f %10d %9.1f %5d" % (
                r["name"][:10], state_letters(r), r["cpu_time"], pct, mem,
                100 * mem / total_mem, maxm, 100 * maxm / total_mem, r["vcpus"]))
        if not args.batch:
            sys.stdout.write("\x1b[H\x1b[2J")
        print("\n".join(lines), flush=True)
        n += 1
        if args.iterations and n >= args.iterations:
            return 0
        time.sleep(args.delay)


# --- simple commands --------------------------------------------------------------------------
def simple(method, wait_for_gone=False):
    def run(args) -> int:
        doms = [args.domain] if hasattr(args, "domain") else []
        if getattr(args, "all", False):
            doms = [str(r["domid"]) for r in api(args, "list")[1:]]
        for d in doms:
            api(args, method, dom=d)
        if wait_for_gone and getattr(args, "wait", False):
            return wait_gone(args, doms)
        return 0
    return run


def wait_gone(args, doms, timeout=300) -> int:
    end = time.monotonic() + timeout
    pending = set(doms)
    while pending and time.monotonic() < end:
        live = api(args, "list")
        names = {r["name"] for r in live} | {str(r["domid"]) for r in live}
        for d in list(pending):
            if d not in names:
                pending.discard(d)
        time.sleep(0.2)
    return 0 if not pending else 1


def cmd_domid(args) -> int:
    print(api(args, "domid", name=args.name))
    return 0


def cmd_domname(args) -> int:
    print(api(args, "domname", domid=args.domid))
    return 0


def cmd_rename(args) -> int:
    from .toolstack.domconfig import domain_name_problem
    problem = domain_name_problem(args.new_name)
    if problem:
        err(f"pyxen: rename: {problem}")
        return 1
    api(args, "rename", dom=args.domain, name=args.new_name)
    return 0


_C_SPACE = " \t\n\v\f\r"


def _c_strtol(s: str, unsigned: bool = False) -> tuple[int, str]:
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


def _int64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def parse_mem_size_kb(text: str) -> int:
    """xl's parse_mem_size_kb: a number (strtoll) and at most one unit letter, b, k,
    m, g or t in either case; no letter means MiB. The size in KiB (bytes are
    rounded down), or -1 when xl rejects the text (as xl, "-1k" too)."""
    kb, rest = _c_strtol(text)
    if len(os.fsencode(rest)) > 1:
        return -1
    unit = rest.lower()
    if unit in ("t", "g", "m", ""):
        kb = _int64(kb << {"t": 30, "g": 20, "m": 10, "": 10}[unit])
    elif unit == "b":
        kb >>= 10
    elif unit != "k":
        return -1
    return kb


# --- PV devices: <verb>-attach, -detach, -list of every kind in devkinds.DEVICE_KINDS ---------
def device_attach(kind):
    def run(args) -> int:
        params = {"dom": args.domain, "spec": ",".join(args.spec)}
        if kind.cli.attach_force_help:
            params["force"] = args.force
        if kind.cli.attach_sends_cwd:
            params["base_dir"] = os.getcwd()
        api(args, f"{kind.verb}_attach", **params)
        return 0
    return run


def device_detach(kind):
    def run(args) -> int:
        api(args, f"{kind.verb}_detach", dom=args.domain,
            **{kind.target_param: getattr(args, kind.cli.target_dest)}, force=args.force)
        return 0
    return run


def device_list(kind):
    def run(args) -> int:
        print(kind.cli.list_header)
        for dom in args.domains:
            for r in api(args, f"{kind.verb}_list", dom=dom):
                print(kind.cli.list_row(r))
        return 0
    return run


def add_device_commands(cmd, kind) -> None:
    """<verb>-attach, <verb>-detach and <verb>-list of a device kind."""
    v = kind.cli
    c = cmd(f"{kind.verb}-attach", device_attach(kind), v.attach_help,
            description=v.attach_description)
    c.add_argument("domain")
    c.add_argument("spec", nargs=v.spec_nargs, metavar=v.spec_metavar)
    if v.attach_force_help:
        c.add_argument("-f", "--force", action="store_true", help=v.attach_force_help)
    c = cmd(f"{kind.verb}-detach", device_detach(kind), v.detach_help,
            description=v.detach_description)
    c.add_argument("domain")
    c.add_argument(v.target_dest, metavar=v.target_metavar, help=v.target_help)
    c.add_argument("-f", "--force", action="store_true", help="remove without the guest")
    c = cmd(f"{kind.verb}-list", device_list(kind), v.list_help)
    c.add_argument("domains", nargs="+", metavar="domain")


def _set_memory(args, method: str, what: str) -> int:
    """mem-set / mem-max: xl's messages and exit status."""
    from .toolstack.client import DaemonUnavailable, RpcError
    kb = parse_mem_size_kb(args.memory)
    if kb == -1:
        err(f"invalid memory size: {args.memory}")
        return 1
    domid = args.domain
    try:
        with client(args) as c:
            domid = c.call("domid", name=args.domain) \
                if not (args.domain.isascii() and args.domain.isdigit()) else int(args.domain)
            c.call(method, dom=domid, kb=kb)
    except DaemonUnavailable as e:
        err(f"pyxen: {e}")
        return 1
    except RpcError as e:
        err(f"pyxen: {e.message}")
        if e.code != "ENOENT":
            err(f"cannot set domid {domid} {what} memory to : {args.memory}")
        return 1
    return 0


def cmd_mem_set(args) -> int:
    return _set_memory(args, "mem_set", "dynamic max")


def cmd_mem_max(args) -> int:
    return _set_memory(args, "mem_max", "static max")


def cmd_vcpu_set(args) -> int:
    api(args, "vcpu_set", dom=args.domain, count=args.count)
    return 0


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
    a, rest = _c_strtol(text, unsigned=True)
    if rest == text or a == ulong_max:
        return None
    b = a
    if rest.startswith("-"):
        b, rest2 = _c_strtol(rest[1:], unsigned=True)
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


def cmd_vcpu_pin(args) -> int:
    from .toolstack.client import DaemonUnavailable, RpcError
    vcpu, rest = _c_strtol(args.vcpu)
    if rest == args.vcpu or vcpu < 0:
        if args.vcpu != "all":
            err(f"Error: Invalid argument {args.vcpu} as VCPU.")
            return 1
        if args.force:
            err("Error: --force and 'all' as VCPU not allowed.")
            return 1
        vcpu = -1
    nr = host_nr_cpus()
    try:
        hard = None if args.cpus == "-" else parse_cpurange(args.cpus, nr)
        soft = None if args.soft in (None, "-") else parse_cpurange(args.soft, nr)
    except CpumapError as e:
        err(str(e))
        return 1
    if hard is not None and not hard:
        err("vcpu hard affinity map is empty")
        return 1
    if soft is not None:
        err("pyxen: warning: soft affinity is not supported (a vCPU is a Linux thread, "
            f"which has only hard affinity): {args.soft} not applied")
    if hard is None:
        return 0
    try:
        with client(args) as c:
            c.call("vcpu_pin", dom=args.domain, vcpu="all" if vcpu == -1 else vcpu,
                   cpus=sorted(hard))
    except DaemonUnavailable as e:
        err(f"pyxen: {e}")
        return 1
    except RpcError as e:
        err(f"pyxen: {e.message}")
        if e.code == "ENOENT":
            return 1
        if vcpu == -1:
            err("Could not set affinity.")
            return 0            # as xl: an 'all' that fails still exits 0
        err(f"Could not set affinity for vcpu `{vcpu}'.")
        return 1
    return 0


def cmd_dmesg(args) -> int:
    for line in api(args, "dmesg"):
        print(line)
    return 0


def cmd_log(args) -> int:
    for line in api(args, "log", lines=args.lines):
        print(line)
    return 0


def cmd_prepare_linux(args) -> int:
    """Fetch Debian's cloud kernel and busybox (apt, by package name; cached) and
    build the initramfs examples/linux.cfg boots."""
    from .build.linux_guest import prepare_linux
    from .build.fetch import FetchError
    try:
        g = prepare_linux()
    except FetchError as e:
        err(f"pyxen: {e}")
        return 1
    print(f"kernel  {g.kernel}")
    print(f"initrd  {g.initrd}")
    return 0


# --- the parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxen", description="pyxen: Xen on KVM, with xl's commands.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("--run-dir", help="pyxend's run directory (default $PYXEN_RUN_DIR or /run/pyxen)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name, func, help_, **kw):
        sp = sub.add_parser(name, help=help_, description=kw.pop("description", help_))
        sp.set_defaults(func=func)
        return sp

    c = cmd("create", cmd_create, "create a domain from an xl.cfg file",
            description="Create a domain from an xl.cfg(5) file. With pyxend running the "
            "domain runs in its own process under pyxend; without it, it runs in the "
            "foreground until it is gone, and the exit status tells why: 0 poweroff, "
            "1 crash, 2 reboot, 3 suspend, 4 watchdog, 5 soft_reset, 6 destroyed; 64 config "
            "error, 65 bad kernel, 69 no KVM.")
    c.add_argument("config", metavar="FILE.cfg")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings that override the file (xl syntax)")
    c.add_argument("-c", dest="console", action="store_true", help="attach to the console")
    c.add_argument("-q", dest="quiet", action="store_true", help="quiet")
    c.add_argument("-p", dest="paused", action="store_true", help="leave the domain paused")
    c.add_argument("-e", dest="no_restart", action="store_true",
                   help="do not wait in the background for the domain's death (accepted)")
    c.add_argument("-V", dest="vnc", action="store_true", help="attach to VNC (no graphics: ignored)")
    c.add_argument("-F", "--foreground", action="store_true",
                   help="run in this process even when pyxend is running")
    c.add_argument("--trace", metavar="FILE",
                   help="(foreground) write a trace of hypercalls and traps to FILE")

    c = cmd("list", cmd_list, "list domains")
    c.add_argument("-l", "--long", action="store_true", help="JSON, like xl list -l")
    c.add_argument("-v", "--verbose", action="store_true", help="also UUID and reason code")
    c.add_argument("domains", nargs="*")

    for name, method, h in (("destroy", "destroy", "terminate a domain immediately"),
                            ("pause", "pause", "pause a domain's vCPUs"),
                            ("unpause", "unpause", "let a paused domain run")):
        c = cmd(name, simple(method), h)
        c.add_argument("domain")
    for name, method, h in (("shutdown", "shutdown", "ask a domain to shut down (control/shutdown)"),
                            ("reboot", "reboot", "ask a domain to reboot (control/shutdown)")):
        c = cmd(name, simple(method, wait_for_gone=True), h)
        c.add_argument("domain", nargs="?")
        c.add_argument("-w", "--wait", action="store_true", help="wait until it is gone")
        c.add_argument("-a", "--all", action="store_true", help="all domains")
        c.add_argument("-F", dest="force", action="store_true",
                       help="accepted for xl compatibility (no ACPI fallback for PV)")

    c = cmd("console", cmd_console, "attach to a domain's console (Ctrl-] detaches)")
    c.add_argument("domain")
    c.add_argument("-t", dest="type", choices=["pv", "serial"], default="pv")
    c.add_argument("-n", dest="num", type=int, default=0)
    cmd("info", cmd_info, "host and hypervisor information")
    cmd("dmesg", cmd_dmesg, "the hypervisor's log (pyxend and domain processes)")
    c = cmd("log", cmd_log, "pyxend's log")
    c.add_argument("-n", dest="lines", type=int, default=100)
    c = cmd("domid", cmd_domid, "domain name to id")
    c.add_argument("name")
    c = cmd("domname", cmd_domname, "domain id to name")
    c.add_argument("domid", type=int)
    c = cmd("rename", cmd_rename, "rename a domain",
            description="Give a domain a new name. Names follow the rules of xl.cfg's name=: "
            "unique, at most 64 printable characters, no '/', not '.' or '..', not all "
            "digits, not Domain-0.")
    c.add_argument("domain")
    c.add_argument("new_name")
    c = cmd("uptime", cmd_uptime, "domains' uptimes")
    c.add_argument("-s", dest="short", action="store_true")
    c.add_argument("domains", nargs="*")
    from .toolstack.devkinds import DEVICE_KINDS
    for kind in DEVICE_KINDS:
        add_device_commands(cmd, kind)
    c = cmd("mem-set", cmd_mem_set, "set a domain's memory target (the balloon driver acts)")
    c.add_argument("domain")
    c.add_argument("memory")
    c = cmd("mem-max", cmd_mem_max, "set a domain's maximum memory")
    c.add_argument("domain")
    c.add_argument("memory")
    c = cmd("vcpu-set", cmd_vcpu_set, "set the number of online vCPUs")
    c.add_argument("domain")
    c.add_argument("count", type=int)
    c = cmd("vcpu-list", cmd_vcpu_list, "list vCPUs",
            description="List the vCPUs of every domain (or of the domains named), as xl "
            "vcpu-list: the host CPU each last ran on, its state (r running, b blocked, "
            "p offline), its CPU time and its hard / soft affinity. Domain-0 is the host: "
            "one vCPU per host CPU, vCPU i on CPU i. Soft affinity is always all.")
    c.add_argument("domains", nargs="*", metavar="domain")
    c = cmd("vcpu-pin", cmd_vcpu_pin, "pin a vCPU to host CPUs",
            description="Set a vCPU's hard affinity (the host CPUs its thread may run on). "
            "VCPU is a number or 'all'. CPUS and SOFT are xl cpumaps: comma-separated "
            "'all', 'N', 'N-M', 'node:N' or 'nodes:N-M' (the host's NUMA nodes), each "
            "optionally prefixed with '^' to exclude; '-' leaves it as it is. Soft affinity "
            "is checked and then not applied (Linux threads have none): pyxen warns.")
    c.add_argument("-f", "--force", action="store_true",
                   help="accepted for xl compatibility (not with VCPU 'all')")
    c.add_argument("-i", "--ignore-global-affinity-masks", dest="ignore_masks",
                   action="store_true", help="accepted for xl compatibility (no global masks)")
    c.add_argument("domain")
    c.add_argument("vcpu", metavar="VCPU")
    c.add_argument("cpus", metavar="CPUS")
    c.add_argument("soft", nargs="?", metavar="SOFT",
                   help="soft affinity: checked, then not applied (pyxen warns)")
    c = cmd("sched-credit", cmd_sched_credit, "credit scheduler weight and cap")
    c.add_argument("-d", dest="domain")
    c.add_argument("-w", dest="weight", type=int)
    c.add_argument("-c", dest="cap", type=int)
    cmd("prepare-linux", cmd_prepare_linux,
        "fetch Debian's kernel and busybox and build the Linux guest's initramfs")
    c = cmd("top", cmd_top, "a live table of domains (like xentop)")
    c.add_argument("-b", dest="batch", action="store_true", help="batch mode")
    c.add_argument("-i", dest="iterations", type=int, default=0)
    c.add_argument("-d", dest="delay", type=float, default=1.0)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(name)s: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "command", None) in ("shutdown", "reboot") and not args.all and not args.domain:
        parser.error(f"{args.command}: a domain or -a is required")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
