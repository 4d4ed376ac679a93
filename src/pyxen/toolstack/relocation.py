"""pyxend's side of live migration (issue 16): sending a domain over a
connection, receiving one, and xend's relocation server.

The stream (migration.py) goes from the source's domain process to the
target's; around it the two pyxends speak three lines, as xl's
migrate/migrate-receive do:

    target -> source   READY        the domain is built, paused
                       ERROR <why>  it could not be (the source carries on)
    source -> target   GO           the source is suspended for good: unpause
    target -> source   DONE         it runs: the source is destroyed

Until DONE the source domain exists: when anything fails it is resumed
(its suspend hypercall returns 1, as after a checkpoint) and nothing is
lost.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time

from . import paths
from .migration import Channel, MigrationError, read_header
from .rpc import Connection, RpcError

HANDSHAKE_TIMEOUT = 300.0       # seconds the target may take to build the domain
DEFAULT_PORT = 8002             # xend's xend-relocation-port
DEFAULT_ALLOW = r"^localhost$ ^localhost\.localdomain$"   # xend-relocation-hosts-allow

log = logging.getLogger("pyxend.relocation")


class MigrateError(Exception):
    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code                # an errno name, as pyxend's API errors


def progress_path(run_dir, domid: int) -> str:
    """Where the source's domain process keeps the migration's progress (the
    CLI's progress bar reads it)."""
    return str(paths.domains_dir(run_dir) / f"{domid}.migration")


def send(daemon, d, fd: int, config: dict, debug: bool, live: bool) -> dict:
    """Migrate domain d over fd (a socket to the target: ssh's, or a TCP
    connection to a relocation server). Returns the figures; MigrateError
    with the source running when it fails."""
    ch = Channel(fd, timeout=HANDSHAKE_TIMEOUT)
    prog = progress_path(daemon.run_dir, d.domid)
    try:
        conn = Connection.connect(paths.domain_socket(daemon.run_dir, d.domid))
    except OSError as e:
        raise MigrateError("EIO", f"domain {d.domid}: {e}") from None
    t0 = time.monotonic()
    suspended = False
    renamed = False
    name = d.name
    stage = "pre-copy"
    hvm = d.config.get("type") == "hvm"
    try:
        if hvm:
            # QEMU's own live migration (hvmsave.send_stream): it copies, then
            # stops the guest for the rest; no PV suspend protocol
            out = conn.call("migrate_send", _fds=(fd,), config=config, live=live,
                            extra={"target_kb": d.target_kb, "max_kb": d.max_kb})
            suspended = True
            t_susp = t_final = time.monotonic()
            # the guest stopped for QEMU's last part (QEMU's own downtime figure)
            t_down = t_final - (out.get("qemu_downtime_ms") or 0) / 1000 if live else t0
            # QEMU's rounds are its own: one entry, the pages it sent in all
            fin = {"rounds": [{"frames": out.get("pages", 0)}], "sent": out["sent"]}
        else:
            pre = conn.call("migrate_begin", _fds=(fd,), config=config, debug=debug, live=live,
                            progress=prog, extra={"target_kb": d.target_kb,
                                                  "max_kb": d.max_kb})
            stage = "suspend"
            t_down = time.monotonic()
            daemon._suspend(conn, d, False, "a migration")
            suspended = True
            t_susp = time.monotonic()
            stage = "stop-and-copy"
            fin = conn.call("migrate_final")
            t_final = time.monotonic()
        stage = "hand-shake"
        line = ch.readline()
        if line != "READY":
            why = line[6:] if line.startswith("ERROR ") else "the connection closed"
            raise MigrateError("EIO", f"migration target: {why}")
        # as xl: the source steps aside under another name, so that the target
        # (this very pyxend, for a migration to localhost) can take it
        daemon.api_rename(d.domid, name + "--migratedaway")
        renamed = True
        t_ready = time.monotonic()
        ch.say("GO")
        line = ch.readline()
        if line != "DONE":
            why = line[6:] if line.startswith("ERROR ") else "the connection closed"
            raise MigrateError("EIO", f"migration target failed to start the domain: {why}")
        t_done = time.monotonic()
    except Exception as e:
        msg = e.message if isinstance(e, RpcError) else str(e) or type(e).__name__
        if isinstance(e, MigrationError):       # the target may have said why it stopped
            try:
                line = ch.readline(timeout=2.0)
                if line.startswith("ERROR "):
                    msg = f"migration target: {line[6:]}"
            except (MigrationError, OSError):
                pass
        try:
            if renamed:
                daemon.api_rename(d.domid, name)
        except Exception:
            pass
        try:
            if hvm:
                if suspended:               # QEMU stopped after its migration
                    conn.call("unpause")
            else:
                conn.call("migrate_abort")
                if suspended:
                    conn.call("resume", cancelled=True)
                    conn.call("unpause")
        except (RpcError, OSError):
            pass                    # closing conn resumes it (domproc._saver_gone)
        conn.close()
        _unlink(prog)
        code = getattr(e, "code", None) if isinstance(e, MigrateError) or \
            type(e).__name__ == "ApiError" else None
        raise MigrateError(code or "EIO", f"migration of domain {d.domid} failed ({stage}): "
                           f"{msg}; the domain carries on here") from None
    if not hvm:         # an HVM domain: api_migrate destroys it (QEMU would go at once)
        try:
            conn.call("destroy")
        except (RpcError, OSError):
            pass
    conn.close()
    _unlink(prog)
    rounds = fin["rounds"]
    # downtime: from the suspend request (the guest stops its work to
    # suspend) to the target's unpause, as a ping from outside sees it
    return {"domid": d.domid, "name": d.name, "rounds": len(rounds),
            "frames": [r["frames"] for r in rounds], "sent": fin["sent"],
            "precopy_s": round(t_down - t0, 3), "downtime_s": round(t_done - t_down, 3),
            "phases_s": {"suspend": round(t_susp - t_down, 3),
                         "stop_and_copy": round(t_final - t_susp, 3),
                         "target_ready": round(t_ready - t_final, 3),
                         "target_start": round(t_done - t_ready, 3)},
            "total_s": round(time.monotonic() - t0, 3), "live": live}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def receive(daemon, rfd: int, wfd: int, paused: bool, peer: str = "") -> dict:
    """Take a domain from a migration stream on rfd (replies on wfd): build
    it paused from the stream, say READY, and on GO unpause it (unless
    paused) and say DONE. MigrateError when it fails; nothing is left."""
    from .domconfig import DomainConfig
    ch = Channel(rfd, wfd, timeout=HANDSHAKE_TIMEOUT)
    d = None
    try:
        info = read_header(ch)
        try:
            cfg = DomainConfig.from_dict(info["config"])
        except (ValueError, TypeError, KeyError) as e:
            raise MigrateError("EINVAL", f"its config: {e}") from None
        if cfg.memory * 256 != info["nr_pages"] or cfg.maxvcpus != info.get("vcpus"):
            raise MigrateError("EINVAL", f"the stream has {info['nr_pages'] // 256} MiB and "
                               f"{info.get('vcpus')} vCPUs; its config {cfg.memory} MiB and "
                               f"{cfg.maxvcpus}")
        daemon.say(f"migration: receiving domain {cfg.name}{' from ' + peer if peer else ''}")
        name = cfg.name
        cfg.name = name + "--incoming"          # as xl, until the source has stepped aside
        d = daemon.create_from_stream(cfg, rfd)
        daemon.apply_saved_memory(d, info)
        ch.say("READY")
        line = ch.readline()
        if line != "GO":
            raise MigrateError("EIO", "the sender gave up before the domain was started "
                               f"({line or 'connection closed'})")
        daemon.api_rename(d.domid, name)
        if not paused:
            daemon._call(d, "unpause")
        ch.say("DONE")
    except Exception as e:
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        if d is not None:
            try:
                daemon.api_destroy(d.domid)
            except Exception:
                pass
        try:
            ch.say(f"ERROR {msg}")
        except (MigrationError, OSError):
            pass
        code = getattr(e, "code", None) if isinstance(e, MigrateError) or \
            type(e).__name__ == "ApiError" else None
        raise MigrateError(code or "EIO", f"migration receive: {msg}") from None
    daemon.say(f"migration: domain {d.domid} ({d.name}) received and running")
    threading.Thread(target=_lock_images, args=(daemon, d), daemon=True,
                     name=f"relock-{d.domid}").start()
    return {"domid": d.domid, "name": d.name}


def _lock_images(daemon, d, timeout: float = 60.0) -> None:
    """The source lets go of the disks when it is destroyed, right after
    DONE: then the target takes their locks."""
    deadline = time.monotonic() + timeout
    held = d.devices.lock_images()
    while held and time.monotonic() < deadline:
        time.sleep(0.2)
        held = d.devices.lock_images()
    if held:
        daemon.say(f"domain {d.domid}: disks still in use elsewhere after the migration, "
                   f"left unlocked: {', '.join(held)}")


class RelocationServer:
    """xend's relocation server: a TCP listener taking migration streams
    from the peers the allow-list names (regular expressions matched
    against the peer's address and its host name; empty: everyone)."""

    def __init__(self, daemon, port: int, address: str = "", allow: str = DEFAULT_ALLOW):
        self.daemon = daemon
        self.allow = [re.compile(p) for p in allow.split()]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="relocation").start()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def allowed(self, addr: str) -> bool:
        if not self.allow:
            return True
        names = [addr]
        try:
            names.append(socket.getnameinfo((addr, 0), socket.NI_NAMEREQD)[0])
        except OSError:
            pass
        return any(p.search(n) for p in self.allow for n in names)

    def _accept(self) -> None:
        while True:
            try:
                s, peer = self.sock.accept()
            except OSError:
                return
            addr = peer[0]
            if not self.allowed(addr):
                self.daemon.say(f"relocation: refused a connection from {addr} "
                                "(not in the allow-list)")
                s.close()
                continue
            threading.Thread(target=self._serve, args=(s, addr), daemon=True,
                             name=f"relocation-{addr}").start()

    def _serve(self, s: socket.socket, addr: str) -> None:
        with s:
            try:
                receive(self.daemon, s.fileno(), s.fileno(), False, peer=addr)
            except MigrateError as e:
                self.daemon.say(f"relocation: {e}")
