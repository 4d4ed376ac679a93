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

from .toolstack.cpumap import (CpumapError, c_strtol as _c_strtol, host_nr_cpus,  # noqa: F401
                               host_node_cpus, parse_cpurange)
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


def xl_conf(args):
    """xl.conf (toolstack/xlconf.py: /etc/xen/xl.conf or $PYXEN_XL_CONF), read
    once per command, its warnings and notes on stderr; a syntax error in it
    ends the command, as in xl."""
    conf = getattr(args, "xl_conf_read", None)
    if conf is None:
        from .toolstack.xlconf import load
        try:
            conf = load()
        except XlCfgError as e:
            err(f"pyxen: {e}")
            raise SystemExit(1)
        for line in conf.warnings + conf.notes:
            err(line)
        args.xl_conf_read = conf
    return conf


# --- create ------------------------------------------------------------------------------
def cmd_create(args) -> int:
    from .toolstack.client import daemon_running
    conf = xl_conf(args)
    if not args.quiet:
        err(f"Parsing config from {args.config}")
    if args.dryrun or args.debug:
        status = print_parsed_config(args)
        if status or args.dryrun:
            return status
    try:
        with open(args.config) as f:
            text = f.read()
    except OSError as e:
        err(f"pyxen: cannot read {args.config}: {e.strerror}")
        return 66
    if daemon_running(getattr(args, "run_dir", None)) and not args.foreground:
        res = api(args, "create", config=text, path=os.path.abspath(args.config),
                  overrides=list(args.overrides), paused=args.paused,
                  xl_conf=conf.defaults())
        for w in res.get("warnings", []):
            err(w)
        if args.console:
            return attach_console(args, str(res["domid"]))
        return 0
    return create_foreground(args)


def load_config(args, check_files: bool = True):
    """args.config with args.overrides and xl.conf, its warnings printed:
    (DomainConfig, 0), or (None, the exit status) after saying why not."""
    from .toolstack.domconfig import DomainConfig
    try:
        cfg = DomainConfig.from_file(args.config, args.overrides, check_files=check_files,
                                     xl_conf=xl_conf(args))
    except XlCfgError as e:
        err(f"pyxen: {e}")
        return None, 64
    except OSError as e:
        err(f"pyxen: cannot read {args.config}: {e.strerror}")
        return None, 66
    for w in cfg.warnings:
        err(w)
    return cfg, 0


def print_parsed_config(args) -> int:
    """create -n / -d: the parsed config as libxl's JSON (xl's create_domain
    prints libxl_domain_config_to_json), on stdout for a dry run, on
    stderr before the domain is created for -d. The kernel and ramdisk
    need not exist for a dry run (xl does not look at them either)."""
    from .toolstack.libxljson import domain_config, dumps
    cfg, status = load_config(args, check_files=not args.dryrun)
    if cfg is None:
        return status
    out = sys.stdout if args.dryrun else sys.stderr
    out.write(dumps(domain_config(cfg.to_dict())))
    out.flush()
    return 0


def cmd_config_update(args) -> int:
    """xl config-update (xl_misc.c main_config_update): DOM [CFG] [-f CFG] [-d]
    [KEY=VALUE...], xl's messages; the config is checked here (and printed as
    libxl's JSON with -d), then pyxend keeps it for the domain's next restart."""
    from .toolstack.client import DaemonUnavailable, RpcError
    from .toolstack.domconfig import DomainConfig
    from .toolstack.libxljson import domain_config, dumps
    conf = xl_conf(args)
    err("WARNING: xl now has better capability to manage domain configuration, "
        "avoid using this command when possible")
    filename = args.defconfig
    overrides = []
    for a in args.rest:
        if "=" in a:
            overrides.append(a)
        elif filename is None:
            filename = a
        else:
            err(f"pyxen config-update: one config file only ({filename}, then {a})")
            return 2
    rows = api(args, "list", dom=args.domain)            # as xl, the domain first
    if not filename:
        err("Config file not specified")
        return 1
    try:
        with open(filename) as f:
            text = f.read()
    except OSError as e:
        err(f"Failed to read config file: {filename}: {e.strerror}")
        return 1
    try:
        cfg = DomainConfig.from_file(filename, overrides, xl_conf=conf)
    except XlCfgError as e:
        err(f"pyxen: {e}")
        return 1
    for w in cfg.warnings:
        err(w)
    if args.debug:
        sys.stdout.write(dumps(domain_config(cfg.to_dict())))
        sys.stdout.flush()
    err(f"setting dom{rows[0]['domid']} configuration")
    try:
        with client(args) as c:
            c.call("config_update", dom=rows[0]["domid"], config=text,
                   path=os.path.abspath(filename), overrides=overrides,
                   xl_conf=conf.defaults())
    except (DaemonUnavailable, RpcError) as e:
        err(f"pyxen: {getattr(e, 'message', e)}")
        err("failed to update configuration")
        return 1
    return 0


def create_foreground(args) -> int:
    from .build.errors import KernelImageError
    from .kvm import KvmUnavailable
    from .toolstack.builder import CreateError
    from .toolstack.runner import run_foreground

    cfg, status = load_config(args)
    if cfg is None:
        return status
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
def escape_byte(text: str | None) -> int:
    """xl console -e: "^X" is Ctrl-X, else the character itself (default ^])."""
    if not text:
        return 0x1d
    if len(text) == 2 and text[0] == "^":
        return ord(text[1].upper()) & 0x1f
    return ord(text[0]) & 0xff


def attach_console(args, dom: str, escape: str | None = None) -> int:
    from .toolstack.client import DaemonUnavailable
    detach = bytes([escape_byte(escape)])
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
                if detach in data:            # Ctrl-] (or -e's) detaches
                    data = data[:data.index(detach)]
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
    """xl console: -t pv (the default) or serial, -n the console's number.
    A pyxen domain has one console, PV console 0 (XenStore console/); it
    has no serial port (a PV guest has none) nor further PV consoles: those
    end as xl ends when the console is missing."""
    if args.type not in (None, "pv", "serial", "vuart"):
        err("console type supported are: pv, serial, vuart")
        return 1
    if args.type in ("serial", "vuart") or (args.type == "pv" and args.num != 0):
        row = api(args, "list", dom=args.domain)  # as xl, an unknown domain is the error
        if args.type == "serial" and args.num == 0 and \
                (row[0].get("config") or {}).get("type") == "hvm":
            # an HVM domain's console is its first serial port (QEMU's)
            return attach_console(args, args.domain, escape=args.escape)
        what = f"{args.type} console {args.num}"
        err(f"pyxen: domain {args.domain} has no {what} (its only console is pv 0)")
        err("Unable to attach console")
        return 1
    return attach_console(args, args.domain, escape=args.escape)


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
        xl_conf(args)              # output_format: only JSON (sxp is warned about)
        print(list_long(rows))
        return 0
    head = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    if args.verbose:
        head += "   UUID                            Reason-Code\tSecurity Label"
    if args.cpupool:
        head += "         Cpupool"
    print(head)
    for r in rows:
        print(list_line(r, args.verbose) + ("%16s" % r.get("pool", "Pool-0")
                                            if args.cpupool else ""))
    return 0


