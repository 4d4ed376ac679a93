"""pyxend — the control daemon of domain 0 (xend / libxl's role).

It owns xenstored, the console backends and the registry of domains, spawns
one domain process per guest (pyxen.toolstack.domproc), and serves the JSON
API (run_dir/pyxend.sock) that `pyxen` and pyxen.toolstack.client use.
Domain processes live in their own sessions: killing pyxend leaves them
running, and a new pyxend finds them again through their sockets.

API (API_VERSION 1), one JSON object per line: a request is
{"id": N, "method": NAME, "params": {...}}, its reply {"id": N, "result": ...}
or {"id": N, "error": {"code", "message"}}. An unknown method is ENOSYS.

Every request's parameters are checked against its entry in the table of
requests (toolstack/api.py) before its handler runs (apiparams.check_params:
unknown, missing or mistyped parameters and values out of range are
EINVAL); file descriptors passed with a request are closed once it is
answered (no request takes any). Domain names follow
domconfig.domain_name_problem (no '/', not "." or "..", printable, at most
64 characters, not all digits); "dom" is a domain's id or name. SIGHUP
reopens the console logs (for logrotate) and, when daemonized, pyxend.log.

The requests (generated from toolstack/api.py; "?" marks a parameter that
may be left out, with its default):
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import heapq
import json
import logging
import mmap
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from . import api, hostinfo, libxljson, paths
from .apiparams import ParamError
from .rpc import API_VERSION, Connection, RpcError, error_reply
from .domconfig import DomainConfig, domain_name_problem
from . import lifecycle
from .builder import meminfo_mb
from .xlcfg import XlCfgError
from .xlconf import XlConf
from ..dom0.console import ConsoleBackend, ConsoleClient
from .xsnodes import write_domain_nodes, remove_domain_nodes
from .rpc import eventfd_poke
from ..dom0.xenstore.server import XenStoreServer
from ..dom0.xenstore.store import Client as XsClient
from ..kvm.system import GuestMemory
from .devices import DeviceConfigError, DomainDevices, RemoteGuest
from .cpupools import PoolsDaemon

log = logging.getLogger("pyxend")
__doc__ += api.describe() + "\n"


SUSPEND_TIMEOUT = 60.0         # seconds a guest has to suspend for a save


class ApiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Dom:
    domid: int
    name: str
    uuid: str
    config: dict
    pid: int = 0
    state: str = "running"           # running | shutdown | crashed | dying
    reason: str | None = None
    created: float = field(default_factory=time.time)
    conn: Connection | None = None
    ram: mmap.mmap | None = None
    ram_fd: int = -1                    # the domain's RAM (memfd), for dump-core
    fds: list = field(default_factory=list)
    console: ConsoleBackend | None = None
    watchers: list = field(default_factory=list)     # ConsoleClient: attached consoles
    target_kb: int = 0
    max_kb: int = 0
    popen: subprocess.Popen | None = None
    conn_lock: threading.Lock = field(default_factory=threading.Lock)
    restarts: int = 0
    heap: object = None                 # GuestMemory over the domain's heap memfd
    devices: object = None              # DomainDevices: its PV disks and vifs
    pending_config: dict | None = None  # config-update: the config of its next restart


class Daemon(PoolsDaemon):          # cpupools and cgroups: toolstack/cpupools.py
    def __init__(self, run_dir: Path, mem_limit_mb: int | None = None):
        self.run_dir = Path(run_dir)
        self.mem_limit_mb = mem_limit_mb or max(256, meminfo_mb("MemTotal") - 256)
        self.domains: dict[int, Dom] = {}
        self.lock = threading.RLock()
        self.next_domid = 1
        self.sel = selectors.DefaultSelector()
        self.sel_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self.timers: list = []                # (when, seq, fn) run by the event thread
        self._timer_seq = 0
        self.stopping = False
        self.log_lines: list[str] = []
        self.own_log: Path | None = None      # pyxend.log when daemonized (reopened on SIGHUP)
        self.saving: set[int] = set()         # domains a save is suspending or writing

    # --- start-up --------------------------------------------------------------------
    def start(self) -> None:
        rd = self.run_dir
        paths.domains_dir(rd).mkdir(parents=True, exist_ok=True)
        paths.log_dir(rd).mkdir(parents=True, exist_ok=True)
        self.lockfile = open(rd / "pyxend.lock", "w")
        try:
            fcntl.flock(self.lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"pyxend: another pyxend is running on {rd}")
        self.xs = XenStoreServer(socket_path=str(paths.xenstored_socket(rd)),
                                 state_file=str(rd / "xenstore.json"), socket_mode=0o660)
        self.xs.start()
        self.xsc = XsClient(self.xs.store, 0, True)
        state = rd / "pyxend.state"
        if state.exists():
            try:
                self.next_domid = json.loads(state.read_text()).get("next_domid", 1)
            except ValueError:
                pass
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._event_loop, daemon=True, name="evtchn").start()
        self._sched_setup()
        self._recover()
        self._sched_recovered()
        api = paths.api_socket(rd)
        try:
            os.unlink(api)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(str(api))
        os.chmod(api, 0o660)
        try:
            os.chown(api, 0, grp.getgrnam("pyxen").gr_gid)
        except (KeyError, PermissionError):
            pass
        self.listener.listen(16)
        self.say(f"pyxend started on {rd} (API {API_VERSION}), memory limit {self.mem_limit_mb} MiB")

    def say(self, msg: str) -> None:
        log.info("%s", msg)
        self.log_lines.append(time.strftime("%Y-%m-%d %H:%M:%S ") + msg)
        del self.log_lines[:-2000]

    def serve_forever(self) -> None:
        while not self.stopping:
            try:
                s, _ = self.listener.accept()
            except OSError:
                if self.stopping:
                    return
                raise
            threading.Thread(target=self._client, args=(Connection(s),), daemon=True).start()

    def stop(self) -> None:
        """Stop serving; domains keep running (they outlive pyxend)."""
        self.stopping = True
        self._sched_stop()
        try:
            self.listener.close()
        except OSError:
            pass
        self.xs.stop()

    def reopen_logs(self) -> None:
        """Reopen every console log and pyxend's own log (SIGHUP)."""
        with self.lock:
            consoles = [d.console for d in self.domains.values() if d.console is not None]
        for c in consoles:
            c.reopen_log()
        if self.own_log is not None:
            try:
                fd = os.open(str(self.own_log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
            except OSError as e:
                log.error("cannot reopen %s: %s", self.own_log, e)
        self.say(f"logs reopened ({len(consoles)} console logs)")

    # --- persistence ------------------------------------------------------------------
    def _save(self, d: Dom) -> None:
        rec = {"domid": d.domid, "name": d.name, "uuid": d.uuid, "config": d.config,
               "pid": d.pid, "created": d.created, "target_kb": d.target_kb,
               "max_kb": d.max_kb, "state": d.state, "reason": d.reason, "restarts": d.restarts,
               "pending_config": d.pending_config}
        p = paths.domain_record(self.run_dir, d.domid)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(p)
        st = self.run_dir / "pyxend.state"
        st.write_text(json.dumps({"next_domid": self.next_domid}))

    def _recover(self) -> None:
        """Find the domains a previous pyxend started."""
        for rec_path in sorted(paths.domains_dir(self.run_dir).glob("*.json")):
            try:
                rec = json.loads(rec_path.read_text())
            except ValueError:
                continue
            d = Dom(rec["domid"], rec["name"], rec["uuid"], rec["config"], pid=rec["pid"],
                    created=rec["created"], target_kb=rec["target_kb"], max_kb=rec["max_kb"],
                    state=rec.get("state", "running"), reason=rec.get("reason"),
                    restarts=rec.get("restarts", 0),
                    pending_config=rec.get("pending_config"))
            self.next_domid = max(self.next_domid, d.domid + 1)
            if d.state != "running":
                self.domains[d.domid] = d        # preserved: stays listed until destroyed
                continue
            if not pid_alive(d.pid):
                self.domains[d.domid] = d
                self._domain_gone(d)
                continue
            try:
                self._connect(d)
            except OSError as e:
                self.say(f"domain {d.domid} ({d.name}): cannot reconnect: {e}")
                continue
            self.domains[d.domid] = d
            threading.Thread(target=self._monitor, args=(d,), daemon=True).start()
            resumed = d.devices.resume()
            self.say(f"found running domain {d.domid} ({d.name}), pid {d.pid}"
                     + (f"; backends resumed: {', '.join(resumed)}" if resumed else ""))

    # --- domain processes ---------------------------------------------------------------
    def _connect(self, d: Dom, timeout: float = 10.0) -> None:
        sock = paths.domain_socket(self.run_dir, d.domid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = Connection.connect(sock, timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline or (d.popen and d.popen.poll() is not None):
                    raise
                time.sleep(0.02)
        hello = conn.call("hello")
        fds = conn.take_fds(6)
        ram_fd, heap_fd, st_out, st_in, con_out, con_in = fds
        d.heap = GuestMemory(hello["heap_size"], fd=heap_fd)
        d.conn = conn
        d.pid = hello["pid"]
        d.ram = mmap.mmap(ram_fd, hello["ram_size"], mmap.MAP_SHARED,
                          mmap.PROT_READ | mmap.PROT_WRITE)
        if d.ram_fd >= 0:
            os.close(d.ram_fd)
        d.ram_fd = ram_fd
        d.fds = [st_out, st_in, con_out, con_in]
        view = memoryview(d.ram)
        cpage = view[hello["console_pfn"] * 4096:(hello["console_pfn"] + 1) * 4096]
        log_path = paths.safe_file(paths.log_dir(self.run_dir), f"guest-{d.name}.log")
        d.console = ConsoleBackend(cpage, lambda fd=con_in: eventfd_poke(fd),
                                   sink=lambda data, d=d: self._console_out(d, data),
                                   log_path=str(log_path), defer=self.defer)
        spage = view[hello["store_pfn"] * 4096:(hello["store_pfn"] + 1) * 4096]
        ring = self.xs.attach_ring(d.domid, spage, lambda fd=st_in: eventfd_poke(fd))
        with self.sel_lock:
            self.sel.register(st_out, selectors.EVENT_READ, ring.kick)
            self.sel.register(con_out, selectors.EVENT_READ, d.console.on_notify)
        os.write(self._wake_w, b"x")
        ring.kick()
        d.console.on_notify()
        guest = RemoteGuest(d.domid, d.ram, d.heap, hello["nr_pages"],
                            call=lambda method, _fds=(), d=d, **kw: self._call(d, method, _fds=_fds, **kw),
                            alive=lambda d=d: d.state == "running" and pid_alive(d.pid))
        d.devices = DomainDevices(self.xs, guest)

    def defer(self, delay: float, fn) -> None:
        """Run fn on the event thread after `delay` seconds (the consoles'
        rate limit resumes reading this way)."""
        with self.sel_lock:
            self._timer_seq += 1
            heapq.heappush(self.timers, (time.monotonic() + delay, self._timer_seq, fn))
        os.write(self._wake_w, b"t")

    def _run_timers(self) -> float:
        """Run the timers that are due; seconds until the next one (<= 1)."""
        while True:
            with self.sel_lock:
                if not self.timers:
                    return 1.0
                when, _, fn = self.timers[0]
                now = time.monotonic()
                if when > now:
                    return min(1.0, when - now)
                heapq.heappop(self.timers)
            try:
                fn()
            except Exception:
                log.exception("timer failed")

    def _event_loop(self) -> None:
        while True:
            with self.sel_lock:
                pass
            timeout = self._run_timers()
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                try:
                    os.eventfd_read(key.fd)
                except OSError:
                    continue
                try:
                    key.data()
                except Exception:
                    log.exception("event handler failed")

    def _console_out(self, d: Dom, data: bytes) -> None:
        """Console output for the attached clients: queued, never a
        blocking send (this runs on the event thread every guest's xenstore
        ring and console share)."""
        for w in list(d.watchers):
            if not w.offer(data):
                try:
                    d.watchers.remove(w)
                except ValueError:
                    pass
                if w.overflowed:
                    self.say(f"domain {d.domid}: console client disconnected: it left "
                             f"{w.limit} bytes unread")

    def _call(self, d: Dom, method: str, _fds=(), **params):
        if d.conn is None or d.state != "running":
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        with d.conn_lock:
            try:
                return d.conn.call(method, _fds=_fds, **params)
            except (OSError, RpcError) as e:
                raise ApiError("EIO", f"domain {d.domid}: {e}") from None

    def _spawn(self, cfg: DomainConfig, domid: int, paused: bool,
               restore: int | None = None, stream: bool = False) -> subprocess.Popen:
        cfg_path = paths.domains_dir(self.run_dir) / f"{domid}.config"
        cfg_path.write_text(json.dumps(cfg.to_dict()))
        errlog = open(paths.log_dir(self.run_dir) / f"domain-{domid}.log", "ab")
        # the one place a domain's kind picks its process: an HVM domain is
        # QEMU's supervisor (hvmproc), a PV domain pyxen's hypervisor (domproc);
        # both serve the same control socket
        module = "pyxen.toolstack.hvmproc" if cfg.type == "hvm" else "pyxen.toolstack.domproc"
        args = [sys.executable, "-m", module, "--run-dir", str(self.run_dir),
                "--domid", str(domid), "--config", str(cfg_path)]
        if paused:
            args.append("--paused")
        if restore is not None:                 # a descriptor of the save file
            args += ["--restore-fd", str(restore)] + (["--stream"] if stream else [])
        try:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog,
                                    start_new_session=True, close_fds=True,
                                    pass_fds=() if restore is None else (restore,))
        finally:
            errlog.close()

    def _monitor(self, d: Dom) -> None:
        """Wait for the domain process to end, then apply the lifecycle action."""
        if d.popen is not None:
            d.popen.wait()
        else:
            try:
                pfd = os.pidfd_open(d.pid)
                import select
                select.select([pfd], [], [])
                os.close(pfd)
            except ProcessLookupError:
                pass
        self._domain_gone(d)

    def _domain_gone(self, d: Dom) -> None:
        res_path = paths.domain_result(self.run_dir, d.domid)
        try:
            res = json.loads(res_path.read_text())
        except (OSError, ValueError):
            res = {"reason": "crash", "message": "the domain process died"}
        reason = res.get("reason", "crash")
        if reason == "failed":
            reason = "crash"
        self._teardown_io(d)
        with self.lock:
            if d.domid not in self.domains:
                return                          # destroyed on request
            d.reason = reason
            d.state = "crashed" if reason == "crash" else "shutdown"
            if d.state == "shutdown" and reason == "destroyed":
                self._cleanup(d)
                return
            plan = lifecycle.plan(d.config, reason, d.restarts)
            self.say(f"domain {d.domid} ({d.name}) {reason}: {res.get('message', '')[:200]}"
                     f" -> {plan.action}")
            if plan.coredump:
                self._coredump(d)
            if plan.preserve:
                self._save(d)
                return
            # as xl's reload_domain_config: a config stored by config-update is the
            # restarted domain's (its uuid is new unless the config gives one)
            cfg = dict(d.pending_config if d.pending_config is not None else d.config)
            d.pending_config = None
            if plan.renames:
                self._keep_renamed(d)
            else:
                self._cleanup(d)
            if plan.restart:
                try:
                    self._create(config_from_dict(cfg), paused=False, restarts=d.restarts + 1)
                except ApiError as e:
                    self.say(f"restart of {d.name} failed: {e}")

    def _keep_renamed(self, d: Dom) -> None:
        """rename-restart keeps the stopped domain as xl does
        (libxl_domain_preserve): renamed NAME-YYYYMMDDTHHMMZ with a new uuid,
        listed until destroyed. Its backends let go of their disks and vifs,
        so the restarted domain can have them."""
        old_uuid = d.uuid
        d.name = lifecycle.Plan.preserved_name(
            d.name, time.time(), {x.name for x in self.domains.values() if x is not d})
        d.uuid = str(uuidlib.uuid4())
        d.config = dict(d.config, name=d.name, uuid=d.uuid)
        if d.devices is not None:
            d.devices.close_all()
            d.devices = None
        try:
            with self.xs.access() as store:
                store.rm(self.xsc, f"/vm/{old_uuid}")
                for path, value in ((f"/local/domain/{d.domid}/name", d.name),
                                    (f"/local/domain/{d.domid}/vm", f"/vm/{d.uuid}"),
                                    (f"/vm/{d.uuid}/name", d.name),
                                    (f"/vm/{d.uuid}/uuid", d.uuid)):
                    store.write(self.xsc, path, value.encode())
        except Exception:
            log.exception("xenstore rename of %d", d.domid)
        self.say(f"domain {d.domid} kept as {d.name}")
        self._save(d)

    def _coredump(self, d: Dom) -> None:
        """Write guest memory as an ELF core (like xl dump-core) to dump/."""
        if d.ram is None:
            return
        try:
            path = lifecycle.write_core(paths.dump_dir(self.run_dir), d.ram, d.name, d.domid)
            self.say(f"core of domain {d.domid} written to {path}")
        except (OSError, ValueError) as e:
            self.say(f"core dump of domain {d.domid} failed: {e}")

    def _teardown_io(self, d: Dom) -> None:
        with self.sel_lock:
            for fd in d.fds:
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
        os.write(self._wake_w, b"x")

    def _cleanup(self, d: Dom) -> None:
        """Free what the domain held: XenStore nodes, console, files."""
        self.domains.pop(d.domid, None)
        self._sched_forget(d)
        try:
            self.xs.detach_ring(d.domid)
            with self.xs.access() as store:
                remove_domain_nodes(store, self.xsc, domid=d.domid, uuid=d.uuid)
                store.domain_destroyed(d.domid)
        except Exception:
            log.exception("xenstore cleanup of %d", d.domid)
        if d.devices is not None:
            d.devices.close_all()
            d.devices = None
        if d.console is not None:
            d.console.close()
        for w in d.watchers:
            w.close()
        for fd in d.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        d.fds = []
        if d.conn is not None:
            d.conn.close()
        if d.ram is not None:
            try:
                d.ram.close()
            except BufferError:
                pass
        if d.ram_fd >= 0:
            os.close(d.ram_fd)
            d.ram_fd = -1
        if d.heap is not None:
            d.heap.close()
            d.heap = None
        for suffix in (".json", ".result", ".config", ".sock"):
            try:
                os.unlink(paths.domains_dir(self.run_dir) / f"{d.domid}{suffix}")
            except FileNotFoundError:
                pass

    # --- API --------------------------------------------------------------------------------
    def _client(self, conn: Connection) -> None:
        try:
            while True:
                try:
                    req = conn.recv()
                except (ValueError, RpcError) as e:      # not JSON, or a line too long
                    conn.send(error_reply(None, "EPROTO", f"bad request: {e}"))
                    return
                if req is None:
                    return
                if not isinstance(req, dict):
                    conn.close_fds()
                    conn.send(error_reply(None, "EINVAL", "a request must be a JSON object"))
                    continue
                rid = req.get("id")
                method = req.get("method", "")
                params = req.get("params")
                if params is None:
                    params = {}
                r = api.REQUESTS.get(method) if isinstance(method, str) else None
                # descriptors go to the requests that take them (save, restore:
                # files the client opened with its own permissions); whatever
                # else came with a request is closed
                taken = conn.take_fds(r.fds) if r is not None and r.fds else []
                conn.close_fds()
                if r is not None and r.stream:
                    getattr(self, r.handler)(conn, rid, params)     # console
                    return
                fds = ()
                try:
                    if r is None:
                        raise ApiError("ENOSYS", f"unknown method {_show(method)}")
                    try:
                        r.check(params)
                    except ParamError as e:
                        raise ApiError("EINVAL", str(e)) from None
                    kw = {"fds": taken} if r.fds else {}
                    result = getattr(self, r.handler)(*r.args, *r.arguments(params), **kw)
                    if isinstance(result, WithFds):
                        result, fds = result.result, result.fds
                    conn.send({"id": rid, "result": result}, fds=fds)
                except ApiError as e:
                    conn.send(error_reply(rid, e.code, str(e)))
                except Exception as e:
                    log.exception("API %s failed", method)
                    conn.send(error_reply(rid, "EFAIL", f"{method}: {e}"))
                finally:
                    for fd in [*fds, *taken]:
                        os.close(fd)
        except OSError:
            pass
        finally:
            conn.close_fds()
            conn.close()

    def find(self, dom) -> Dom:
        with self.lock:
            if isinstance(dom, int) or (isinstance(dom, str) and dom.isdigit()):
                d = self.domains.get(int(dom))
                if d is not None:
                    return d
            for d in self.domains.values():
                if d.name == dom:
                    return d
        raise ApiError("ENOENT", f"{dom} is an invalid domain identifier (rc=-6)")

    def api_version(self):
        from .. import __version__
        return {"api": API_VERSION, "pyxen": __version__}

    def api_create(self, config, path, overrides, paused, xl_conf):
        try:
            cfg = DomainConfig.from_text(config, None if path == "<config>" else path,
                                         overrides, XlConf.from_defaults(xl_conf))
        except XlCfgError as e:
            raise ApiError("EINVAL", str(e)) from None
        d = self._create(cfg, paused)
        return {"domid": d.domid, "name": d.name, "warnings": cfg.warnings}

    def _create(self, cfg: DomainConfig, paused: bool, restarts: int = 0,
                restore: int | None = None, stream: bool = False) -> Dom:
        """stream: restore is a migration stream; its disks are taken while
        the source still has them (relocation.receive locks them after)."""
        check_name(cfg.name)
        self._sched_check(cfg)
        with self.lock:
            if cfg.name == "Domain-0" or any(x.name == cfg.name for x in self.domains.values()):
                raise ApiError("EEXIST", f"domain with name \"{cfg.name}\" already exists.")
            promised = sum(x.max_kb for x in self.domains.values()) // 1024
            want = cfg.maxmem or cfg.memory
            if promised + want > self.mem_limit_mb:
                raise ApiError("ENOMEM", f"not enough memory: {want} MiB requested, "
                               f"{self.mem_limit_mb - promised} MiB of the "
                               f"{self.mem_limit_mb} MiB limit left")
            domid = self.next_domid
            self.next_domid += 1
            d = Dom(domid, cfg.name, cfg.uuid or str(uuidlib.uuid4()), cfg.to_dict(),
                    target_kb=cfg.memory * 1024, max_kb=want * 1024, restarts=restarts)
            d.config["uuid"] = d.uuid
            self.domains[domid] = d
        try:
            # the guest starts paused: it runs only once its XenStore nodes,
            # console and rings are in place
            d.popen = self._spawn(config_from_dict(d.config), domid, True, restore, stream)
            d.pid = d.popen.pid
            # a migration stream is read before the domain process answers; it
            # ends the process itself when its sender stays silent
            self._connect(d, timeout=24 * 3600.0 if stream else 10.0)
            self._sched_place(d)            # its cgroup, pool, weight and cap
        except Exception as e:
            msg = self._spawn_failure(d, e)
            with self.lock:
                self.domains.pop(domid, None)
            self._cleanup(d)
            if d.popen is not None and d.popen.poll() is None:
                d.popen.kill()
            raise ApiError("EINVAL", msg) from None
        self._write_xenstore(d)
        try:
            d.devices.attach_config(cfg, force=stream)
        except DeviceConfigError as e:
            self.say(f"domain {domid} ({d.name}): {e}; destroying it")
            with self.lock:
                self.domains.pop(domid, None)
            if d.popen is not None and d.popen.poll() is None:
                d.popen.kill()
                d.popen.wait()
            self._teardown_io(d)
            self._cleanup(d)
            raise ApiError("EINVAL", str(e)) from None
        self._save(d)
        threading.Thread(target=self._monitor, args=(d,), daemon=True).start()
        if not paused:
            self._call(d, "unpause")
        self.say(f"created domain {domid} ({d.name}), pid {d.pid}")
        return d

    def _spawn_failure(self, d: Dom, e: Exception) -> str:
        try:
            res = json.loads(paths.domain_result(self.run_dir, d.domid).read_text())
            return res.get("message") or str(e)
        except (OSError, ValueError):
            return f"domain process failed to start: {e}"

    def _write_xenstore(self, d: Dom) -> None:
        with self.xs.access() as store:
            write_domain_nodes(store, self.xsc, domid=d.domid, name=d.name,
                               uuid=d.uuid, vcpus=int(d.config.get("vcpus", 1)),
                               max_vcpus=int(d.config.get("maxvcpus") or 0) or None,
                               target_kb=d.target_kb, max_kb=d.max_kb, created=d.created)

    def _xs_write(self, path: str, value: str) -> None:
        with self.xs.access() as store:
            store.write(self.xsc, path, value.encode())

    def api_list(self, dom):
        rows = [{**dom0_info(), **self._pool_of(0)}]
        with self.lock:
            doms = [self.find(dom)] if dom is not None else sorted(self.domains.values(),
                                                                     key=lambda x: x.domid)
        for d in doms:
            rows.append(self._info(d))
        return rows if dom is None else rows[1:]

    def _info(self, d: Dom) -> dict:
        row = {"name": d.name, "domid": d.domid, "uuid": d.uuid, "mem_mb": d.target_kb // 1024,
               "max_mem_mb": d.max_kb // 1024, "vcpus": int(d.config.get("vcpus", 1)),
               "running": False, "blocked": False, "paused": False,
               "shutdown": d.state in ("shutdown", "crashed"), "dying": d.state == "dying",
               "reason": d.reason, "cpu_time": 0.0, "config": d.config, "pid": d.pid,
               "target_kb": d.target_kb, "max_kb": d.max_kb,
               "libxl_devices": self._libxl_devices(d),
               "uptime": time.time() - d.created}
        if d.state == "running" and d.conn is not None:
            try:
                info = self._call(d, "info")
                row.update(running=info["running"], blocked=info["blocked"],
                           paused=info["paused"], cpu_time=info["cpu_time"],
                           vcpus=info["online_vcpus"], vcpu_info=info["vcpus"],
                           weight=info["weight"], cap=info["cap"],
                           present_kb=info.get("present_kb", d.target_kb))
                if "device_model" in info:          # HVM: QEMU's pid, accelerator, VNC
                    row["device_model"] = info["device_model"]
                if info.get("suspended"):
                    # being saved: shut down with reason suspend, as Xen shows it
                    row.update(shutdown=True, reason="suspend", running=False,
                               blocked=False, paused=False)
            except ApiError:
                row["dying"] = True
        self._sched_info(d, row)
        return row

    def _libxl_devices(self, d: Dom) -> dict | None:
        """The domain's disks and vifs now (hot-plugged ones too) as libxl's
        JSON has them (xl list -l); None when it has no backends (not running)."""
        devs = d.devices
        if devs is None:
            return None
        specs = sorted(devs.specs.items())
        return {"disks": [libxljson.disk_json(s, True) for (t, _), s in specs if t == "vbd"],
                "nics": [libxljson.nic_json(s, True) for (t, _), s in specs if t == "vif"]}

    def api_info(self):
        return host_info(self)

    def api_destroy(self, dom):
        d = self.find(dom)
        with self.lock:
            self.domains.pop(d.domid, None)
            d.state = "dying"
        if pid_alive(d.pid):
            try:
                with d.conn_lock:
                    d.conn.call("destroy")
            except (OSError, RpcError, AttributeError):
                pass
            if not wait_pid_gone(d.pid, 3.0):
                try:
                    os.kill(d.pid, signal.SIGKILL)     # stuck in a hypercall: no mercy
                except ProcessLookupError:
                    pass
                wait_pid_gone(d.pid, 3.0)
        self._teardown_io(d)
        self._cleanup(d)
        self.say(f"destroyed domain {d.domid} ({d.name})")
        return None

    def api_pause(self, dom):
        self._call(self.find(dom), "pause")

    def api_unpause(self, dom):
        self._call(self.find(dom), "unpause")

    def _request_shutdown(self, dom, what: str):
        d = self.find(dom)
        if d.state != "running":
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        self._xs_write(f"/local/domain/{d.domid}/control/shutdown", what)
        if d.config.get("type") == "hvm":
            # no PV drivers: the ACPI power button or a reset, as xl's -F
            self._call(d, "shutdown", reboot=what == "reboot")
        return d.domid

    def api_shutdown(self, dom):
        return self._request_shutdown(dom, "poweroff")

    def api_reboot(self, dom):
        return self._request_shutdown(dom, "reboot")

    # --- save / restore (issue 16; docs/save-format.md) ---------------------------------
    def api_save(self, dom, path, checkpoint, paused, config, config_path, xl_conf, *,
                 fds=()):
        """xl save: the suspend protocol (control/shutdown = "suspend", then
        the guest's SHUTDOWN_suspend), the file written by the domain
        process, then as xl's save_domain: destroyed, or with -c / -p
        resumed (the suspend hypercall returns 1), paused with -p; resumed
        the same way when the save fails."""
        d = self.find(dom)
        if d.state != "running":
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        out_fd = _file_fd(fds, os.O_WRONLY, path)
        saved_cfg = d.config
        if config is not None:
            saved_cfg = self._given_config(config, config_path, xl_conf, d)
        keep = checkpoint or paused
        hvm = d.config.get("type") == "hvm"
        if not hvm and self._call(d, "info").get("paused"):
            # a paused guest cannot act on control/shutdown (libxl would wait
            # for it until its timeout)
            raise ApiError("EINVAL", f"domain {d.domid} is paused: unpause it to save it")
        with self._saving(d, "saved"):
            save = self._save_hvm if hvm else self._save_domain
            out = save(d, path, out_fd, keep, paused, saved_cfg)
        self.say(f"domain {d.domid} ({d.name}) saved to {path} ({out['bytes']} bytes)")
        if not keep:
            self.api_destroy(d.domid)
        return {"domid": d.domid, "name": d.name, "bytes": out["bytes"]}

    @contextlib.contextmanager
    def _saving(self, d: Dom, what: str):
        """One save or migration of a domain at a time (EBUSY for another)."""
        with self.lock:
            if d.domid in self.saving:
                raise ApiError("EBUSY", f"domain {d.domid} is being {what} already")
            self.saving.add(d.domid)
        try:
            yield
        finally:
            with self.lock:
                self.saving.discard(d.domid)

    def _save_hvm(self, d: Dom, path: str, out_fd: int, keep: bool, paused: bool,
                  saved_cfg: dict) -> dict:
        """xl save of an HVM domain: no suspend protocol (the guest has no PV
        drivers); its domain process stops QEMU and has it write its own
        migration stream into the file (hvmsave.py), then resumes QEMU with
        -c, leaves it stopped with -p, or the domain is destroyed."""
        try:
            conn = Connection.connect(paths.domain_socket(self.run_dir, d.domid))
        except OSError as e:
            raise ApiError("EIO", f"domain {d.domid}: {e}") from None
        try:
            self.say(f"domain {d.domid} ({d.name}) stopped; saving QEMU's stream to {path}")
            return conn.call("save", _fds=(out_fd,), config=saved_cfg, keep=keep,
                             paused=paused,
                             extra={"target_kb": d.target_kb, "max_kb": d.max_kb})
        except (RpcError, OSError) as e:
            msg = e.message if isinstance(e, RpcError) else str(e)
            raise ApiError("EIO", f"failed to save domain {d.domid}: {msg}") from None
        finally:
            conn.close()

    def _save_domain(self, d: Dom, path: str, out_fd: int, keep: bool, paused: bool,
                     saved_cfg: dict) -> dict:
        # its own connection: the domain's usual one stays free for list/info
        try:
            conn = Connection.connect(paths.domain_socket(self.run_dir, d.domid))
        except OSError as e:
            raise ApiError("EIO", f"domain {d.domid}: {e}") from None
        try:
            self._suspend(conn, d, keep, "a save (-c, -p)")
            self.say(f"domain {d.domid} ({d.name}) suspended; saving to {path}")
            try:
                out = conn.call("save", _fds=(out_fd,), config=saved_cfg,
                                extra={"target_kb": d.target_kb, "max_kb": d.max_kb})
            except (RpcError, OSError) as e:
                msg = e.message if isinstance(e, RpcError) else str(e)
                try:
                    conn.call("resume", cancelled=True)
                    conn.call("unpause")
                except (RpcError, OSError):
                    pass
                raise ApiError("EIO", f"failed to save domain {d.domid}: {msg}; "
                               "the domain was resumed") from None
            if keep:
                conn.call("resume", cancelled=True)
                if not paused:
                    conn.call("unpause")
            else:
                # on this connection: its closing resumes a domain still suspended
                try:
                    conn.call("destroy")
                except (RpcError, OSError):
                    pass
        finally:
            conn.close()
        return out

    @staticmethod
    def _given_config(config: str, config_path: str, xl_conf, d: Dom) -> dict:
        """The xl.cfg text given to save / migrate -C, to go with the domain
        instead of its running config (xl.conf's defaults applied, its uuid
        kept)."""
        try:
            cfg = DomainConfig.from_text(config, config_path, (), XlConf.from_defaults(xl_conf))
        except XlCfgError as e:
            raise ApiError("EINVAL", str(e)) from None
        out = cfg.to_dict()
        out.setdefault("uuid", d.uuid)
        return out

    def _suspend(self, conn: Connection, d: Dom, resumable: bool, what: str) -> None:
        """The suspend protocol on conn (a connection of its own to the domain
        process): control/shutdown = "suspend", then wait for the guest's
        SHUTDOWN_suspend (the domain is then paused with every vCPU parked).
        resumable: the kernel must be able to carry on afterwards
        (SUSPEND_CANCEL) for `what`."""
        shutdown_node = f"/local/domain/{d.domid}/control/shutdown"
        try:
            caps = conn.call("suspend_arm")
            if resumable and not caps["suspend_cancel"]:
                conn.call("suspend_disarm")
                raise ApiError("EOPNOTSUPP", f"domain {d.domid}: its kernel has no "
                               f"SUSPEND_CANCEL note: it cannot be resumed after {what}")
            self._xs_write(shutdown_node, "suspend")
            res = conn.call("suspend_wait", timeout=SUSPEND_TIMEOUT)
        except (RpcError, OSError) as e:
            msg = e.message if isinstance(e, RpcError) else str(e) or "connection lost"
            raise ApiError("EIO", f"domain {d.domid}: {msg}") from None
        if not res["suspended"]:
            self._xs_write(shutdown_node, "")      # libxl cancels its request too
            raise ApiError("ETIMEDOUT", f"domain {d.domid} did not suspend within "
                           f"{SUSPEND_TIMEOUT:.0f} s (its kernel must act on "
                           "control/shutdown = suspend)")

    def api_restore(self, path, config, config_path, paused, xl_conf, *, fds=()):
        """xl restore: a new domain from a save file, built by its domain
        process from the saved state (builder.build_domain(restore=...));
        the file is checked (magic, version, END record) before anything is
        created."""
        from .savefile import SaveFileError, check_file
        in_fd = _file_fd(fds, os.O_RDONLY, path)
        try:
            hdr = check_file(path, in_fd)
        except SaveFileError as e:
            raise ApiError("EINVAL", str(e)) from None
        try:
            if config is not None:
                cfg = DomainConfig.from_text(config, config_path, (),
                                             XlConf.from_defaults(xl_conf))
            else:
                cfg = config_from_dict(hdr.config)
        except (XlCfgError, ValueError, TypeError, KeyError) as e:
            raise ApiError("EINVAL", f"{path}: its config: {e}") from None
        saved_type = hdr.config.get("type") or "pv"
        if saved_type != cfg.type:
            raise ApiError("EINVAL", f"{path}: the save file holds a {saved_type.upper()} "
                           f"domain; the config is for a {cfg.type.upper()} one")
        if cfg.memory * 256 != hdr.info["nr_pages"] or cfg.maxvcpus != hdr.info.get("vcpus"):
            raise ApiError("EINVAL", f"{path}: the saved domain had {hdr.info['nr_pages'] // 256}"
                           f" MiB and {hdr.info.get('vcpus')} vCPUs; the config asks for "
                           f"{cfg.memory} MiB and {cfg.maxvcpus} (maxvcpus)")
        d = self._create(cfg, paused, restore=in_fd)
        self.apply_saved_memory(d, hdr.info)
        self.say(f"restored domain {d.domid} ({d.name}) from {path}")
        return {"domid": d.domid, "name": d.name}

    def apply_saved_memory(self, d: Dom, info: dict) -> None:
        """The memory target and maximum a saved or migrated domain had
        (mem-set, mem-max), as libxl keeps them in the saved domain config."""
        mx, target = info.get("max_kb"), info.get("target_kb")
        try:
            if isinstance(mx, int) and mx != d.max_kb and mx >= d.target_kb:
                self.api_mem_max(d.domid, mx)
            if isinstance(target, int) and 0 < target <= d.max_kb and target != d.target_kb:
                self.api_mem_set(d.domid, target)
        except ApiError as e:
            self.say(f"domain {d.domid}: its saved memory settings: {e}")

    def create_from_stream(self, cfg: DomainConfig, fd: int) -> Dom:
        """A domain built, paused, from a migration stream on fd (its header
        read already: relocation.receive)."""
        return self._create(cfg, True, restore=fd, stream=True)

    # --- live migration (issue 16; relocation.py, migration.py) ---------------------------
    def api_migrate(self, dom, config, config_path, debug, live, xl_conf, *, fds=()):
        """xl migrate: the domain goes over the connection whose descriptor
        comes with the request (ssh's, or TCP to a relocation server):
        pre-copy rounds, suspend, the rest; destroyed here once the target
        runs it, resumed here when anything fails."""
        from .relocation import MigrateError, send
        d = self.find(dom)
        if len(fds) != 1:
            raise ApiError("EINVAL", "migrate: the request must carry the connection's descriptor")
        if d.state != "running":
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        saved_cfg = d.config
        if config is not None:
            saved_cfg = self._given_config(config, config_path, xl_conf, d)
        if self._call(d, "info").get("paused"):
            raise ApiError("EINVAL", f"domain {d.domid} is paused: unpause it to migrate it")
        with self._saving(d, "saved or migrated"):
            try:
                out = send(self, d, fds[0], saved_cfg, debug, live)
            except MigrateError as e:
                self.say(str(e))
                raise ApiError(e.code, str(e)) from None
        self.say(f"domain {d.domid} ({d.name}) migrated: {out['rounds']} rounds, "
                 f"downtime {out['downtime_s'] * 1000:.0f} ms")
        self.api_destroy(d.domid)
        return out

    def api_migrate_receive(self, paused, *, fds=()):
        """xl migrate-receive: a domain from the migration stream on the
        descriptors that come with the request (read, write: ssh's standard
        input and output; one socket may be both)."""
        from .relocation import MigrateError, receive
        if len(fds) not in (1, 2):
            raise ApiError("EINVAL", "migrate_receive: the request must carry the connection")
        try:
            return receive(self, fds[0], fds[-1], paused)
        except MigrateError as e:
            self.say(str(e))
            raise ApiError(e.code, str(e)) from None

    def api_config_update(self, dom, config, path, overrides, xl_conf):
        """xl config-update: keep a new config for the domain's next restart
        (reboot, or any on_* restart action); the running domain and what
        list -l shows of it are unchanged, as xl's "xl" userdata."""
        d = self.find(dom)
        try:
            cfg = DomainConfig.from_text(config, None if path == "<config>" else path,
                                         overrides, XlConf.from_defaults(xl_conf))
        except XlCfgError as e:
            raise ApiError("EINVAL", str(e)) from None
        with self.lock:
            d.pending_config = cfg.to_dict()
            self._save(d)
        self.say(f"domain {d.domid} ({d.name}): configuration for its next restart updated")
        return {"domid": d.domid, "name": d.name, "warnings": cfg.warnings}

    def api_rename(self, dom, name):
        check_name(name)
        d = self.find(dom)
        with self.lock:
            if name == "Domain-0" or \
                    any(x.name == name for x in self.domains.values() if x is not d):
                raise ApiError("EEXIST", f"domain with name \"{name}\" already exists.")
            d.name = name
            d.config["name"] = name
        self._xs_write(f"/local/domain/{d.domid}/name", name)
        self._save(d)

    def api_domid(self, name):
        return self.find(name).domid if name != "Domain-0" else 0

    def api_domname(self, domid):
        if int(domid) == 0:
            return "Domain-0"
        return self.find(int(domid)).name

    def api_uptime(self):
        return [{"name": "Domain-0", "domid": 0, "uptime": host_uptime()}] + [
            {"name": d.name, "domid": d.domid, "uptime": time.time() - d.created}
            for d in sorted(self.domains.values(), key=lambda x: x.domid)]

    def api_mem_set(self, dom, kb):
        d = self.find(dom)
        kb = int(kb)
        if kb > d.max_kb:
            raise ApiError("EINVAL", f"memory_dynamic_max must be less than or equal to "
                           f"memory_static_max ({d.max_kb} KiB)")
        d.target_kb = kb
        self._xs_write(f"/local/domain/{d.domid}/memory/target", str(kb))
        self._save(d)

    def api_mem_max(self, dom, kb):
        d = self.find(dom)
        kb = int(kb)
        if kb < d.target_kb:      # libxl_domain_setmaxmem's check
            raise ApiError("EINVAL", f"memory_static_max must be greater than or equal to "
                           f"memory_dynamic_max ({d.target_kb} KiB)")
        with self.lock:
            promised_kb = sum(x.max_kb for x in self.domains.values() if x is not d)
            if promised_kb + kb > self.mem_limit_mb * 1024:
                raise ApiError("ENOMEM", "not enough memory under the limit")
            d.max_kb = kb
        self._xs_write(f"/local/domain/{d.domid}/memory/static-max", str(kb))
        if d.state == "running":
            self._call(d, "set_maxmem", kb=kb)
        self._save(d)

    def api_vcpu_set(self, dom, count):
        d = self.find(dom)
        maxv = int(d.config.get("maxvcpus") or d.config.get("vcpus", 1))
        if not 1 <= int(count) <= maxv:
            raise ApiError("EINVAL", f"requested vcpus {count} is more than maxvcpus {maxv}")
        for i in range(maxv):
            self._xs_write(f"/local/domain/{d.domid}/cpu/{i}/availability",
                           "online" if i < int(count) else "offline")
        # as libxl's avail_vcpus: list shows it, and a save, a migration or
        # a restart takes it along
        with self.lock:
            d.config["vcpus"] = int(count)
            self._save(d)

    def api_vcpu_list(self, dom):
        if dom is not None and str(dom) in ("0", "Domain-0"):
            return dom0_vcpus()
        doms = [self.find(dom)] if dom is not None else sorted(self.domains.values(),
                                                                key=lambda x: x.domid)
        out = dom0_vcpus() if dom is None else []
        for d in doms:
            if d.state != "running":
                continue
            info = self._call(d, "info")
            for v in info["vcpus"]:
                out.append({"name": d.name, "domid": d.domid, **v})
        return out

    def api_vcpu_pin(self, dom, vcpu, cpus):
        d = self.find(dom)
        if isinstance(vcpu, str) and vcpu != "all" and not (vcpu.isascii() and vcpu.isdigit()):
            raise ApiError("EINVAL", f"vcpu must be a number or 'all', got {_show(vcpu)}")
        n = int(d.config.get("maxvcpus") or d.config.get("vcpus", 1))
        ids = range(n) if vcpu == "all" else [int(vcpu)]
        if any(i >= n for i in ids):
            raise ApiError("EINVAL", f"domain {d.domid} has no vcpu {vcpu}")
        for i in ids:
            self._call(d, "vcpu_pin", vcpu=i, cpus=cpus)

    def api_sched_credit(self, dom, weight, cap):
        doms = [self.find(dom)] if dom is not None else sorted(self.domains.values(),
                                                                key=lambda x: x.domid)
        out = [{"name": "Domain-0", "domid": 0, "weight": 256, "cap": 0}]
        for d in doms:
            if d.state != "running":
                continue
            r = self._sched_set(d, weight, cap)
            out.append({"name": d.name, "domid": d.domid, **r})
        return out if dom is None else out[1:]

    def api_top(self):
        """xentop's figures (libxenstat's node and domains): the host's
        memory and CPUs, and per domain its state, CPU time, memory (what it
        holds now; Domain-0, the host, has no limit), vCPUs built, and its
        vifs' and vbds' counters as the backends count them. A vif's are the
        host side's (as xentop reads vifN.M): tx is what went to the guest.
        Counters start at 0 when a device (re)connects; no vbd request ever
        waits for a free slot here, so oo_req is 0."""
        from ..hv.hypercalls.version import XEN_MAJOR, XEN_MINOR, EXTRAVERSION
        meminfo = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                meminfo[k] = int(v.split()[0])
        mhz = 0.0
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":", 1)[1])
                    break
        host = {"total_kb": meminfo.get("MemTotal", 0), "free_kb": meminfo.get("MemAvailable", 0),
                "nr_cpus": os.cpu_count() or 1, "cpu_mhz": int(mhz),
                "xen_version": f"{XEN_MAJOR}.{XEN_MINOR}{EXTRAVERSION.decode()}"}
        keep = ("name", "domid", "running", "blocked", "paused", "shutdown", "dying", "reason",
                "cpu_time")
        dom0 = dom0_info()
        doms = [{**{k: dom0[k] for k in keep}, "mem_kb": host["total_kb"], "max_kb": None,
                 "vcpus": host["nr_cpus"], "vcpu_times": [], "nets": [], "vbds": [], "ssid": 0}]
        with self.lock:
            ds = sorted(self.domains.values(), key=lambda x: x.domid)
        for d in ds:
            r = self._info(d)
            vinfo = r.get("vcpu_info") or []
            doms.append({**{k: r[k] for k in keep}, "mem_kb": r.get("present_kb", d.target_kb),
                         "max_kb": d.max_kb,
                         "vcpus": len(vinfo) or int(d.config.get("maxvcpus") or
                                                    d.config.get("vcpus", 1)),
                         "vcpu_times": [{"id": v["id"], "online": v["online"],
                                         "cpu_time": v["cpu_time"]} for v in vinfo],
                         **self._backend_counters(d), "ssid": 0})
        return {"host": host, "domains": doms}

    def _backend_counters(self, d: Dom) -> dict:
        nets, vbds = [], []
        devs = d.devices
        if devs is not None:
            for devid, dev in sorted(devs.by_kind.get("vif", {}).items()):
                s = dev.stats()
                nets.append({"devid": devid, "rx_bytes": s.get("tx_bytes", 0),
                             "rx_packets": s.get("tx_packets", 0),
                             "rx_errs": s.get("tx_errors", 0), "rx_drop": 0,
                             "tx_bytes": s.get("rx_bytes", 0),
                             "tx_packets": s.get("rx_packets", 0), "tx_errs": 0,
                             "tx_drop": s.get("rx_dropped", 0)})
            for devid, dev in sorted(devs.by_kind.get("vbd", {}).items()):
                s = dev.stats()
                vbds.append({"devid": devid, "oo_req": 0, "rd_req": s.get("rd_req", 0),
                             "wr_req": s.get("wr_req", 0), "rd_sect": s.get("rd_sect", 0),
                             "wr_sect": s.get("wr_sect", 0)})
        return {"nets": nets, "vbds": vbds}

    def api_dmesg(self, clear):
        lines = list(self.log_lines)
        if clear:
            del self.log_lines[:len(lines)]
        for d in sorted(self.domains.values(), key=lambda x: x.domid):
            if d.state == "running":
                try:
                    lines += self._call(d, "dmesg", clear=clear)
                except ApiError:
                    pass
        return lines

    def _hvm_domain(self, dom, what: str):
        d = self.find(dom)
        if d.config.get("type") != "hvm":
            raise ApiError("EINVAL", f"domain {d.domid} is not an HVM domain: {what} needs "
                           "a device model (QEMU)")
        return d

    def api_cd_insert(self, dom, vdev, target):
        self._call(self._hvm_domain(dom, "cd-insert"), "cd_insert", vdev=vdev, target=target)

    def api_qemu_monitor_command(self, dom, command):
        """libxl_qemu_monitor_command: a QEMU monitor (HMP) command line run
        by the HVM domain's QEMU; its output."""
        return self._call(self._hvm_domain(dom, "qemu-monitor-command"), "monitor",
                          command=command)

    def api_cd_eject(self, dom, vdev):
        self._call(self._hvm_domain(dom, "cd-eject"), "cd_eject", vdev=vdev)

    def api_trigger(self, dom, trigger, vcpu=0):
        """libxl_send_trigger: the domain's process sends it (domproc:
        XEN_DOMCTL_sendtrigger's rules; hvmproc: QMP) and says 0 or the
        errno; xl prints libxl's error and succeeds either way."""
        if trigger not in api.TRIGGERS:
            raise ApiError("EINVAL", f'Invalid trigger "{trigger}"')
        return self._call(self.find(dom), "trigger", kind=trigger, vcpu=int(vcpu))

    def api_sysrq(self, dom, key):
        """libxl_send_sysrq: the letter in the guest's control/sysrq."""
        d = self.find(dom)
        if len(key) != 1:
            raise ApiError("EINVAL", "Invalid sysrq.")
        if d.state != "running":
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        self._xs_write(f"/local/domain/{d.domid}/control/sysrq", key)

    def api_dump_core(self, dom):
        """A read-only descriptor of the domain's memory (running, or kept by
        on_crash=preserve): the client writes the core, so a file is created
        with the client's permissions, not pyxend's."""
        d = self.find(dom)
        if d.ram is None or d.ram_fd < 0:
            raise ApiError("EINVAL", f"domain {d.domid} has no memory to dump")
        fd = os.open(f"/proc/self/fd/{d.ram_fd}", os.O_RDONLY | os.O_CLOEXEC)
        return WithFds({"domid": d.domid, "name": d.name, "size": len(d.ram)}, (fd,))

    def api_evtchn_connect(self, from_dom, from_port, to_dom, to_port):
        """A domain binds to another domain's unbound port (EVTCHNOP_bind_interdomain
        across processes): hand both domain processes one end of a pair of
        eventfds, so each notification is a single write, no polling."""
        a = self.find(int(to_dom))
        if int(from_dom) not in self.domains:
            raise ApiError("ESRCH", f"no domain {from_dom}")
        to_a = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        to_b = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            with a.conn_lock:
                a.conn.call("evtchn_accept", _fds=(to_a, to_b), port=int(to_port),
                            remote_dom=int(from_dom), remote_port=int(from_port))
        except (OSError, RpcError, AttributeError) as e:
            os.close(to_a)
            os.close(to_b)
            raise ApiError("EINVAL", f"domain {to_dom} port {to_port}: {e}") from None
        return WithFds({"remote_dom": int(to_dom)}, (to_a, to_b))

    # --- PV devices (xl block-* / network-*) ---------------------------------------------
    def _devices(self, dom):
        d = self.find(dom)
        if d.state != "running" or d.devices is None:
            raise ApiError("EINVAL", f"domain {d.domid} is not running")
        return d, d.devices

    def _devcall(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except DeviceConfigError as e:
            raise ApiError("EINVAL", str(e)) from None

    # every kind in devkinds.DEVICE_KINDS: <verb>_attach, <verb>_detach, <verb>_list
    def _device_attach(self, kind, dom, spec, force=False, base_dir=None):
        d, devs = self._devices(dom)
        dev = self._devcall(devs.attach_text, kind, spec, seed=d.name,
                            base_dir=base_dir or os.getcwd(), force=force)
        self.say(f"domain {d.domid}: attached "
                 f"{kind.attached(dev, devs.specs[(kind.type, dev.devid)])}")
        return kind.attach_result(dev)

    def _device_detach(self, kind, dom, which, force):
        d, devs = self._devices(dom)
        dev = self._devcall(devs.find, kind, which)
        self._devcall(devs.detach, dev, force=force)
        self.say(f"domain {d.domid}: detached {kind.label(dev)}{' (forced)' if force else ''}")
        return None

    def _device_list(self, kind, dom):
        d, devs = self._devices(dom)
        return devs.describe_all(kind)

    def api_log(self, lines):
        return self.log_lines[-lines:] if lines else []

    def _attach_console(self, conn: Connection, rid, params) -> None:
        try:
            try:
                api.REQUESTS["console"].check(params)
            except ParamError as e:
                raise ApiError("EINVAL", str(e)) from None
            d = self.find(params["dom"])
            if d.console is None:
                raise ApiError("EINVAL", f"domain {d.domid} has no console")
        except ApiError as e:
            conn.send(error_reply(rid, e.code, str(e)))
            conn.close()
            return
        conn.send({"id": rid, "result": {"domid": d.domid, "name": d.name}})
        client = ConsoleClient(conn.sock)
        typed = bytes(conn.buf)
        client.offer(bytes(d.console.history))
        d.watchers.append(client)
        console = d.console

        def write_input(data: bytes) -> int:
            return console.write_input(data)
        try:
            client.serve(write_input, alive=lambda: d.state == "running" and
                         d.console is not None, typed=typed)
        finally:
            if client in d.watchers:
                d.watchers.remove(client)
            conn.close()


def check_name(name: str) -> None:
    """A domain name as xl.cfg's name= allows it (domconfig), else EINVAL."""
    problem = domain_name_problem(name)
    if problem:
        raise ApiError("EINVAL", problem)


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _file_fd(fds, mode: int, path: str) -> int:
    """The descriptor a save or restore request brought (the client opened
    the file with its own permissions: pyxend opens none for it), checked to
    be a regular file open for mode."""
    if len(fds) != 1:
        raise ApiError("EINVAL", f"{path}: the request must carry the file's descriptor")
    fd = fds[0]
    try:
        st = os.fstat(fd)
        acc = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError as e:
        raise ApiError("EINVAL", f"{path}: {e.strerror}") from None
    import stat
    if not stat.S_ISREG(st.st_mode) or acc not in (mode, os.O_RDWR):
        raise ApiError("EINVAL", f"{path}: not a regular file open for "
                       f"{'writing' if mode == os.O_WRONLY else 'reading'}")
    return fd


@dataclass
class WithFds:
    """An API result that carries file descriptors to the caller."""
    result: object
    fds: tuple


def config_from_dict(data: dict) -> DomainConfig:
    return DomainConfig.from_dict(data)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def host_uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def dom0_info() -> dict:
    t = os.times()
    return {"name": "Domain-0", "domid": 0, "uuid": "00000000-0000-0000-0000-000000000000",
            "mem_mb": meminfo_mb("MemTotal"), "max_mem_mb": meminfo_mb("MemTotal"), "vcpus": os.cpu_count(),
            "running": True, "blocked": False, "paused": False, "shutdown": False,
            "dying": False, "reason": None, "cpu_time": t.user + t.system + t.children_user +
            t.children_system, "uptime": host_uptime()}


def dom0_vcpus() -> list[dict]:
    """Domain-0 is the host (as in dom0_info): a vCPU per host CPU, vCPU i on CPU i,
    its time the CPU's busy time (/proc/stat); the CPU this request is answered on
    is running, the others shown blocked."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                v = [int(x) for x in vals]
                busy[int(name[3:])] = (sum(v[:7]) - v[3] - v[4]) / ticks   # not idle, iowait
    with open("/proc/thread-self/stat") as f:
        text = f.read()
    here = int(text[text.rindex(")") + 2:].split()[39 - 3])
    return [{"name": "Domain-0", "domid": 0, "id": i, "online": True,
             "state": "running" if i == here else "blocked", "cpu": i,
             "cpu_time": busy.get(i, 0.0), "affinity": [i]}
            for i in range(os.cpu_count() or 1)]


def host_info(daemon: Daemon) -> dict:
    import platform
    meminfo = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            meminfo[k] = int(v.split()[0])
    cpuinfo = open("/proc/cpuinfo").read()
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), "unknown")
    mhz = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                if l.startswith("cpu MHz")), "0")
    from ..hv.hypercalls.version import XEN_MAJOR, XEN_MINOR, EXTRAVERSION
    promised = sum(x.max_kb for x in daemon.domains.values()) // 1024
    return {"host": platform.node(), "release": platform.release(),
            "version": platform.version(), "machine": platform.machine(),
            "nr_cpus": os.cpu_count(), "cpu_model": model, "cpu_mhz": mhz,
            "total_memory": meminfo.get("MemTotal", 0) // 1024,
            "free_memory": meminfo.get("MemAvailable", 0) // 1024,
            "promised_memory": promised, "memory_limit": daemon.mem_limit_mb,
            "xen_major": XEN_MAJOR, "xen_minor": XEN_MINOR,
            "xen_extra": EXTRAVERSION.decode(), "xen_caps": "xen-3.0-x86_64",
            "virt_caps": "pv hvm", "xen_scheduler": "credit", "xen_pagesize": 4096,
            "cpu_topology": hostinfo.cpu_topology(), "numa_nodes": hostinfo.numa_nodes(),
            "pci_topology": hostinfo.pci_topology(),
            "hypervisor": "pyxen on KVM (PVM)", "nr_domains": len(daemon.domains) + 1,
            "free_cpus": len(daemon.pools.free_cpus()), "sched_backend": daemon.sched_backend}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pyxend", description="pyxen's control daemon (dom0).")
    ap.add_argument("-F", "--foreground", action="store_true", help="stay in the foreground")
    ap.add_argument("--run-dir", help="sockets and state (default /run/pyxen, "
                    "or $XDG_RUNTIME_DIR/pyxen when not root; $PYXEN_RUN_DIR)")
    ap.add_argument("--mem-limit", type=int, metavar="MiB",
                    help="host memory that may be promised to domains (default: host RAM - 256 MiB)")
    ap.add_argument("--relocation-port", type=int, metavar="PORT",
                    help="listen for live migrations on this TCP port, as xend's relocation "
                    "server (off by default; xend's port was 8002; 0: any free port)")
    ap.add_argument("--relocation-address", default="", metavar="ADDR",
                    help="the address the relocation server listens on (default: all)")
    ap.add_argument("--relocation-hosts-allow", metavar="REGEXES",
                    default=r"^localhost$ ^localhost\.localdomain$",
                    help="space-separated regular expressions; a peer whose address or "
                    "host name matches one may migrate domains here (xend's "
                    "xend-relocation-hosts-allow; '' allows everyone)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rd = Path(args.run_dir) if args.run_dir else paths.run_dir()
    rd.mkdir(parents=True, exist_ok=True)
    if not args.foreground:
        if os.fork() > 0:
            # parent: wait until the daemon's socket answers
            for _ in range(200):
                if paths.api_socket(rd).exists():
                    return 0
                time.sleep(0.05)
            return 0
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        logf = os.open(str(rd / "pyxend.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(devnull, 0)
        os.dup2(logf, 1)
        os.dup2(logf, 2)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="pyxend: %(levelname)s %(message)s")
    d = Daemon(rd, args.mem_limit)
    if not args.foreground:
        d.own_log = rd / "pyxend.log"
    d.start()
    if args.relocation_port is not None:
        from .relocation import RelocationServer
        try:
            reloc = RelocationServer(d, args.relocation_port, args.relocation_address,
                                     args.relocation_hosts_allow)
        except OSError as e:
            raise SystemExit(f"pyxend: relocation port {args.relocation_port}: {e.strerror}")
        reloc.start()
        (rd / "relocation.port").write_text(f"{reloc.port}\n")
        d.say(f"relocation server on {args.relocation_address or '*'}:{reloc.port}, "
              f"allowed: {args.relocation_hosts_allow or 'everyone'}")
    signal.signal(signal.SIGTERM, lambda *a: d.stop())
    signal.signal(signal.SIGINT, lambda *a: d.stop())
    # like xenconsoled: SIGHUP reopens the logs (logrotate moved them)
    signal.signal(signal.SIGHUP, lambda *a: threading.Thread(
        target=d.reopen_logs, daemon=True, name="log-reload").start())
    d.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
