"""The domain process: one per guest (DESIGN.md section 3).

It owns the guest's KVM VM, memory (memfds) and vCPU threads, and serves a
control socket (run_dir/domains/<domid>.sock) to pyxend. On each `hello`
it hands pyxend the memfds and a fresh set of eventfds: one pair per
channel the guest has to a dom0 service (console, xenstore), so
notifications cross the process boundary without polling. The process is
in its own session: pyxend can die and be restarted without touching it.

    python -m pyxen.toolstack.domproc --run-dir DIR --domid N --config FILE.json [--paused]
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import logging.handlers
import os
import select
import signal
import socket
import sys
import threading

from . import paths
from .domconfig import DomainConfig
from .rpc import Connection, RpcError, error_reply, eventfd_poke
from ..hv.abi import EINVAL, ESRCH
from .builder import Dom0Services, build_domain
from .runner import EXIT_STATUS


class LogRing(logging.Handler):
    def __init__(self, n: int = 2000):
        super().__init__()
        self.lines = collections.deque(maxlen=n)

    def emit(self, record):
        self.lines.append(self.format(record))


class Eventfd:
    """An eventfd this process signals while another thread may close it
    (the port it serves was closed): never a write to a closed, perhaps
    reused, descriptor."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()

    def poke(self) -> None:
        with self.lock:
            if self.fd >= 0:
                eventfd_poke(self.fd)

    def close(self) -> None:
        with self.lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class EventPoller:
    """One thread waits on every eventfd through which the outside signals
    this domain's ports (the dom0 bridges of xenstore and console, dom0
    backends, other domains' processes) with one epoll set, and raises the
    port an eventfd belongs to: no host thread per channel."""

    def __init__(self, dom):
        self.dom = dom
        self.ep = select.epoll()
        self.lock = threading.Lock()
        self.ports: dict[int, int] = {}            # fd -> port
        threading.Thread(target=self._run, daemon=True, name="evtchn-poller").start()

    def add(self, fd: int, port: int) -> None:
        with self.lock:
            self.ports[fd] = port
            self.ep.register(fd, select.EPOLLIN)

    def remove(self, fd: int) -> None:
        """Stop waiting on fd and close it."""
        with self.lock:
            if self.ports.pop(fd, None) is None:
                return
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            os.close(fd)

    def _run(self) -> None:
        while not self.dom.stopped:
            try:
                ready = self.ep.poll(0.5)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return
            for fd, _ in ready:
                with self.lock:             # fd cannot be closed (and reused) meanwhile
                    port = self.ports.get(fd)
                    if port is None:
                        continue
                    try:
                        os.eventfd_read(fd)
                    except OSError:
                        continue
                self.dom.events.raise_port(port)


class PyxendLink(Dom0Services):
    """The domain's dom0 services are pyxend's, in another process: its
    xenstore and console channels are bridged over eventfd pairs handed to
    pyxend on each `hello` (pyxend reads the rings through the memfds), and
    inter-domain channels are set up through pyxend with the other domain's
    process. Devices are attached by pyxend, not here."""

    def __init__(self, run_dir, domid: int):
        self.run_dir = run_dir
        self.domid = domid
        self.dom = None
        self.poller = None
        # port -> (to_dom0, to_guest) eventfds of the xenstore and console channels
        self.bridges: dict[int, tuple[Eventfd, int]] = {}
        self.lock = threading.Lock()

    def connect(self, dom, cfg) -> None:
        self.dom = dom
        self.poller = EventPoller(dom)

    # --- dom0 channel bridges -----------------------------------------------------
    def _poke(self, port) -> None:
        pair = self.bridges.get(port)
        if pair is not None:
            pair[0].poke()

    def notify_store(self) -> None:
        if self.dom is not None:
            self._poke(self.dom.store_port)

    def notify_console(self) -> None:
        if self.dom is not None:
            self._poke(self.dom.console_port)

    def new_bridges(self) -> list[int]:
        """A fresh eventfd pair per dom0 channel for a (re)connecting pyxend;
        the old pair is closed. Returns the fds to pass, in port order."""
        ports = (self.dom.store_port, self.dom.console_port)
        with self.lock:
            old = self.bridges
            self.bridges = {p: (Eventfd(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)),
                                os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
                            for p in ports}
            for to_dom0, to_guest in old.values():
                to_dom0.close()
                self.poller.remove(to_guest)
            fds = []
            for p in ports:
                to_dom0, to_guest = self.bridges[p]
                self.poller.add(to_guest, p)
                fds += [to_dom0.fd, to_guest]
            return fds

    # --- inter-domain channels between domain processes -----------------------------
    def remote_end(self, remote_dom: int, port: int, to_remote: int, from_remote: int):
        """The outside end of `port`: sends poke to_remote; from_remote raises
        the port through the poller once the port is bound (a signal that
        came earlier is still counted in the eventfd); both are closed when
        the port no longer uses this end."""
        from ..hv.events import RemoteEnd
        out = Eventfd(to_remote)
        polled = []

        def bound():
            self.poller.add(from_remote, port)
            polled.append(True)

        def closed():
            if polled:
                self.poller.remove(from_remote)
            else:
                os.close(from_remote)
            out.close()
        return RemoteEnd(remote_dom, out.poke, closed, bound)

    def connect_remote(self, remote_dom: int, remote_port: int, local_port: int):
        """EVTCHNOP_bind_interdomain to another domain: pyxend asks that domain's
        process to accept, and hands both sides an eventfd pair."""
        try:
            conn = Connection.connect(paths.api_socket(self.run_dir), timeout=10)
        except OSError:
            return -ESRCH                   # no pyxend to reach other domains
        try:
            conn.call("evtchn_connect", from_dom=self.domid, from_port=local_port,
                      to_dom=remote_dom, to_port=remote_port)
            to_remote, from_remote = conn.take_fds(2)
        except RpcError as e:
            if e.code in ("ENOENT", "ESRCH"):
                return -ESRCH               # no such domain, as Xen
            return -EINVAL                  # as Xen for a port that is not unbound
        except Exception:
            return -EINVAL
        finally:
            conn.close()
        return self.remote_end(remote_dom, local_port, to_remote, from_remote)