def cmd_vm_list(args) -> int:
    """xl vm-list (xl_info.c list_vm): the guests (not Domain-0) by UUID,
    domain id and name, in xl's columns."""
    print("UUID                                  ID    name")
    for r in api(args, "list"):
        if r["domid"] != 0:
            print("%s  %d    %-30s" % (r["uuid"], r["domid"], r["name"]))
    return 0


#: libxl_shutdown_reason (Xen's SHUTDOWN_* codes)
SHUTDOWN_CODES = {"poweroff": 0, "reboot": 1, "suspend": 2, "crash": 3, "watchdog": 4,
                  "soft_reset": 5}


def list_line(r: dict, verbose: bool = False) -> str:
    """One row of xl list (xl_info.c list_domains); verbose adds the UUID, the
    shutdown reason code (hex, "-" while the domain runs) and the security
    label ("-": no XSM)."""
    line = "%-40s %5d %5lu %5d     %s  %8.1f" % (r["name"], r["domid"], r["mem_mb"],
                                                 r["vcpus"], state_letters(r), r["cpu_time"])
    if verbose:
        line += " " + r["uuid"]
        if r.get("shutdown"):
            line += " %8x" % SHUTDOWN_CODES.get(r.get("reason"), 0)
        else:
            line += " %8s" % "-"
        line += " %16s" % "-"
    return line


def list_long(rows: list[dict]) -> str:
    """xl list -l: a JSON array of {"domid", "config"} with each domain's libxl
    domain configuration (libxljson), Domain-0 left out as xl leaves it
    out (it has no stored configuration). Ends with the blank line xl's
    puts() of yajl's buffer leaves."""
    from .toolstack.libxljson import domain_config, dumps
    out = []
    for r in rows:
        if r["domid"] == 0 or not r.get("config"):
            continue
        vinfo = r.get("vcpu_info")
        online = [v["id"] for v in vinfo if v.get("online")] if vinfo else \
            list(range(r["vcpus"]))
        live = {"online": online, "weight": r.get("weight"), "cap": r.get("cap"),
                "poolid": r.get("poolid"), "sched": r.get("pool_sched")}
        for k in ("target_kb", "max_kb"):
            if k in r:
                live[k] = r[k]
        live.update(r.get("libxl_devices") or {})
        out.append({"domid": r["domid"], "config": domain_config(r["config"], live)})
    return dumps(out)


def cmd_info(args) -> int:
    i = api(args, "info")
    pairs = [("host", i["host"]), ("release", i["release"]), ("version", i["version"]),
             ("machine", i["machine"]), ("nr_cpus", i["nr_cpus"]),
             ("max_cpu_id", i["nr_cpus"] - 1), ("nr_nodes", len(i.get("numa_nodes") or [0])),
             ("cores_per_socket", i["nr_cpus"]),
             ("threads_per_core", 1), ("cpu_mhz", i["cpu_mhz"]), ("virt_caps", i["virt_caps"]),
             ("total_memory", i["total_memory"]), ("free_memory", i["free_memory"]),
             ("memory_limit", i["memory_limit"]), ("promised_memory", i["promised_memory"]),
             ("free_cpus", i.get("free_cpus", 0)),
             ("xen_major", i["xen_major"]), ("xen_minor", i["xen_minor"]),
             ("xen_extra", i["xen_extra"]),
             ("xen_version", f"{i['xen_major']}.{i['xen_minor']}{i['xen_extra']}"),
             ("xen_caps", i["xen_caps"]), ("xen_scheduler", i["xen_scheduler"]),
             ("xen_pagesize", i["xen_pagesize"]), ("xen_commandline", ""),
             ("hypervisor", i["hypervisor"]),
             ("pyxen_scheduling", i.get("sched_backend", "")), ("cc_compiler", f"Python {sys.version.split()[0]}"),
             ("xend_config_format", 4)]
    if args.numa:
        xen_at = next(n for n, (k, _) in enumerate(pairs) if k == "xen_major")
        for k, v in pairs[:xen_at]:
            print(f"{k:<23}: {v}")
        print(numa_info_text(i), end="")
        pairs = pairs[xen_at:]
    elif args.name:           # xl info NAME: the values of the lines starting with NAME
        for k, v in pairs:
            if f"{k:<23}: {v}".startswith(args.name):
                print(v)
        return 0
    for k, v in pairs:
        print(f"{k:<23}: {v}")
    return 0


def numa_info_text(i: dict) -> str:
    """xl info -n's sections (xl_info.c output_topologyinfo, output_numainfo)."""
    lines = ["cpu_topology           :", "cpu:    core    socket     node"]
    for c in i.get("cpu_topology", []):
        if c["core"] is not None:
            lines.append("%3d:    %4d     %4d     %4d" % (c["cpu"], c["core"], c["socket"],
                                                         -1 if c["node"] is None else c["node"]))
    lines += ["device topology        :", "device           node"]
    pci = i.get("pci_topology", [])
    for d in pci:
        lines.append("%04x:%02x:%02x.%01x      %d" % (d["seg"], d["bus"], d["dev"], d["fn"],
                                                     d["node"]))
    if not pci:
        lines.append("No device topology data available")
    lines += ["numa_info              :", "node:    memsize    memfree    distances"]
    for n in i.get("numa_nodes", []):
        lines.append("%4d:    %6d     %6d      %s" % (n["node"], n["size_mb"], n["free_mb"],
                                                     ",".join(map(str, n["distances"]))))
    return "\n".join(lines) + "\n"


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
    if args.cpupool is not None and (args.domain or params):
        err("Specifying a cpupool is not allowed with other options.")
        return 1
    if params and not args.domain:
        err("Must specify a domain.")
        return 1
    if not args.domain:             # all domains: by cpupool, as xl lists them
        from .cpupoolcli import sched_listing
        return sched_listing(args, "credit", args.cpupool)
    rows = api(args, "sched_credit", dom=args.domain, **params)
    if params:
        return 0
    print("%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap"))
    for r in rows:
        print("%-33s %4d %6d %4d" % (r["name"], r["domid"], r["weight"], r["cap"]))
    return 0


#: credit2's pool-wide parameter as xl shows it (Xen's default sched_ratelimit_us)
CREDIT2_POOL_LINE = "Cpupool Pool-0: ratelimit=1000us"


