"""The domain process of an HVM domain: QEMU's supervisor.

pyxend runs every domain as one process serving ``domains/<domid>.sock``
(toolstack/domproc.py for PV). For ``type = "hvm"`` it starts this one
instead, which speaks the same control protocol (hello, info, pause,
unpause, destroy, dmesg, shutdown) and runs the domain as one QEMU process
(toolstack/hvm.py builds its argv), controlled over QMP:

* pause / unpause: QMP ``stop`` / ``cont`` (QEMU starts with -S, and pyxend
  unpauses the domain once its XenStore nodes and console exist, as a PV
  domain's);
* shutdown / reboot: ``system_powerdown`` (the ACPI power button) and
  ``system_reset``, what xl's -F falls back to for an HVM guest without PV
  drivers;
* destroy: ``quit`` (SIGKILL if QEMU does not go);
* save: QEMU, stopped, writes its migration stream (QMP ``migrate`` to a
  pipe handed over with ``getfd``) into pyxen's save file
  (toolstack/hvmsave.py); restore (``--restore-fd``) starts QEMU with
  ``-incoming defer`` and feeds the file's stream back
  (``migrate-incoming``) before the control socket is served; migrate
  (``migrate_send``) sends QEMU's live migration over pyxen's migration
  connection, and ``--restore-fd N --stream`` takes it in the same way;
* the guest's power-off, reset and panic end QEMU (``-action``); the QMP
  SHUTDOWN event's reason becomes the domain's (poweroff, reboot, crash) in
  ``domains/<domid>.result``, and pyxend applies on_poweroff / on_reboot /
  on_crash as for a PV domain.

The console: pyxend's console backend (dom0/console.py: the log under
``log/guest-NAME.log``, ``pyxen console``, ``create -c``) reads a Xen
console ring. This process hands pyxend a console page of its own with the
same eventfd pair a PV domain process does, and copies QEMU's "pty" serial
port (a Unix socket chardev) into the ring's output half and the ring's
input half into the serial port - the part of the guest a PV console ring
would be. The XenStore page it hands over stays idle (the guest has no PV
drivers).
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from . import hvm, hvmsave, paths
from .domconfig import DomainConfig
from .qmp import QmpClient, QmpError
from .rpc import Connection, error_reply, eventfd_poke
from ..hv.abi import XenconsInterface as _Ring
from ..dom0.backends import tap as taplib

PAGE = 4096
CONSOLE_PFN, STORE_PFN = 0, 1
IN_OFF, OUT_OFF = _Ring.in_.offset, _Ring.out.offset
IN_SIZE, OUT_SIZE = _Ring.in_.size, _Ring.out.size
IDX_OFF = _Ring.in_cons.offset            # in_cons, in_prod, out_cons, out_prod
PENDING_LIMIT = 1 << 20                   # serial output held back while the ring is full

#: QMP SHUTDOWN reasons (qapi/run-state.json ShutdownCause) -> the domain's
SHUTDOWN_REASONS = {"guest-shutdown": "poweroff", "guest-reset": "reboot",
                    "guest-panic": "crash", "host-qmp-quit": "destroyed",
                    "host-qmp-system-reset": "reboot", "host-signal": "destroyed",
                    "host-ui": "poweroff", "subsystem-reset": "reboot"}


class ConsoleBridge:
    """QEMU's serial socket <-> a xencons_interface page pyxend reads."""

    def __init__(self, page: memoryview):
        self.page = page
        self.sock: socket.socket | None = None
        self.pending = bytearray()            # serial output waiting for ring space
        self.notify_out = -1                  # eventfd pyxend reads (guest -> dom0)
        self.wake_in = -1                     # eventfd pyxend writes (dom0 -> guest)
        self._wake_r, self._wake_w = os.pipe()
        self.lock = threading.Lock()

    def set_eventfds(self, out_fd: int, in_fd: int) -> None:
        with self.lock:
            self.notify_out, self.wake_in = out_fd, in_fd
        os.write(self._wake_w, b"x")

    def _idx(self):
        return struct.unpack_from("<IIII", self.page, IDX_OFF)

    def _flush(self) -> None:
        """Serial output into the ring, as far as it has room."""
        if not self.pending:
            return
        _, _, out_cons, out_prod = self._idx()
        room = OUT_SIZE - ((out_prod - out_cons) & 0xFFFFFFFF)
        n = min(room, len(self.pending))
        if n <= 0:
            return
        for i in range(n):
            self.page[OUT_OFF + (out_prod + i) % OUT_SIZE] = self.pending[i]
        del self.pending[:n]
        struct.pack_into("<I", self.page, IDX_OFF + 12, (out_prod + n) & 0xFFFFFFFF)
        eventfd_poke(self.notify_out)

    def _input(self) -> None:
        """Typed input from the ring to the serial port."""
        in_cons, in_prod, _, _ = self._idx()
        n = (in_prod - in_cons) & 0xFFFFFFFF
        if n == 0 or self.sock is None:
            return
        data = bytes(self.page[IN_OFF + (in_cons + i) % IN_SIZE] for i in range(n))
        try:
            self.sock.sendall(data)
        except OSError:
            return
        struct.pack_into("<I", self.page, IDX_OFF, in_prod)
        eventfd_poke(self.notify_out)

    def run(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        while True:
            with self.lock:
                wake_in = self.wake_in
            rlist = [self._wake_r] + ([wake_in] if wake_in >= 0 else [])
            if len(self.pending) < PENDING_LIMIT:
                rlist.append(sock)
            r, _, _ = select.select(rlist, [], [], 1.0)
            if sock in r:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    return                    # QEMU closed the port (it exits)
                if data:
                    self.pending += data
            if self._wake_r in r:
                os.read(self._wake_r, 64)
            if wake_in in r:
                try:
                    os.eventfd_read(wake_in)
                except OSError:
                    pass
            with self.lock:
                self._flush()
                self._input()


class HvmDomain:
    """One HVM domain: its QEMU, QMP connection and console bridge."""

    def __init__(self, run_dir: Path, domid: int, cfg: DomainConfig):
        self.run_dir, self.domid, self.cfg = run_dir, domid, cfg
        # decided when the config was loaded (hvm_settings), so list -l shows it
        self.accel = cfg.hvm.get("accel") or hvm.detect_accel()[0]
        self.lines: deque[str] = deque(maxlen=500)      # dmesg
        self.ram = os.memfd_create(f"pyxen-hvm-{domid}", os.MFD_CLOEXEC)
        os.ftruncate(self.ram, 2 * PAGE)
        self.heap = os.memfd_create(f"pyxen-hvm-{domid}-heap", os.MFD_CLOEXEC)
        os.ftruncate(self.heap, PAGE)
        import mmap
        self.mm = mmap.mmap(self.ram, 2 * PAGE)
        self.bridge = ConsoleBridge(memoryview(self.mm)[CONSOLE_PFN * PAGE:(CONSOLE_PFN + 1) * PAGE])
        ddir = paths.domains_dir(run_dir)
        self.qmp_path = str(ddir / f"{domid}.qmp")
        self.serial_path = str(ddir / f"{domid}.serial") if "pty" in cfg.hvm.get("serial", ()) \
            else None
        self.status = "paused"
        self.reason: str | None = None
        self.message = ""
        self.started = time.monotonic()
        self.saving = False
        self.qemu: subprocess.Popen | None = None
        self.qmp: QmpClient | None = None
        self.vcpu_tids: list[int] = []
        self.vnc: dict | None = None
        self.eventfds: list[int] = []
        self.sched = {"weight": 256, "cap": 0}
        self.media = {d.vdev: d.target for d in map(hvm.parse_disk_spec, cfg.hvm.get("disk") or ())
                      if d.devtype == "cdrom"}            # cdrom drive -> its medium

    def say(self, msg: str) -> None:
        logging.info("%s", msg)
        self.lines.append(f"(d{self.domid}) {msg}")

    # --- start -----------------------------------------------------------------------
    def start(self, incoming: bool = False) -> None:
        """incoming: QEMU waits for a migration stream (restore)."""
        for p in (self.qmp_path, self.serial_path):
            if p:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        taps = self._make_taps()
        argv = hvm.qemu_argv(self.cfg, self.domid, qmp=self.qmp_path,
                             serial_socket=self.serial_path, tap_fds=taps)
        argv[argv.index("-accel") + 1] = self.accel
        if incoming:
            argv += ["-incoming", "defer"]
        self.say(f"device model: {' '.join(argv)}")
        self.say(f"accelerator: {self.accel}")
        errlog = paths.log_dir(self.run_dir) / f"qemu-dm-{self.cfg.name}.log"
        with open(paths.safe_file(errlog.parent, errlog.name), "ab") as f:
            try:
                self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                             close_fds=True, pass_fds=tuple(taps.values()),
                                             preexec_fn=_die_with_parent)
            finally:
                for fd in taps.values():      # QEMU has them: the TAP devices go with it
                    os.close(fd)
        try:
            self.qmp = self._qmp_connect()
            if self.serial_path:
                s = QmpClient._connect(self.serial_path, 10.0)
                threading.Thread(target=self._serial, args=(s,), daemon=True,
                                 name="serial").start()
            if self.cfg.hvm.get("vnc") and self.cfg.hvm.get("vncpasswd"):
                self.qmp.command("change-vnc-password", password=self.cfg.hvm["vncpasswd"])
            self.vcpu_tids = [c["thread-id"] for c in self.qmp.command("query-cpus-fast")]
            if self.cfg.hvm.get("vnc"):
                v = self.qmp.command("query-vnc")
                self.vnc = {"host": v.get("host"), "port": v.get("service")}
                self.say(f"VNC on {v.get('host')}:{v.get('service')}")
        except BaseException:
            self.qemu.kill()
            self.qemu.wait()
            raise

    def _qmp_connect(self) -> QmpClient:
        deadline = time.monotonic() + 20
        while True:
            if self.qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited with status {self.qemu.returncode} "
                                   f"(see log/qemu-dm-{self.cfg.name}.log)")
            try:
                return QmpClient(self.qmp_path, on_event=self._event, timeout=0.5)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _serial(self, s: socket.socket) -> None:
        try:
            self.bridge.run(s)
        finally:
            s.close()

    def _make_taps(self) -> dict[int, int]:
        """Each vif's TAP device vif<domid>.<devid>-emu (libxl's name), in the
        spec's network namespace (netns=) if it names one, on its bridge:
        devid -> a descriptor of it for QEMU."""
        taps: dict[int, int] = {}
        try:
            for i, text in enumerate(self.cfg.hvm.get("vif") or ()):
                v = hvm.parse_vif_spec(text, i, self.cfg.name)
                name = hvm.tap_name(self.domid, v.devid)
                taps[v.devid] = taplib.create_in_netns(name, v.netns) if v.netns \
                    else taplib.open_queue(name)
                taplib.plug(name, v.bridge, v.mtu, v.netns)
                self.say(f"vif {v.devid}: {name} on bridge {v.bridge}"
                         f"{f' (netns {v.netns})' if v.netns else ''}, "
                         f"{v.model or hvm.DEFAULT_NIC_MODEL} {v.mac}")
        except BaseException:
            for fd in taps.values():
                os.close(fd)
            raise
        return taps

    def _event(self, name: str, data: dict) -> None:
        if name == "SHUTDOWN":
            cause = data.get("reason", "")
            if self.reason is None:
                self.reason = SHUTDOWN_REASONS.get(cause, "poweroff" if data.get("guest")
                                                   else "destroyed")
                self.message = f"QEMU: {cause}"
            self.say(f"guest {cause}")
        elif name == "STOP":
            self.status = "paused"
        elif name == "RESUME":
            self.status = "running"
        elif name == "GUEST_PANICKED":
            self.reason = "crash"
            self.message = f"guest panic: {data.get('info', data.get('action'))}"
            self.say(self.message)

    # --- control ---------------------------------------------------------------------
    def hello(self) -> tuple[dict, list[int]]:
        new = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(4)]
        st_out, st_in, con_out, con_in = new
        old, self.eventfds = self.eventfds, new
        self.bridge.set_eventfds(con_out, con_in)
        for fd in old:
            os.close(fd)
        return ({"domid": self.domid, "name": self.cfg.name, "uuid": self.cfg.uuid,
                 "pid": os.getpid(), "nr_pages": 2, "ram_size": 2 * PAGE, "heap_size": PAGE,
                 "store_pfn": STORE_PFN, "console_pfn": CONSOLE_PFN, "store_port": 0,
                 "console_port": 0, "paused": self.status == "paused"},
                [self.ram, self.heap, st_out, st_in, con_out, con_in])

    def trigger(self, kind: str, vcpu: int) -> int:
        """0 or the errno: an NMI (QMP inject-nmi, which QEMU sends to every
        vCPU), the ACPI power button, a reset, a wake-up from S3. QEMU's
        ACPI has no sleep button, and Xen has no INIT trigger (-ENOSYS)."""
        if not 0 <= vcpu < len(self.vcpu_tids):
            return errno.ESRCH
        cmd = {"nmi": "inject-nmi", "power": "system_powerdown", "reset": "system_reset",
               "s3resume": "system_wakeup"}.get(kind)
        if cmd is None:
            return errno.ENOSYS
        try:
            self.qmp.command(cmd)
        except QmpError as e:
            self.say(f"trigger {kind}: {e}")
            return errno.EINVAL
        self.say(f"trigger {kind}")
        return 0

    def info(self) -> dict:
        vcpus = []
        for i, tid in enumerate(self.vcpu_tids):
            st = _task_stat(self.qemu.pid, tid)
            vcpus.append({"id": i, "online": True,
                          "state": "running" if st and st[0] == "R" else "blocked",
                          "cpu_time": st[1] if st else 0.0, "cpu": st[2] if st else 0,
                          "affinity": sorted(os.sched_getaffinity(tid)) if st else []})
        paused = self.status == "paused"
        running = not paused and any(v["state"] == "running" for v in vcpus)
        whole = _task_stat(self.qemu.pid, self.qemu.pid, whole=True)
        return {"name": self.cfg.name, "domid": self.domid, "uuid": self.cfg.uuid,
                "memory_kb": self.cfg.memory * 1024, "max_memory_kb": self.cfg.memory * 1024,
                "vcpus": vcpus, "online_vcpus": len(vcpus), "running": running,
                "blocked": not running and not paused, "paused": paused,
                "cpu_time": whole[1] if whole else 0.0, "suspended": self.saving,
                "uptime": time.monotonic() - self.started, **self.sched,
                "present_kb": self.cfg.memory * 1024,
                "device_model": {"accel": self.accel, "pid": self.qemu.pid,
                                 "qmp": self.qmp_path, "vnc": self.vnc,
                                 "cdrom": dict(self.media)}}

    def handle(self, method: str, p: dict):
        if method == "hello":
            return self.hello()
        if method == "info":
            return self.info(), ()
        if method == "pause":
            self.qmp.command("stop")
            self.status = "paused"
            return None, ()
        if method == "unpause":
            self.qmp.command("cont")
            self.status = "running"
            return None, ()
        if method == "shutdown":            # pyxend: xl shutdown / reboot of an HVM guest
            if p.get("reboot"):
                self.say("reboot: system reset")
                self.qmp.command("system_reset")
            else:
                self.say("shutdown: ACPI power button")
                self.qmp.command("system_powerdown")
            return None, ()
        if method == "destroy":
            self.destroy()
            return None, ()
        if method == "monitor":             # xl qemu-monitor-command
            return self.qmp.command("human-monitor-command", **{"command-line": p["command"]}), ()
        if method == "trigger":             # libxl_send_trigger on an HVM domain: QMP
            return {"errno": self.trigger(p["kind"], int(p["vcpu"])), "domid": self.domid}, ()
        if method == "sched":
            # pyxend put this process in the domain's cgroups (weight, cap, pool):
            # QEMU, which runs the guest, goes where its supervisor is
            if p.get("external"):
                _join_cgroups_of(os.getpid(), self.qemu.pid)
            for k in ("weight", "cap"):
                if p.get(k) is not None:
                    self.sched[k] = int(p[k])
            return dict(self.sched), ()
        if method == "sched_pool":         # a cpupool's CPUs: every QEMU thread on them
            for tid in os.listdir(f"/proc/{self.qemu.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), p["cpus"])
                except OSError:
                    pass
            return None, ()
        if method == "vcpu_pin":
            tid = self.vcpu_tids[int(p["vcpu"])]
            os.sched_setaffinity(tid, p["cpus"])
            return sorted(os.sched_getaffinity(tid)), ()
        if method == "cd_insert":          # xl cd-insert: a new medium in a cdrom drive
            d = self._cdrom(p["vdev"])
            new = hvm.parse_disk_spec(f"vdev={d.vdev}, access=ro, devtype=cdrom, "
                                      f"target={p['target']}")
            if new.target is None:
                raise RuntimeError("cd-insert: no target")
            if not os.path.isfile(new.target):
                raise RuntimeError(f"{new.target}: no such file")
            fmt = {"qcow": "qcow", "vhd": "vpc"}.get(new.format, new.format)
            self.qmp.command("blockdev-change-medium", **{
                "device": hvm.drive_id(d.vdev), "filename": new.target, "format": fmt,
                "read-only-mode": "read-only"})
            self.media[d.vdev] = new.target
            self.say(f"cdrom {d.vdev}: {new.target} inserted")
            return None, ()
        if method == "cd_eject":           # xl cd-eject
            d = self._cdrom(p["vdev"])
            self.qmp.command("eject", device=hvm.drive_id(d.vdev), force=True)
            self.media[d.vdev] = None
            self.say(f"cdrom {d.vdev}: ejected")
            return None, ()
        if method == "save":               # pyxen save: QEMU's stream into the file
            fds = p.get("_fds") or ()
            return self.save(fds[0], p.get("config") or self.cfg.to_dict(), p.get("extra"),
                             bool(p.get("keep")), bool(p.get("paused"))), ()
        if method == "migrate_send":       # pyxen migrate: QEMU's stream to the target
            fds = p.get("_fds") or ()
            return self.migrate_send(fds[0], p.get("config") or self.cfg.to_dict(),
                                     p.get("extra"), bool(p.get("live", True))), ()
        if method == "grant_frames":       # no PV drivers, so no grant table in use
            return {"version": 1, "frames": [], "status_frames": [], "frame_refs": 0}, ()
        if method == "dmesg":
            lines = list(self.lines)
            if p.get("clear"):
                self.lines.clear()
            return lines, ()
        raise RuntimeError(f"{method}: not supported for an HVM domain")

    def _cdrom(self, vdev: str):
        d = hvm.find_cdrom(self.cfg.hvm, vdev)
        if d is None:
            raise RuntimeError(f"Virtual device {vdev} is not a cdrom drive of this domain "
                               "(an HVM domain's disk entry with devtype=cdrom)")
        return d

    def save(self, out_fd: int, config: dict, extra: dict | None, keep: bool,
             paused: bool) -> dict:
        """The domain, stopped, to the save file out_fd (taken): QEMU's
        migration stream (disks flushed, as QEMU's migration does). keep
        (save -c / -p): QEMU goes on afterwards (QMP cont) unless paused
        or it was paused before; otherwise it stays stopped for destroy.
        On failure QEMU goes on as it was."""
        was_paused = self.status == "paused"
        self.qmp.command("stop")
        self.status = "paused"
        self.saving = True
        try:
            info = hvmsave.header(self.cfg, config, extra, self.qmp.version)
            out = hvmsave.save(self.qmp, out_fd, info)
        except BaseException:
            if not was_paused:
                self.qmp.command("cont")
            raise
        finally:
            self.saving = False
        self.say(f"saved: QEMU's stream, {out['memory_bytes']} bytes")
        if keep and not paused and not was_paused:
            self.qmp.command("cont")
            self.status = "running"
        return out

    def migrate_send(self, fd: int, config: dict, extra: dict | None, live: bool) -> dict:
        """QEMU's migration over the connection fd (taken): live (QEMU stops
        the guest for its last part) unless live is false (stopped first).
        QEMU ends stopped; pyxend destroys the domain once the target runs
        it, or unpauses it when the migration fails (here: QEMU goes on)."""
        from .migration import Channel
        was_paused = self.status == "paused"
        if not live:
            self.qmp.command("stop")
        t0 = time.monotonic()
        try:
            info = hvmsave.header(self.cfg, config, extra, self.qmp.version)
            n = hvmsave.send_stream(self.qmp, Channel(fd, timeout=60.0), info)
        except BaseException:
            if not was_paused:
                try:
                    self.qmp.command("cont")
                except QmpError:
                    pass
            raise
        finally:
            os.close(fd)
        st = self.qmp.command("query-migrate") or {}
        self.status = "paused"
        self.say(f"migrated: QEMU's stream, {n} bytes")
        ram = st.get("ram") or {}
        return {"sent": n, "total_s": round(time.monotonic() - t0, 3),
                "pages": ram.get("normal", 0), "qemu_rounds": ram.get("dirty-sync-count"),
                "qemu_downtime_ms": st.get("downtime"), "was_paused": was_paused}

    def restore_stream(self, fd: int) -> None:
        from .migration import Channel
        n = hvmsave.receive_stream(self.qmp, Channel(fd, timeout=60.0))
        os.close(fd)
        self.say(f"received QEMU's stream ({n} bytes)")

    def restore(self, fd: int, path: str) -> None:
        out = hvmsave.restore(self.qmp, path, fd)
        self.say(f"restored from QEMU's stream ({out['bytes']} bytes)")

    def destroy(self) -> None:
        if self.reason is None:
            self.reason, self.message = "destroyed", "destroyed"
        if self.qemu is None or self.qemu.poll() is not None:
            return
        try:
            self.qmp.command("quit", timeout=3)
        except (QmpError, AttributeError):
            pass
        try:
            self.qemu.wait(3)
        except subprocess.TimeoutExpired:
            self.qemu.kill()

    def wait(self) -> dict:
        rc = self.qemu.wait()
        if self.reason is None:
            self.reason = "crash"
            self.message = f"QEMU exited with status {rc} (see log/qemu-dm-{self.cfg.name}.log)"
        return {"reason": self.reason, "code": rc, "message": self.message}


def _join_cgroups_of(src: int, pid: int) -> None:
    """Move process pid into every cgroup process src is in (each mounted
    hierarchy, v1 or v2)."""
    mine = {}
    with open(f"/proc/{src}/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            mine[(hid, ctrls)] = path
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for (hid, ctrls), path in mine.items():
        for m in mounts:
            sep = m.index("-")
            fstype, opts = m[sep + 1], m[sep + 3].split(",")
            if hid == "0" and fstype == "cgroup2" or \
                    fstype == "cgroup" and ctrls and set(ctrls.split(",")) <= set(opts):
                procs = os.path.join(m[4], path.lstrip("/"), "cgroup.procs")
                try:
                    with open(procs, "w") as out:
                        out.write(str(pid))
                except OSError:
                    pass
                break


def _die_with_parent() -> None:
    """In QEMU's child before exec: SIGKILL when this process ends (a killed
    supervisor leaves no QEMU behind)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _task_stat(pid: int, tid: int, whole: bool = False):
    """(state letter, CPU seconds, last CPU) of a thread of QEMU, or its process."""
    path = f"/proc/{pid}/stat" if whole else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], (int(fields[11]) + int(fields[12])) / ticks, int(fields[36])


class Server:
    """domains/<domid>.sock: the control protocol pyxend speaks to a domain process."""

    def __init__(self, dom: HvmDomain):
        self.dom = dom
        self.path = paths.domain_socket(dom.run_dir, dom.domid)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.listener.listen(4)
        threading.Thread(target=self._serve, daemon=True, name="control").start()

    def _serve(self) -> None:
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(Connection(s),), daemon=True).start()

    def _client(self, conn: Connection) -> None:
        try:
            while True:
                req = conn.recv()
                if req is None:
                    return
                rid = req.get("id")
                params = req.get("params") or {}
                try:
                    if req.get("method") in ("save", "migrate_send"):   # a descriptor with it
                        params["_fds"] = conn.take_fds(1)
                    result, fds = self.dom.handle(req.get("method"), params)
                except Exception as e:
                    conn.send(error_reply(rid, "EFAIL", str(e)))
                    continue
                finally:
                    conn.close_fds()
                conn.send({"id": rid, "result": result}, fds=fds)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyxen-hvm", description="one pyxen HVM domain: "
                                 "QEMU's supervisor")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--domid", type=int, required=True)
    ap.add_argument("--config", required=True, help="the domain's validated config (JSON)")
    ap.add_argument("--paused", action="store_true", help="accepted: QEMU always starts paused")
    ap.add_argument("--restore-fd", type=int, help="a save file to restore the domain from "
                    "(QEMU's migration stream in it)")
    ap.add_argument("--stream", action="store_true", help="--restore-fd is a migration "
                    "connection (its header read already), not a file")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    logging.basicConfig(level=logging.INFO, format=f"d{args.domid} %(levelname)s %(message)s")
    cfg = DomainConfig.from_dict(json.loads(Path(args.config).read_text()))
    result_path = paths.domain_result(run_dir, args.domid)
    try:
        dom = HvmDomain(run_dir, args.domid, cfg)
        dom.start(incoming=args.restore_fd is not None)
        if args.restore_fd is not None:
            try:
                if args.stream:
                    dom.restore_stream(args.restore_fd)
                else:
                    dom.restore(args.restore_fd, "the save file")
            except BaseException:
                dom.qemu.kill()
                dom.qemu.wait()
                raise
    except Exception as e:
        logging.error("cannot start HVM domain %s: %s", cfg.name, e)
        result_path.write_text(json.dumps({"reason": "failed", "code": None, "message": str(e)}))
        return 65
    server = Server(dom)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=dom.destroy).start())
    try:
        rec = dom.wait()
    finally:
        server.close()
        for p in (dom.qmp_path, dom.serial_path):
            if p:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    tmp.replace(result_path)
    return 0 if rec["reason"] in ("poweroff", "destroyed") else 1


if __name__ == "__main__":
    sys.exit(main())