class DomainProcess:
    def __init__(self, run_dir, domid: int, cfg: DomainConfig, paused: bool, log: LogRing,
                 restore: str | int | None = None, stream: bool = False):
        self.run_dir = run_dir
        self.domid = domid
        self.cfg = cfg
        self.log = log
        self._cio = bytearray()
        self.link = PyxendLink(run_dir, domid)
        self.suspend_event = threading.Event()
        # console_io output goes to the hypervisor's log (`pyxen dmesg`), as in Xen
        reader = None
        self.sender = None                  # a live migration going out (migration.Sender)
        if stream:                          # a migration stream, its header read by pyxend
            from .migration import Channel, StreamReader
            reader = StreamReader(Channel(int(restore)))
        elif restore is not None:           # a file name, or a descriptor of it
            from .savefile import SaveReader
            reader = SaveReader(f"fd {restore}", restore) if isinstance(restore, int) \
                else SaveReader(restore)
        try:
            self.dom = build_domain(cfg, self.link, domid=domid, console_io=self._console_io,
                                    restore=reader)
        finally:
            if reader is not None:
                reader.close()
        self._tls = threading.local()       # the control connection a request came on
        if paused:
            self.dom.pause()
        self.sock_path = paths.domain_socket(run_dir, domid)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.listener.bind(str(self.sock_path))
        os.chmod(self.sock_path, 0o600)
        self.listener.listen(4)
        threading.Thread(target=self._serve, daemon=True, name="control").start()

    def _console_io(self, data: bytes) -> None:
        self._cio += data
        while b"\n" in self._cio:
            line, _, rest = self._cio.partition(b"\n")
            self._cio = bytearray(rest)
            logging.getLogger("guest").info("%s", line.decode(errors="replace").rstrip("\r"))

    # --- control socket -------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(Connection(s),), daemon=True).start()

    def _client(self, conn: Connection) -> None:
        self._tls.conn = conn
        self._tls.saver = False             # this connection asked for a suspend
        try:
            while True:
                req = conn.recv()
                if req is None:
                    return
                rid = req.get("id")
                try:
                    result, fds = self.handle(req.get("method"), req.get("params") or {})
                except Exception as e:      # report, never die
                    conn.send(error_reply(rid, "EFAIL", str(e)))
                    continue
                finally:
                    conn.close_fds()        # passed with the request and not taken
                conn.send({"id": rid, "result": result}, fds=fds)
        except OSError:
            return
        finally:
            conn.close()
            if self._tls.saver:
                self._migration_abort()
                self._saver_gone()

    def _saver_gone(self) -> None:
        """The connection that suspended the domain for a save closed (pyxend
        finishes a save by resuming or destroying the domain on it): if the
        domain is still suspended, its saver died midway, and the guest
        carries on (resumed as after a failed save) instead of staying
        paused for good."""
        dom = self.dom
        dom.on_suspend = None
        if dom.suspended is not None and not dom.stopped:
            logging.warning("the save of this domain was abandoned: resuming it")
            dom.resume_suspended(cancelled=True)
            dom.unpause()

    def _migration_abort(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.abort()
            os.close(sender.ch.rfd)

    def _take_fds(self, n: int) -> list[int]:
        return self._tls.conn.take_fds(n)

    def handle(self, method: str, p: dict):
        dom = self.dom
        if method == "hello":
            # a new pyxend: the writable grant maps of the one before died
            # with it, and their references with them
            dropped = dom.mm.frefs.drop_writers()
            if dropped:
                logging.info("pyxend reconnected: dropped dom0's writable references "
                             "on %d frames", dropped)
            fds = [dom.ram.fd, dom.heap.mem.fd] + self.link.new_bridges()
            lay = dom.layout
            return ({"domid": dom.domid, "name": dom.name, "uuid": str(dom.uuid),
                     "pid": os.getpid(), "nr_pages": dom.nr_pages,
                     "ram_size": dom.ram.size, "heap_size": dom.heap.mem.size,
                     "store_pfn": lay.store_pfn, "console_pfn": lay.console_pfn,
                     "store_port": dom.store_port, "console_port": dom.console_port,
                     "paused": dom.paused}, fds)
        if method == "info":
            info = dom.info()
            for row, v in zip(info["vcpus"], dom.vcpus):
                row["cpu"] = last_cpu(v.native_tid) if v.native_tid else 0
            info["present_kb"] = dom.nr_present * 4      # what it holds now (balloon)
            return info, ()
        if method == "pause":
            dom.pause()
            return None, ()
        if method == "unpause":
            dom.unpause()
            return None, ()
        if method == "destroy":
            dom.destroy()
            return None, ()
        if method == "trigger":             # libxl_send_trigger on a PV domain
            # s3resume is libxl's, and refused for a PV domain (ERROR_INVAL)
            rc = -EINVAL if p["kind"] == "s3resume" else dom.send_trigger(p["kind"],
                                                                          int(p["vcpu"]))
            return {"errno": -rc, "domid": dom.domid}, ()
        if method == "sched":
            dom.sched.set_params(weight=p.get("weight"), cap=p.get("cap"),
                                 external=p.get("external"))
            return {"weight": dom.sched.weight, "cap": dom.sched.cap}, ()
        if method == "sched_pool":          # its cpupool's CPUs (toolstack/cpupools.py)
            dom.sched.set_pool(p["cpus"], moved=bool(p.get("moved")))
            return None, ()
        if method == "vcpu_pin":
            return dom.sched.pin(dom.vcpus[int(p["vcpu"])], p["cpus"]), ()
        if method == "dmesg":
            lines = list(self.log.lines)
            if p.get("clear"):          # xl dmesg -c
                for _ in lines:
                    self.log.lines.popleft()
            return lines, ()
        if method == "evtchn_accept":
            from_remote, to_remote = self._take_fds(2)
            port, rdom = int(p["port"]), int(p["remote_dom"])
            end = self.link.remote_end(rdom, port, to_remote, from_remote)
            if not dom.events.accept_remote(port, rdom, int(p["remote_port"]), end.notify,
                                            end.closed, end.bound):
                end.release()
                raise RuntimeError(f"port {port} is not unbound for domain {rdom}")
            return None, ()
        if method == "evtchn_detach":
            dom.events.detach_remote(int(p["port"]))
            return None, ()
        if method == "grant_frames":
            gt = dom.grants
            with gt.lock:
                return {"version": gt.version, "frames": list(gt.frames),
                        "status_frames": list(gt.status_frames),
                        "frame_refs": dom.heap.frame_refs_off}, ()
        if method == "suspend_arm":
            # from now on the guest's SHUTDOWN_suspend pauses it for a save
            self._tls.saver = True
            self.suspend_event.clear()
            dom.on_suspend = self.suspend_event.set
            return {"suspend_cancel": dom.suspend_cancel}, ()
        if method == "suspend_disarm":
            dom.on_suspend = None
            return None, ()
        if method == "suspend_wait":
            ok = self.suspend_event.wait(float(p.get("timeout", 60)))
            if not ok:
                dom.on_suspend = None
                return {"suspended": False}, ()
            dom.on_suspend = None
            if not dom.wait_parked(10.0):
                raise RuntimeError("the vCPUs did not stop after the guest suspended")
            return {"suspended": True, "suspend_cancel": dom.suspend_cancel}, ()
        if method == "save":
            (fd,) = self._take_fds(1) or (None,)
            if fd is None:
                raise RuntimeError("save: no file descriptor came with the request")
            return self._save(fd, p.get("config"), p.get("extra")), ()
        if method == "migrate_begin":
            # live migration (migration.py): pre-copy rounds to the descriptor
            # while the guest runs; this connection is its suspender's
            from .migration import Channel, Sender
            (fd,) = self._take_fds(1) or (None,)
            if fd is None:
                raise RuntimeError("migrate: no connection came with the request")
            self._migration_abort()
            self._tls.saver = True
            self.sender = Sender(dom, Channel(fd), p.get("config") or self.cfg.to_dict(),
                                 p.get("extra"), p.get("progress"), bool(p.get("debug")))
            try:
                return self.sender.precopy(bool(p.get("live", True))), ()
            except BaseException:
                self._migration_abort()
                raise
        if method == "migrate_final":
            if self.sender is None:
                raise RuntimeError("migrate: no migration under way")
            try:
                return self.sender.final(), ()
            finally:
                self._migration_abort()
        if method == "migrate_abort":
            self._migration_abort()
            return None, ()
        if method == "resume":
            dom.resume_suspended(bool(p.get("cancelled")))
            return None, ()
        if method == "set_maxmem":
            dom.max_pages = int(p["kb"]) // 4
            return None, ()
        raise RuntimeError(f"unknown method {method!r}")

    def _save(self, path: str | int, config: dict | None, extra: dict | None = None) -> dict:
        from .savefile import write_domain
        return write_domain(self.dom, path, config or self.cfg.to_dict(), extra=extra)

    def run(self) -> int:
        def on_term(signum, frame):
            self.dom.destroy()
        signal.signal(signal.SIGTERM, on_term)
        try:
            result = self.dom.run()
        finally:
            self.listener.close()
            try:
                os.unlink(self.sock_path)
            except FileNotFoundError:
                pass
        rec = {"reason": result.reason, "code": result.code, "message": result.message}
        tmp = paths.domain_result(self.run_dir, self.domid).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(paths.domain_result(self.run_dir, self.domid))
        return EXIT_STATUS.get(result.reason, 1)


LOG_LIMIT = 8 * 1024 * 1024


def last_cpu(tid: int) -> int:
    """The host CPU a thread of this process last ran on (field 39 of its stat)."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            text = f.read()
    except OSError:
        return 0
    return int(text[text.rindex(")") + 2:].split()[39 - 3])


def log_handler() -> logging.Handler:
    """Where this process logs: stderr, which pyxend points at
    log/domain-N.log. When that is a regular file it is written through a
    handler that caps it at LOG_LIMIT (renamed to .1, as the console logs):
    a guest that makes pyxen log (console_io is rate-limited, but not every
    message a guest can provoke is) cannot fill the disk."""
    try:
        path = os.readlink("/proc/self/fd/2")
        if os.path.isfile(path) and path.startswith("/"):
            return logging.handlers.RotatingFileHandler(path, maxBytes=LOG_LIMIT, backupCount=1)
    except OSError:
        pass
    return logging.StreamHandler(sys.stderr)


def config_from_json(text: str) -> DomainConfig:
    return DomainConfig.from_dict(json.loads(text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyxen-domain", description="one pyxen domain process")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--domid", type=int, required=True)
    ap.add_argument("--config", required=True, help="the domain's validated config (JSON)")
    ap.add_argument("--paused", action="store_true")
    ap.add_argument("--restore", metavar="FILE", help="make the domain from a save file")
    ap.add_argument("--restore-fd", metavar="FD", type=int,
                    help="the same from a descriptor of the save file (pyxend's way)")
    ap.add_argument("--stream", action="store_true",
                    help="--restore-fd is a live migration's stream after its header")
    args = ap.parse_args(argv)
    from pathlib import Path
    run_dir = Path(args.run_dir)
    ring = LogRing()
    ring.setFormatter(logging.Formatter("(d%(domid)s) %(levelname)s %(message)s"
                                        .replace("%(domid)s", str(args.domid))))
    logging.basicConfig(level=logging.INFO, format=f"d{args.domid} %(levelname)s %(message)s",
                        handlers=[log_handler()])
    logging.getLogger().addHandler(ring)
    cfg = config_from_json(Path(args.config).read_text())
    try:
        restore = args.restore_fd if args.restore_fd is not None else args.restore
        proc = DomainProcess(run_dir, args.domid, cfg, args.paused, ring, restore=restore,
                             stream=args.stream)
    except Exception as e:
        logging.error("cannot build domain %s: %s", cfg.name, e)
        rec = {"reason": "failed", "code": None, "message": str(e)}
        paths.domain_result(run_dir, args.domid).write_text(json.dumps(rec))
        return 65
    return proc.run()


if __name__ == "__main__":
    sys.exit(main())