def cmd_sched_credit2(args) -> int:
    """xl sched-credit2 (xl_sched.c main_sched_credit2): its checks, messages
    and listing. pyxen has one scheduler, Linux's, under both names: the weight
    and cap are the ones sched-credit shows and sets (hv/sched.py), and the
    only pool is Pool-0."""
    from .toolstack.client import DaemonUnavailable, RpcError
    weight = _c_strtol(args.weight)[0] if args.weight is not None else None
    cap = _c_strtol(args.cap)[0] if args.cap is not None else None
    if args.cpupool is not None and (args.domain or weight is not None or cap is not None):
        err("Specifying a cpupool is not allowed with other options.")
        return 1
    if not args.domain and (weight is not None or cap is not None):
        err("Must specify a domain.")
        return 1
    if args.schedparam:
        if args.ratelimit is not None:
            err("pyxen: the rate limit is not settable: vCPUs are Linux threads, scheduled "
                "by the host kernel")
            err("libxl_sched_credit2_params_set failed.")
            return 1
        print(CREDIT2_POOL_LINE)
        return 0
    head = "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap")
    if not args.domain:             # by cpupool: the pools with sched="credit2"
        from .cpupoolcli import sched_listing
        return sched_listing(args, "credit2", args.cpupool)
    # -1 is libxl's "leave as it is" for both
    params = {k: v for k, v in (("weight", weight), ("cap", cap)) if v is not None and v != -1}
    try:
        with client(args) as c:
            rows = c.call("sched_credit", dom=args.domain, **params)
    except DaemonUnavailable as e:
        err(f"pyxen: {e}")
        return 1
    except RpcError as e:
        err(f"pyxen: {e.message}")
        if e.code != "ENOENT" and (weight is not None or cap is not None):
            err("libxl_domain_sched_params_set failed.")
        return 1
    if weight is None and cap is None:
        print(head)
        for r in rows:
            print("%-33s %4d %6d %4d" % (r["name"], r["domid"], r["weight"], r["cap"]))
    return 0


def cmd_top(args) -> int:
    """xentop (toolstack/xentop.py): -b batch output (no summary, a header and
    a row per domain each iteration), -i iterations, -d seconds between them
    (atoi, as xentop), -f -v -n -x -r as xentop; interactive without -b:
    the screen is redrawn each delay, q quits, any other key redraws."""
    import signal
    from .toolstack.xentop import TopOptions, summary, table
    opts = TopOptions(full_name=args.full_name, vcpus=args.vcpus, networks=args.networks,
                      vbds=args.vbds, repeat_header=args.repeat_header)
    delay = max(0, _c_atoi(args.delay))
    left = _c_atoi(args.iterations) if args.iterations is not None else 0
    # as xentop: 0 (or less) iterations is "run until stopped"
    left = left if left > 0 else -1
    fd = sys.stdin.fileno() if not args.batch and sys.stdin is not None and \
        not sys.stdin.closed and os.isatty(sys.stdin.fileno()) else None
    saved = None
    if fd is not None:
        import termios
        import tty
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    prev = None
    try:
        while True:
            sample = api(args, "top")
            sample["when"] = time.monotonic()
            lines = table(sample, prev, opts)
            if args.batch:
                print("\n".join(lines), flush=True)
            else:
                sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(summary(sample) + lines) + "\n")
                sys.stdout.flush()
            prev = sample
            left -= 1
            if left == 0:
                return 0
            if fd is None:
                time.sleep(delay)
                continue
            r, _, _ = select.select([fd], [], [], delay)
            if r and os.read(fd, 1) in (b"q", b"Q"):
                return 0
    except KeyboardInterrupt:          # xentop -b ends quietly on SIGINT / SIGTERM
        return 0
    finally:
        if saved is not None:
            import termios
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# --- simple commands --------------------------------------------------------------------------
def simple(method):
    """A command that sends `method` for its one domain (destroy, pause, unpause)."""
    def run(args) -> int:
        api(args, method, dom=args.domain)
        return 0
    return run


def cmd_shutdown_or_reboot(args) -> int:
    """xl shutdown / reboot (xl_vmcontrol.c main_shutdown_or_reboot): its
    messages on stderr, and -w's wait for the domains' shutdown (-ww: death)."""
    if not args.all and not args.domain:
        err("You must specify -a or a domain id.\n")
        return 1
    what = "Shutting down" if args.command == "shutdown" else "Rebooting"
    if args.all:
        targets = [r["domid"] for r in api(args, "list")[1:] if not r.get("shutdown")]
    else:
        domid = args.domain if args.domain.isascii() and args.domain.isdigit() else \
            api(args, "domid", name=args.domain)
        targets = [int(domid)]
    done = []
    for domid in targets:
        err(f"{what} domain {domid}")
        done.append(api(args, args.command, dom=domid))
    if args.wait:
        return wait_for_deaths(args, done, until_dead=args.wait > 1)
    return 0


def wait_for_deaths(args, domids, until_dead: bool, timeout=600) -> int:
    """xl's wait_for_domain_deaths: report each domain's shutdown (its reason
    code) and death; done when each is shut down, or with until_dead when
    each is gone."""
    err(f"Waiting for {len(domids)} domains")
    pending = set(domids)
    reported = set()
    end = time.monotonic() + timeout
    while pending and time.monotonic() < end:
        live = {r["domid"]: r for r in api(args, "list")}
        for domid in sorted(pending):
            r = live.get(domid)
            if r is None:
                err(f"Domain {domid} has been destroyed")
                pending.discard(domid)
            elif r.get("shutdown") and domid not in reported:
                reported.add(domid)
                err(f"Domain {domid} has been shut down, reason code "
                    f"{SHUTDOWN_CODES.get(r.get('reason'), 0)}")
                if until_dead:
                    err(f"Domain {domid} continue waiting for death")
                else:
                    pending.discard(domid)
        if pending:
            time.sleep(0.2)
    return 0 if not pending else 1


def cmd_vncviewer(args) -> int:
    """xl vncviewer: a VNC viewer on an HVM domain's display (QEMU's VNC
    server, vnc=1); --autopass hands it vncpasswd on its stdin, as xl."""
    import shutil
    import subprocess
    row = api(args, "list", dom=args.domain)[0]
    vnc = (row.get("device_model") or {}).get("vnc")
    if not vnc:
        err(f"pyxen: domain {args.domain} has no VNC display (an HVM domain with vnc=1)")
        return 1
    addr = f"{vnc['host']}::{vnc['port']}"
    viewer = shutil.which("vncviewer")
    if viewer is None:
        err(f"pyxen: no vncviewer program (Debian: tigervnc-viewer); the display is {addr}")
        return 1
    passwd = ((row.get("config") or {}).get("hvm") or {}).get("vncpasswd")
    if args.autopass and passwd:
        return subprocess.run([viewer, "-autopass", addr], input=passwd + "\n",
                              text=True).returncode
    os.execv(viewer, [viewer, addr])


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


def _c_atoi(text: str) -> int:
    """C's atoi: strtol's number (0 when there is none), as an int."""
    v, _ = _c_strtol(text)
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


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
        if kind.type == "vif":          # xl.conf's vif.default.* fill in what it leaves out
            params["spec"] = xl_conf(args).vif_spec(params["spec"])
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
    for line in api(args, "dmesg", clear=args.clear):
        print(line)
    return 0


def cmd_cd_insert(args) -> int:
    """xl cd-insert DOMAIN VDEV TARGET: TARGET a file (relative to here) or
    the end of a disk spec (format=qcow2, target=FILE), as xl builds it."""
    target = args.target
    if "=" not in target and not target.startswith("/"):
        target = os.path.abspath(target)
    api(args, "cd_insert", dom=args.domain, vdev=args.vdev, target=target)
    return 0


def cmd_cd_eject(args) -> int:
    api(args, "cd_eject", dom=args.domain, vdev=args.vdev)
    return 0


