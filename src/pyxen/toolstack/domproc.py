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
import os
import select
import signal
import socket
import sys
import threading

from . import paths
from .domconfig import DomainConfig
from .rpc import Connection, error_reply, eventfd_poke
from .runner import make_domain, EXIT_STATUS


class LogRing(logging.Handler):
    def __init__(self, n: int = 2000):
        super().__init__()
        self.lines = collections.deque(maxlen=n)

    def emit(self, record):
        self.lines.append(self.format(record))


class DomainProcess:
    def __init__(self, run_dir, domid: int, cfg: DomainConfig, paused: bool, log: LogRing):
        self.run_dir = run_dir
        self.domid = domid
        self.cfg = cfg
        self.log = log
        self._cio = bytearray()
        # console_io output goes to the hypervisor's log (`pyxen dmesg`), as in Xen
        self.dom = make_domain(cfg, console=self._console_io, domid=domid, attach_console=False)
        self.bridges: dict[int, tuple[int, int]] = {}    # port -> (to_dom0, to_guest) eventfds
        self.lock = threading.Lock()
        self._tls = threading.local()       # the control connection a request came on
        for port in (self.dom.store_port, self.dom.console_port):
            self.dom.events.ports[port].remote.notify = self._notifier(port)
        self.dom.connect_remote_port = self._connect_remote
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

    # --- dom0 channel bridges -----------------------------------------------------
    def _notifier(self, port: int):
        def notify():
            pair = self.bridges.get(port)
            if pair is not None:
                eventfd_poke(pair[0])
        return notify

    def _new_bridges(self) -> list[int]:
        with self.lock:
            old = self.bridges
            self.bridges = {p: (os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK),
                                os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
                            for p in (self.dom.store_port, self.dom.console_port)}
            for a, b in old.values():
                os.close(a)
                os.close(b)
            threading.Thread(target=self._pump, args=(dict(self.bridges),), daemon=True,
                             name="evtchn-bridge").start()
            fds = []
            for p in (self.dom.store_port, self.dom.console_port):
                fds += list(self.bridges[p])
            return fds

    def _pump(self, bridges) -> None:
        """Raise the guest's port whenever pyxend signals its eventfd."""
        by_fd = {b: p for p, (_a, b) in bridges.items()}
        while not self.dom.stopped and self.bridges is not None:
            try:
                r, _, _ = select.select(list(by_fd), [], [], 0.5)
            except (OSError, ValueError):
                return
            if self.bridges is not bridges and any(
                    self.bridges.get(p) != bridges[p] for p in bridges):
                return
            for fd in r:
                try:
                    os.eventfd_read(fd)
                except OSError:
                    continue
                self.dom.events.raise_port(by_fd[fd])

    # --- inter-domain channels between domain processes -----------------------------
    def _pump_port(self, port: int, fd: int, end) -> None:
        """Raise `port` whenever the other domain (or a dom0 backend) signals
        `fd`; ends when the port is no longer bound to that end."""
        def run():
            bound = False       # seen bound to `end` (binding may finish after we start)
            while not self.dom.stopped:
                try:
                    r, _, _ = select.select([fd], [], [], 0.5)
                except (OSError, ValueError):
                    return
                ch = self.dom.events.get(port)
                if ch is not None and ch.remote is end:
                    bound = True
                elif bound:
                    os.close(fd)
                    return
                if r:
                    try:
                        os.eventfd_read(fd)
                    except OSError:
                        continue
                    self.dom.events.raise_port(port)
        threading.Thread(target=run, daemon=True, name=f"evtchn-{port}").start()

    def _connect_remote(self, remote_dom: int, remote_port: int, local_port: int):
        """EVTCHNOP_bind_interdomain to another domain: pyxend asks that domain's
        process to accept, and hands both sides an eventfd pair."""
        from ..hv.events import RemoteEnd
        try:
            conn = Connection.connect(paths.api_socket(self.run_dir), timeout=10)
        except OSError:
            return -3                       # ESRCH: no pyxend to reach other domains
        try:
            conn.call("evtchn_connect", from_dom=self.domid, from_port=local_port,
                      to_dom=remote_dom, to_port=remote_port)
            to_remote, from_remote = conn.take_fds(2)
        except Exception:
            return -22                      # EINVAL, as Xen for a port that is not unbound
        finally:
            conn.close()
        end = RemoteEnd(remote_dom, lambda: eventfd_poke(to_remote))
        self._pump_port(local_port, from_remote, end)
        return end

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
                conn.send({"id": rid, "result": result}, fds=fds)
        except OSError:
            return
        finally:
            conn.close()

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
            fds = [dom.ram.fd, dom.heap.mem.fd] + self._new_bridges()
            lay = dom.layout
            return ({"domid": dom.domid, "name": dom.name, "uuid": str(dom.uuid),
                     "pid": os.getpid(), "nr_pages": dom.nr_pages,
                     "ram_size": dom.ram.size, "heap_size": dom.heap.mem.size,
                     "store_pfn": lay.store_pfn, "console_pfn": lay.console_pfn,
                     "store_port": dom.store_port, "console_port": dom.console_port,
                     "paused": dom.paused}, fds)
        if method == "info":
            return dom.info(), ()
        if method == "pause":
            dom.pause()
            return None, ()
        if method == "unpause":
            dom.unpause()
            return None, ()
        if method == "destroy":
            dom.destroy()
            return None, ()
        if method == "sched":
            dom.sched.set_params(weight=p.get("weight"), cap=p.get("cap"))
            return {"weight": dom.sched.weight, "cap": dom.sched.cap}, ()
        if method == "vcpu_pin":
            v = dom.vcpus[int(p["vcpu"])]
            if not v.native_tid:
                raise RuntimeError(f"vcpu {v.id} has not started")
            os.sched_setaffinity(v.native_tid, set(p["cpus"]))
            return sorted(os.sched_getaffinity(v.native_tid)), ()
        if method == "dmesg":
            return list(self.log.lines), ()
        if method == "evtchn_accept":
            from_remote, to_remote = self._take_fds(2)
            port, rdom = int(p["port"]), int(p["remote_dom"])
            if not dom.events.accept_remote(port, rdom, int(p["remote_port"]),
                                            lambda: eventfd_poke(to_remote)):
                os.close(from_remote)
                os.close(to_remote)
                raise RuntimeError(f"port {port} is not unbound for domain {rdom}")
            self._pump_port(port, from_remote, dom.events.get(port).remote)
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
        if method == "set_maxmem":
            dom.max_pages = int(p["kb"]) // 4
            return None, ()
        raise RuntimeError(f"unknown method {method!r}")

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


def config_from_json(text: str) -> DomainConfig:
    return DomainConfig.from_dict(json.loads(text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyxen-domain", description="one pyxen domain process")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--domid", type=int, required=True)
    ap.add_argument("--config", required=True, help="the domain's validated config (JSON)")
    ap.add_argument("--paused", action="store_true")
    args = ap.parse_args(argv)
    from pathlib import Path
    run_dir = Path(args.run_dir)
    ring = LogRing()
    ring.setFormatter(logging.Formatter("(d%(domid)s) %(levelname)s %(message)s"
                                        .replace("%(domid)s", str(args.domid))))
    logging.basicConfig(level=logging.INFO, format=f"d{args.domid} %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger().addHandler(ring)
    cfg = config_from_json(Path(args.config).read_text())
    try:
        proc = DomainProcess(run_dir, args.domid, cfg, args.paused, ring)
    except Exception as e:
        logging.error("cannot build domain %s: %s", cfg.name, e)
        rec = {"reason": "failed", "code": None, "message": str(e)}
        paths.domain_result(run_dir, args.domid).write_text(json.dumps(rec))
        return 65
    return proc.run()


if __name__ == "__main__":
    sys.exit(main())