def cmd_qemu_monitor_command(args) -> int:
    """xl qemu-monitor-command (xl_misc.c): the output, and a newline."""
    out = api(args, "qemu_monitor_command", dom=args.domain, command=args.command)
    if out:
        print(out)
    return 0


def cmd_sysrq(args) -> int:
    """xl sysrq (xl_misc.c main_sysrq): one letter, else xl's message."""
    if len(args.letter) != 1:
        err("Invalid sysrq.\n")
        return 1
    api(args, "sysrq", dom=args.domain, key=args.letter)
    return 0


def _send_trigger(args, trigger: str, vcpu: int) -> None:
    """libxl_send_trigger through pyxend: a failure is libxl's error line
    (xl goes on and succeeds)."""
    import os
    res = api(args, "trigger", dom=args.domain, trigger=trigger, vcpu=vcpu & 0xFFFFFFFF)
    if res["errno"]:
        err(f"libxl: error: libxl_domain.c: libxl_send_trigger: Domain {res['domid']}:"
            f"Send trigger '{trigger}' failed: {os.strerror(res['errno'])}")


def _strtol10(text: str) -> tuple[int, bool]:
    """C's strtol(text, &end, 10): the value of the leading digits (after
    blanks and a sign), and whether there were any."""
    import re
    m = re.match(r"\s*([+-]?\d+)", text)
    return (int(m.group(1)), True) if m else (0, False)


def cmd_trigger(args) -> int:
    """xl trigger (xl_vmcontrol.c main_trigger): an unknown trigger is xl's
    error; a vCPU that is no number is 0, with xl's warning."""
    from .toolstack.api import TRIGGERS
    if args.trigger not in TRIGGERS:
        err(f'Invalid trigger "{args.trigger}"')
        return 1
    vcpu = 0
    if args.vcpu is not None:
        vcpu, ok = _strtol10(args.vcpu)
        if not ok:
            err("Invalid vcpuid, using default vcpuid=0.\n")
    _send_trigger(args, args.trigger, vcpu)
    return 0


def cmd_button_press(args) -> int:
    """xl button-press (deprecated): trigger power or sleep on vCPU 0."""
    err('WARNING: "button-press" is deprecated. Please use "trigger"')
    if args.button not in ("power", "sleep"):
        err(f"{args.button} is an invalid button identifier")
        return 1
    _send_trigger(args, args.button, 0)
    return 0


def cmd_dump_core(args) -> int:
    """xl dump-core: pyxend hands a read-only descriptor of the domain's
    memory; the core is written here (toolstack/coredump.py)."""
    import mmap
    from .toolstack.client import DaemonUnavailable, RpcError
    from .toolstack.coredump import write_core
    try:
        with client(args) as c:
            info = c.call("dump_core", dom=args.domain)
            fds = c.conn.take_fds(1)
    except DaemonUnavailable as e:
        err(f"pyxen: {e}")
        return 1
    except RpcError as e:
        err(f"pyxen: {e.message}")
        err("core dump failed (rc=-3)")
        return 1
    if not fds:
        err("core dump failed (rc=-3)")
        return 1
    try:
        ram = mmap.mmap(fds[0], info["size"], mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            write_core(Path(args.filename), ram, info["name"], info["domid"])
        finally:
            ram.close()
    except OSError as e:
        err(f"pyxen: {args.filename}: {e.strerror}")
        err("core dump failed (rc=-3)")
        return 1
    finally:
        os.close(fds[0])
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


def cmd_create_image(args) -> int:
    """Debootstrap a Debian domU into DIR/NAME.img (or .qcow2) and write DIR/NAME.cfg
    (toolstack/createimage.py), as xen-tools' xen-create-image."""
    import time
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from .toolstack.createimage import CreateImageError, ImageSpec, create_image
    spec = ImageSpec(hostname=args.hostname, dir=args.dir, dist=args.dist, size=args.size,
                     memory=args.memory, vcpus=args.vcpus, format=args.format,
                     password=args.password, ssh_key=args.ssh_key, ip=args.ip,
                     gateway=args.gateway, dhcp=args.dhcp, bridge=args.bridge, mac=args.mac,
                     mirror=args.mirror, force=args.force)
    console = Console(stderr=True)
    start = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[step]:<12}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict = {}

        def progress(step: str, detail: str) -> None:
            if step not in tasks:
                for t in tasks.values():
                    bar.update(t, completed=1, total=1)
                tasks[step] = bar.add_task(detail[:48], step=step, total=None)
            elif detail:
                bar.update(tasks[step], description=detail[:48])
        try:
            r = create_image(spec, progress)
        except CreateImageError as e:
            bar.stop()
            err(f"pyxen create-image: {e}")
            return 1
        for t in tasks.values():
            bar.update(t, completed=1, total=1)
    print(f"image   {r.image}")
    print(f"config  {r.config}")
    print(f"kernel  {r.kernel_version}")
    if r.password:
        print(f"root password (generated)  {r.password}")
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items())
    console.print(f"done in {time.monotonic() - start:.0f} s ({steps}); boot it with: "
                  f"pyxen create -c {r.config}")
    return 0


# --- save / restore (issue 16; docs/save-format.md) ------------------------------------------
def _api_in_background(args, method, bar_total: int = 0, watch=None,
                       label: str = "", fds=(), note=None, **params):
    """A long API call (save, restore, migrate) while a rich progress bar on
    stderr shows what is known of it: watch() bytes (None: not known yet)
    out of bar_total, or the time so far; note(): a text after the label
    (the migration's round and dirty rate). The call's result, or
    SystemExit(1) as api() fails."""
    import threading
    import time
    box: dict = {}

    def call():
        # no socket timeout: the guest has a minute to suspend, then a large
        # memory takes its time to write
        from .toolstack.client import Client, DaemonUnavailable, RpcError
        try:
            with Client(getattr(args, "run_dir", None), timeout=None) as c:
                box["result"] = c.conn.call(method, _fds=fds, **params)
        except (DaemonUnavailable, RpcError) as e:
            err(f"pyxen: {getattr(e, 'message', e)}")
            box["exit"] = SystemExit(1)
    t = threading.Thread(target=call, daemon=True)
    t.start()
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        cols = [SpinnerColumn(), TextColumn("{task.description}")]
        if watch and bar_total:
            cols += [BarColumn(), DownloadColumn()]
        cols.append(TimeElapsedColumn())
        with Progress(*cols, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(label, total=bar_total or None)
            while t.is_alive():
                done = watch() if watch else None
                if done is not None:
                    bar.update(task, completed=min(done, bar_total))
                extra = note() if note else None
                if extra:
                    bar.update(task, description=f"{label} {extra}")
                time.sleep(0.1)
            if "result" in box:
                bar.update(task, completed=bar_total or 1, total=bar_total or 1)
    t.join()
    if "exit" in box:
        raise box["exit"]
    return box["result"]


def _read_config(path: str | None) -> str | None:
    """The text of an xl.cfg named on the command line (None: none named);
    SystemExit(1) when it cannot be read."""
    if not path:
        return None
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        err(f"pyxen: cannot read {path}: {e.strerror}")
        raise SystemExit(1)


def cmd_save(args) -> int:
    """xl save (xl_saverestore.c save_domain): the domain's state and memory to
    FILE, then destroyed (or resumed with -c, paused with -p)."""
    config = _read_config(args.config)
    path = os.path.abspath(args.file)
    rows = api(args, "list", dom=args.domain)
    # the file is this user's to create (as xl's open(2)); pyxend gets its descriptor
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        err(f"Failed to open file {args.file} for writing: {e.strerror}")
        return 1
    total = rows[0]["mem_mb"] << 20 if rows else 0
    err(f"Saving to {args.file} new pyxen format")

    def written():
        try:
            return os.path.getsize(path)
        except OSError:
            return None
    try:
        _api_in_background(args, "save", bar_total=total, watch=written, fds=(fd,),
                           label=f"saving {rows[0]['name'] if rows else args.domain}",
                           dom=args.domain, path=path, checkpoint=args.checkpoint,
                           paused=args.paused, config=config,
                           config_path=os.path.abspath(args.config) if args.config else "<config>",
                           xl_conf=xl_conf(args).defaults() if config is not None else ())
    finally:
        os.close(fd)
    return 0


def _restore_reader(path: str):
    """How far the domain process restoring from path has read it (the
    offset of its descriptor of the file, /proc/PID/fdinfo), or None while
    it is not found (it is pyxend's child: another user cannot see it)."""
    found: dict = {}

    def find() -> tuple[int, str] | None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                if b"--restore-fd" not in argv:
                    continue
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                        return pid, fd
            except OSError:
                continue
        return None

    def pos() -> int | None:
        if "where" not in found:
            found["where"] = find()
        where = found["where"]
        if where is None:
            found.pop("where")
            return None
        try:
            with open(f"/proc/{where[0]}/fdinfo/{where[1]}") as f:
                for line in f:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None
    return pos


def cmd_restore(args) -> int:
    """xl restore [CFG] FILE: a new domain from a save file (config first, as
    xl; the other order is taken too when the first is the save file)."""
    from .toolstack.savefile import MAGIC, SaveFileError, check_file
    files = [args.first, args.second] if args.second else [args.first]
    if len(files) == 2:
        try:
            with open(files[0], "rb") as f:
                if f.read(len(MAGIC)) == MAGIC:
                    files.reverse()
        except OSError:
            pass
    cfg_file, save_file = (files[0], files[1]) if len(files) == 2 else (None, files[0])
    try:
        hdr = check_file(save_file)         # refused here: nothing is created
    except SaveFileError as e:
        err(f"pyxen: {e}")
        return 1
    err(f"Loading new save file {save_file} (pyxen format version {hdr.version})")
    if cfg_file:
        err(f"Parsing config from {cfg_file}")
    else:
        err(" Savefile contains the domain's config")
    config = _read_config(cfg_file)
    try:
        fd = os.open(save_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        err(f"pyxen: {save_file}: {e.strerror}")
        return 1
    try:
        res = _api_in_background(args, "restore", label=f"restoring {hdr.info.get('name', '')}",
                                 bar_total=os.fstat(fd).st_size, fds=(fd,),
                                 watch=_restore_reader(os.path.abspath(save_file)),
                                 path=os.path.abspath(save_file), config=config,
                                 config_path=os.path.abspath(cfg_file) if cfg_file else
                                 "<config>", paused=args.paused,
                                 xl_conf=xl_conf(args).defaults() if config is not None else ())
    finally:
        os.close(fd)
    if args.console:
        return attach_console(args, str(res["domid"]))
    return 0


# --- live migration (issue 16) ----------------------------------------------------------------
def _migration_channel(args, host: str):
    """The connection to the target: a TCP connection to its relocation
    server (tcp://HOST[:PORT]), or ssh running `pyxen migrate-receive` there
    (xl's way; -s replaces ssh, and an empty -s runs HOST itself as the
    command). Returns (socket, child process or None)."""
    import shlex
    import socket
    import subprocess
    from .toolstack.relocation import DEFAULT_PORT
    if host.startswith("tcp://"):
        if args.paused:
            err("pyxen: -p goes to migrate-receive (through ssh or -s); a relocation server "
                "always starts the domain")
            raise SystemExit(1)
        where = host[len("tcp://"):].rstrip("/")
        if where.startswith("["):               # [v6]:port
            h, _, rest = where[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            h, _, port = where.partition(":")
        try:
            port_n = int(port) if port else DEFAULT_PORT
        except ValueError:
            err(f"pyxen: {host}: bad port {port!r}")
            raise SystemExit(1)
        try:
            s = socket.create_connection((h, port_n), timeout=30)
        except OSError as e:
            err(f"pyxen: cannot reach the relocation server at {h}:{port_n}: "
                f"{e.strerror or e}")
            raise SystemExit(1)
        s.settimeout(None)
        return s, None
    receiver = "pyxen migrate-receive" + (" -d" if args.debug else "") + \
        (" -e" if args.no_wait else "") + (" -p" if args.paused else "")
    if args.ssh == "":
        rune = host
    else:
        rune = f"exec {args.ssh or 'ssh'} {shlex.quote(host)} {receiver}"
    a, b = socket.socketpair()
    try:
        child = subprocess.Popen(["sh", "-c", rune], stdin=b, stdout=b, close_fds=True)
    except OSError as e:
        err(f"pyxen: cannot run {rune}: {e.strerror}")
        raise SystemExit(1)
    finally:
        b.close()
    return a, child


def cmd_migrate(args) -> int:
    """xl migrate [-s SSH] [-C CFG] [-e] [-p] [--debug] DOM HOST: live, with
    pre-copy rounds, as xl (xm's --live is accepted: it is the only way)."""
    import json as _json
    from .toolstack import paths
    from .toolstack.relocation import progress_path
    config = _read_config(args.config)
    row = api(args, "list", dom=args.domain)[0]
    sock, child = _migration_channel(args, args.host)
    rd = getattr(args, "run_dir", None)
    prog = progress_path(paths.run_dir() if rd is None else paths.Path(rd), row["domid"])

    def status() -> dict:
        try:
            with open(prog) as f:
                return _json.load(f)
        except (OSError, ValueError):
            return {}

    def note() -> str:
        s = status()
        if not s:
            return ""
        text = f"round {s['round']} ({s['frames']} frames)"
        if s.get("dirty_rate"):
            text += f", dirty {s['dirty_rate'] * 4 / 1024:.1f} MiB/s"
        return text + ("" if s.get("phase") == "precopy" else f", {s['phase']}")
    try:
        res = _api_in_background(args, "migrate", bar_total=row["mem_mb"] << 20,
                                 watch=lambda: status().get("sent"), note=note,
                                 label=f"migrating {row['name']}", fds=(sock.fileno(),),
                                 dom=args.domain, config=config,
                                 config_path=os.path.abspath(args.config) if args.config
                                 else "<config>", debug=args.debug, live=True,
                                 xl_conf=xl_conf(args).defaults() if config is not None else ())
    finally:
        sock.close()
        if child is not None:
            try:
                child.wait(timeout=30)
            except Exception:
                child.kill()
    err("migration sender: Target reports successful startup.")
    err(f"Migration successful: {res['rounds']} rounds (frames "
        f"{', '.join(str(n) for n in res['frames'])}), {res['sent'] / 2**20:.1f} MiB sent, "
        f"total {res['total_s']:.2f} s, downtime {res['downtime_s'] * 1000:.0f} ms")
    if res.get("phases_s"):
        err("downtime: " + ", ".join(f"{k.replace('_', ' ')} {v * 1000:.0f} ms"
                                     for k, v in res["phases_s"].items()))
    return 0


def cmd_migrate_receive(args) -> int:
    """xl migrate-receive: the target's end, on standard input and output
    (what ssh connects to the sender); messages go to standard error."""
    from .toolstack.client import Client, DaemonUnavailable, RpcError
    err("migration target: Ready to receive domain.")
    try:
        with Client(getattr(args, "run_dir", None), timeout=None) as c:
            res = c.conn.call("migrate_receive", _fds=(0, 1), paused=args.paused)
    except (DaemonUnavailable, RpcError) as e:
        err(f"migration target: {getattr(e, 'message', e)}")
        return 1
    err(f"migration target: Domain {res['name']} started (domid {res['domid']})"
        + (", paused" if args.paused else "") + ".")
    return 0


# --- the parser -------------------------------------------------------------------------------
def build_parser(prog: str = "pyxen") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="pyxen: Xen on KVM, with xl's commands "
                                "(also installed as `xl`). Reads /etc/xen/xl.conf (or "
                                "$PYXEN_XL_CONF) as xl does: docs/xl-conf.md.")
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
    c.add_argument("-n", "--dryrun", action="store_true",
                   help="dry run: print the parsed configuration as libxl's JSON (as xl) "
                   "and create nothing")
    c.add_argument("-d", dest="debug", action="store_true",
                   help="print the parsed configuration (libxl's JSON) on stderr, then create")
    c.add_argument("-q", "--quiet", dest="quiet", action="store_true", help="quiet")
    c.add_argument("-p", dest="paused", action="store_true", help="leave the domain paused")
    c.add_argument("-e", dest="no_restart", action="store_true",
                   help="do not wait in the background for the domain's death (accepted)")
    c.add_argument("-V", dest="vnc", action="store_true", help="attach to VNC (no graphics: ignored)")
    c.add_argument("-F", "--foreground", action="store_true",
                   help="run in this process even when pyxend is running")
    c.add_argument("--trace", metavar="FILE",
                   help="(foreground) write a trace of hypercalls and traps to FILE")

    c = cmd("config-update", cmd_config_update,
            "keep a new config for a domain's next restart (reboot)",
            description="Update a domain's saved configuration, used when the domain is "
            "built again at its next restart (a reboot, or any on_* restart action), as xl "
            "config-update: the running domain is unchanged, and so is what list -l shows of "
            "it. The restarted domain gets a new UUID unless the config sets uuid=. As in xl, "
            "this command is deprecated in favour of changing the running domain; unlike "
            "xl, the kernel and ramdisk must exist now.")
    c.add_argument("domain")
    c.add_argument("rest", nargs="*", metavar="[CFG] [KEY=VALUE]",
                   help="the xl.cfg file (or -f) and settings that override it (xl syntax)")
    c.add_argument("-f", "--defconfig", dest="defconfig", metavar="FILE",
                   help="the xl.cfg file")
    c.add_argument("-d", dest="debug", action="store_true",
                   help="print the parsed configuration as libxl's JSON")
    c.add_argument("-q", dest="quiet", action="store_true", help="accepted (as xl)")

    cmd("vm-list", cmd_vm_list, "list the guest domains by UUID, id and name",
        description="List the guest domains (every domain but Domain-0) as xl vm-list: "
        "UUID, domain id and name.")
    c = cmd("list", cmd_list, "list domains",
            description="List domains as xl list does. -l prints each domain's "
            "configuration in libxl's JSON (c_info, b_info, disks, nics, on_*), the format "
            "jq scripts written for xl read; Domain-0 is not in it (as in xl).")
    c.add_argument("-l", "--long", action="store_true",
                   help="each domain's configuration as libxl's JSON")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="also the UUID, the shutdown reason code (hex) and the security "
                   "label (always -)")
    c.add_argument("-c", "--cpupool", dest="cpupool", action="store_true",
                   help="the cpupool each domain is in")
    c.add_argument("domains", nargs="*")

    for name, method, h in (("destroy", "destroy", "terminate a domain immediately"),
                            ("pause", "pause", "pause a domain's vCPUs"),
                            ("unpause", "unpause", "let a paused domain run")):
        c = cmd(name, simple(method), h)
        c.add_argument("domain")
    for name, h in (("shutdown", "ask a domain to shut down (control/shutdown)"),
                    ("reboot", "ask a domain to reboot (control/shutdown)")):
        c = cmd(name, cmd_shutdown_or_reboot, h,
                description=f"{h[0].upper()}{h[1:]}, as xl {name}: the request is written to "
                "the guest's XenStore control/shutdown node and the guest's PV drivers act "
                "on it. -w waits until the domain has shut down (or is gone); -w twice "
                "waits until it is destroyed.")
        c.add_argument("domain", nargs="?")
        c.add_argument("-w", "--wait", action="count", default=0,
                       help="wait for the domain(s) to shut down (twice: to be destroyed)")
        c.add_argument("-a", "--all", action="store_true", help="every domain but Domain-0")
        c.add_argument("-F", dest="force", action="store_true",
                       help="xl: fall back to an ACPI %s event for an HVM guest without PV "
                       "drivers. A PV guest always has the PV control interface, and pyxen's "
                       "HVM guests (QEMU) have no PV drivers and always get the ACPI event: "
                       "accepted, changes nothing" % ("power button" if name == "shutdown"
                                                      else "reset"))

    c = cmd("console", cmd_console, "attach to a domain's console (Ctrl-] detaches)",
            description="Attach to a domain's console, as xl console; Ctrl-] (or the -e "
            "character) detaches. pyxen domains have one console: PV console 0.")
    c.add_argument("domain")
    c.add_argument("-t", dest="type", metavar="TYPE",
                   help="pv (the default), serial or vuart; a PV domain has no serial port "
                   "or vuart, so those fail as in xl when the console is missing; an HVM "
                   "domain's console is its serial port 0 (serial=\"pty\"), either type")
    c.add_argument("-n", dest="num", type=_c_atoi, default=0, metavar="NUM",
                   help="the console's number (only 0 exists)")
    c.add_argument("-e", dest="escape", metavar="CHAR",
                   help="the detach character, as xl: '^X' for Ctrl-X or one character "
                   "(default ^])")
    c = cmd("info", cmd_info, "host and hypervisor information",
            description="Host and hypervisor information, as xl info. With NAME, only the "
            "values of the lines whose name starts with NAME.")
    c.add_argument("-n", "--numa", action="store_true",
                   help="also the host's CPU, device and NUMA topology (from sysfs), as xl")
    c.add_argument("name", nargs="?", metavar="NAME")
    c = cmd("dmesg", cmd_dmesg, "the hypervisor's log (pyxend and domain processes)")
    c.add_argument("-c", "--clear", action="store_true",
                   help="clear the log as well as printing it")
    c = cmd("cd-insert", cmd_cd_insert, "insert a medium in an HVM domain's cdrom drive",
            description="Insert a CD-ROM image in an HVM domain's emulated cdrom drive (a "
            "disk entry with devtype=cdrom, empty or not), as xl cd-insert.")
    c.add_argument("domain")
    c.add_argument("vdev", help="the drive, e.g. hdc")
    c.add_argument("target", help="the image file")
    c = cmd("cd-eject", cmd_cd_eject, "eject the medium of an HVM domain's cdrom drive",
            description="Eject the medium from an HVM domain's emulated cdrom drive, as xl "
            "cd-eject; the drive stays, empty.")
    c.add_argument("domain")
    c.add_argument("vdev", help="the drive, e.g. hdc")
    c = cmd("qemu-monitor-command", cmd_qemu_monitor_command,
            "run a QEMU monitor command in an HVM domain's device model",
            description="Issue a QEMU monitor (HMP) command to an HVM domain's QEMU, as xl "
            "qemu-monitor-command (QMP human-monitor-command), and print its output. A PV "
            "domain has no device model.")
    c.add_argument("domain")
    c.add_argument("command", metavar="COMMAND", help="e.g. \"info status\" (quote it)")
    c = cmd("sysrq", cmd_sysrq, "send a magic SysRq key to a domain",
            description="Send a magic SysRq key (one letter) to a domain, as xl sysrq: it "
            "is written to the guest's XenStore control/sysrq, which Linux's Xen drivers "
            "read and act on (h: help in the guest's log, s: sync, b: reboot...).")
    c.add_argument("domain")
    c.add_argument("letter")
    c = cmd("trigger", cmd_trigger, "send a trigger (NMI, reset, power button...) to a domain",
            description="Send a trigger to a domain, as xl trigger (libxl_send_trigger). "
            "A PV domain takes an NMI (nmi: Xen's XEN_DOMCTL_sendtrigger, delivered to "
            "the NMI callback the guest registered, on vCPU VCPU); power and sleep are an "
            "HVM domain's buttons, and reset, init and s3resume fail for a PV domain, with "
            "libxl's error, as on Xen. An HVM domain's QEMU gets them over QMP: nmi "
            "(inject-nmi, to every vCPU), reset, power (the ACPI power button) and "
            "s3resume; QEMU's ACPI has no sleep button and Xen has no init trigger "
            "(-ENOSYS). As xl, the command succeeds when the trigger fails.")
    c.add_argument("domain")
    c.add_argument("trigger", metavar="TRIGGER", help="nmi, reset, init, power, sleep or s3resume")
    c.add_argument("vcpu", nargs="?", metavar="VCPU", help="the vCPU (default 0)")
    c = cmd("button-press", cmd_button_press, "press a domain's power or sleep button "
            "(deprecated: trigger)",
            description="Deprecated form of trigger, as xl button-press: BUTTON is power "
            "or sleep, sent to vCPU 0.")
    c.add_argument("domain")
    c.add_argument("button", metavar="BUTTON", help="power or sleep")
    c = cmd("dump-core", cmd_dump_core, "write a domain's memory to a core file",
            description="Write a domain's memory to FILE as an ELF core in the layout of "
            "xl dump-core (Xen's xc_core: .note.Xen, .xen_p2m, .xen_pages), without "
            "pausing the domain. Works on a running domain and on one kept by "
            "on_crash=preserve. The file is written by this command, with your "
            "permissions.")
    c.add_argument("domain")
    c.add_argument("filename", metavar="FILE")
    c = cmd("save", cmd_save, "save a domain's state to a file",
            description="Save a domain (xl save): it is asked to suspend (control/shutdown), "
            "then its memory and state are written to FILE in pyxen's format "
            "(docs/save-format.md) and the domain is destroyed. CFG: an xl.cfg stored in "
            "the file instead of the running domain's config.")
    c.add_argument("-c", dest="checkpoint", action="store_true",
                   help="leave the domain running after the save (checkpoint)")
    c.add_argument("-p", dest="paused", action="store_true",
                   help="leave the domain paused after the save")
    c.add_argument("domain")
    c.add_argument("file", metavar="FILE")
    c.add_argument("config", metavar="CFG", nargs="?")

    c = cmd("migrate", cmd_migrate, "migrate a domain to another host",
            description="Live-migrate a domain (xl migrate): its memory goes to HOST in "
            "rounds while it runs (KVM's dirty page log), then it is suspended for the last "
            "dirty pages and its state, and destroyed here once HOST runs it; if anything "
            "fails it carries on here. HOST: a host reached with ssh, which runs `pyxen "
            "migrate-receive` there, or tcp://HOST[:PORT] for a pyxend started with "
            "--relocation-port (xend's relocation server; port 8002 by default). Disks must "
            "be on storage both hosts see under the same paths.")
    c.add_argument("-s", dest="ssh", metavar="SSHCOMMAND", default=None,
                   help="use SSHCOMMAND instead of ssh (passed to sh); empty: run HOST "
                   "itself as the command")
    c.add_argument("-C", dest="config", metavar="CFG",
                   help="send CFG instead of the config the domain was created with")
    c.add_argument("-e", dest="no_wait", action="store_true",
                   help="passed to migrate-receive (pyxend supervises the domain anyway)")
    c.add_argument("-p", dest="paused", action="store_true",
                   help="leave the domain paused on HOST (through ssh only)")
    c.add_argument("--debug", action="store_true",
                   help="the target checks its memory against the source's checksums")
    c.add_argument("--live", action="store_true",
                   help="xm's option: migration is always live (pre-copy), as xl")
    c.add_argument("domain")
    c.add_argument("host", metavar="HOST")

    c = cmd("migrate-receive", cmd_migrate_receive,
            "receive a migrating domain (run by migrate through ssh)",
            description="The target end of `pyxen migrate` (xl migrate-receive): the "
            "migration stream comes on standard input, replies go to standard output; the "
            "local pyxend builds the domain.")
    c.add_argument("-d", dest="debug", action="store_true", help="accepted (xl's debug)")
    c.add_argument("-e", dest="no_wait", action="store_true",
                   help="accepted: pyxend supervises the domain")
    c.add_argument("-p", dest="paused", action="store_true",
                   help="leave the domain paused")

    c = cmd("restore", cmd_restore, "restore a domain from a save file",
            description="Restore a domain saved with `pyxen save` (xl restore [CFG] FILE): "
            "it carries on from where it was saved, in a new domain. A file that is "
            "truncated or not a pyxen save file is refused and nothing is created.")
    c.add_argument("first", metavar="CFG", help="an xl.cfg to use instead of the saved config "
                   "(optional: a lone argument is the save file)")
    c.add_argument("second", metavar="FILE", nargs="?", help="the save file")
    c.add_argument("-c", dest="console", action="store_true", help="attach to the console")
    c.add_argument("-p", dest="paused", action="store_true", help="leave the domain paused")
    c.add_argument("-e", dest="no_monitor", action="store_true",
                   help="do not wait in the background for the domain's death (accepted)")
    c.add_argument("-d", dest="debug", action="store_true", help="debug output (accepted)")
    c.add_argument("-F", dest="foreground", action="store_true",
                   help="do not daemonize (accepted: pyxend runs the domain)")
    c.add_argument("-V", dest="vnc", action="store_true", help="VNC viewer (no graphics: ignored)")
    c.add_argument("-A", dest="vncautopass", action="store_true",
                   help="VNC viewer with password (no graphics: ignored)")

    c = cmd("log", cmd_log, "pyxend's log")
    c.add_argument("-n", dest="lines", type=int, default=100)
    c = cmd("vncviewer", cmd_vncviewer, "a VNC viewer on an HVM domain's display",
            description="Run vncviewer on an HVM domain's display (vnc=1: QEMU's VNC "
            "server, on vnclisten), as xl vncviewer.")
    c.add_argument("domain")
    c.add_argument("-a", "--autopass", action="store_true",
                   help="pass the domain's vncpasswd to the viewer on its stdin")
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
    c.add_argument("-p", "--cpupool", dest="cpupool", metavar="CPUPOOL",
                   help="only the domains of this cpupool (name or id)")
    c = cmd("sched-credit2", cmd_sched_credit2, "credit2 scheduler weight and cap",
            description="Get or set a domain's weight and cap as xl sched-credit2. pyxen "
            "schedules vCPUs (Linux threads) with the host kernel's scheduler, whose "
            "settings both sched-credit and sched-credit2 show and change: a weight (1-65535, "
            "default 256) sets the share of host CPU among busy domains, a cap (percent of "
            "one host CPU, 0 = none) limits it. Without -d, the domains of the pools "
            "made with sched=\"credit2\" (sched-credit lists the credit ones).")
    c.add_argument("-d", "--domain", dest="domain", metavar="DOMAIN", help="the domain")
    c.add_argument("-w", "--weight", dest="weight", metavar="WEIGHT", help="weight (1-65535)")
    c.add_argument("-c", "--cap", dest="cap", metavar="CAP",
                   help="cap, percent of one host CPU (0: none)")
    c.add_argument("-s", "--schedparam", dest="schedparam", action="store_true",
                   help="the pool's scheduler parameters (ratelimit=1000us)")
    c.add_argument("-r", "--ratelimit_us", dest="ratelimit", metavar="RLIMIT",
                   help="with -s: set the rate limit (refused: the host kernel schedules)")
    c.add_argument("-p", "--cpupool", dest="cpupool", metavar="CPUPOOL",
                   help="only this cpupool (name or id)")
    cmd("prepare-linux", cmd_prepare_linux,
        "fetch Debian's kernel and busybox and build the Linux guest's initramfs")
    c = cmd("create-image", cmd_create_image, "make a Debian domU image and its config",
            description="Make a Debian domU as xen-tools' xen-create-image does: debootstrap "
            "(from the mirror the host's apt uses; packages cached under $PYXEN_CACHE) a "
            "Debian with systemd, the cloud kernel, openssh-server and a getty on hvc0 into "
            "DIR/NAME.img (ext4, the whole disk is the root file system; or DIR/NAME.qcow2) "
            "and write DIR/NAME.cfg (bootloader=\"pygrub\", the disk, a vif on BRIDGE). "
            "Needs root and Debian's debootstrap. Without --password or --ssh-key a root "
            "password is generated and printed; without --ip the guest uses DHCP.")
    c.add_argument("--hostname", required=True, metavar="NAME")
    c.add_argument("--dir", required=True, metavar="DIR", help="where NAME.img and NAME.cfg go")
    c.add_argument("--dist", default="bookworm", help="the Debian release (default bookworm)")
    c.add_argument("--size", default="4G", help="the image's size (default 4G)")
    c.add_argument("--memory", type=int, default=512, help="MiB (default 512)")
    c.add_argument("--vcpus", type=int, default=2, help="default 2")
    c.add_argument("--format", choices=("raw", "qcow2"), default="raw")
    c.add_argument("--password", metavar="PASS", help="root's password")
    c.add_argument("--ssh-key", metavar="FILE",
                   help="a public key for root's authorized_keys (with --password or alone)")
    net = c.add_mutually_exclusive_group()
    net.add_argument("--ip", metavar="ADDR/PREFIX", help="a static address for eth0")
    net.add_argument("--dhcp", action="store_true", help="eth0 by DHCP (the default)")
    c.add_argument("--gateway", metavar="ADDR", help="the default route (with --ip)")
    c.add_argument("--bridge", default="xenbr0", help="the vif's bridge (default xenbr0)")
    c.add_argument("--mac", help="the vif's MAC (default: random, 00:16:3e:...)")
    c.add_argument("--mirror", help="the Debian mirror (default: the host's apt's)")
    c.add_argument("--force", action="store_true", help="replace an existing image and config")
    c = cmd("top", cmd_top, "the domains' figures in real time (xentop)",
            description="The domains' CPU, memory, network and disk figures in real time, "
            "as xentop (which xl top runs) shows them, in xentop's columns and formats: "
            "NAME STATE CPU(sec) CPU(%) MEM(k) MEM(%) MAXMEM(k) MAXMEM(%) VCPUS NETS "
            "NETTX(k) NETRX(k) VBDS VBD_OO VBD_RD VBD_WR VBD_RSECT VBD_WSECT SSID, sorted by "
            "name. NETTX/NETRX are the host side's view of the vifs (NETTX: sent to the "
            "guest), counted by pyxend's netback; VBD_* by its blkback (VBD_OO is always 0: "
            "no request waits for a slot); counters restart when a device reconnects. "
            "Domain-0 is the host: all its memory, no limit. SSID is 0 (no XSM). "
            "Interactively, q quits.")
    c.add_argument("-b", "--batch", dest="batch", action="store_true",
                   help="batch mode: no summary and no screen control, a header and a row per "
                   "domain each iteration, for scripts")
    c.add_argument("-i", "--iterations", dest="iterations", metavar="N",
                   help="stop after N iterations (0 or none: run until stopped)")
    c.add_argument("-d", "--delay", dest="delay", default="3", metavar="SECONDS",
                   help="whole seconds between updates (default 3)")
    c.add_argument("-f", "--full-name", dest="full_name", action="store_true",
                   help="the full domain name (not cut to 10 characters)")
    c.add_argument("-v", "--vcpus", dest="vcpus", action="store_true",
                   help="each domain's online vCPUs' CPU seconds")
    c.add_argument("-n", "--networks", dest="networks", action="store_true",
                   help="each vif's bytes, packets, errors and drops")
    c.add_argument("-x", "--vbds", dest="vbds", action="store_true",
                   help="each vbd's requests and sectors")
    c.add_argument("-r", "--repeat-header", dest="repeat_header", action="store_true",
                   help="the header before each domain")
    from .cpupoolcli import add_commands
    add_commands(cmd)                   # cpupool-*
    return p


def main(argv=None) -> int:
    # installed twice: as `pyxen` and as `xl`, which then names itself xl
    parser = build_parser("xl" if os.path.basename(sys.argv[0] or "") == "xl" else "pyxen")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(name)s: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
