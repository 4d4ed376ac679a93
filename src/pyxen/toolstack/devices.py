"""A domain's PV devices, as libxl manages them: the toolstack writes both
XenStore directories of a device (backend and frontend, with their
permissions), starts the backend, and on detach asks both sides to close,
waits for the backend to reach Closed and removes the directories.

`RemoteGuest` gives the backends (pyxen.dom0.backends) a domain that runs in
its own process: its memory through the memfds it shares, its grant table
frames and event channels through its control socket.

The kinds of device (vbd, vif) are listed in devkinds.DEVICE_KINDS; what
is not specific to one kind loops over them."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ..dom0.backends import xenbus
from ..dom0.backends.guest import EventEnd, ForeignGrantTable, GuestAccess, eventfd_poke
from ..dom0.backends.tap import NetDeviceError
from .devkinds import BY_TYPE, DEVICE_KINDS, DeviceConfigError, DeviceKind
from .devspec import DevSpecError, resolve_target

if TYPE_CHECKING:
    from .domconfig import DomainConfig

__all__ = ["DETACH_TIMEOUT", "DeviceConfigError", "DomainDevices", "RemoteGuest",
           "resolve_target"]

log = logging.getLogger("pyxen.devices")
DETACH_TIMEOUT = 10.0          # as libxl's device removal timeout


class RemoteGuest(GuestAccess):
    """A domain process seen from pyxend."""

    def __init__(self, domid: int, ram, heap, nr_pages: int, call, alive):
        self.domid = domid
        self.ram = memoryview(ram)
        self.nr_pages = nr_pages
        self._call = call               # call(method, _fds=(), **params) on the domain's socket
        self._alive = alive
        self.grants = ForeignGrantTable(heap, self.ram, nr_pages, self._frames)

    def _frames(self):
        r = self._call("grant_frames")
        return r["version"], r["frames"], r["status_frames"], r["frame_refs"]

    def bind(self, port: int) -> EventEnd:
        to_guest = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        from_guest = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._call("evtchn_accept", _fds=(to_guest, from_guest), port=port, remote_dom=0,
                       remote_port=port)
        except Exception as e:
            os.close(to_guest)
            os.close(from_guest)
            raise OSError(22, f"event channel {port}: {e}") from None

        def closed():
            os.close(to_guest)
            try:
                self._call("evtchn_detach", port=port)
            except Exception:
                pass
        return EventEnd(port, from_guest, lambda: eventfd_poke(to_guest), on_close=closed)

    def alive(self) -> bool:
        return self._alive()


class DomainDevices:
    """The PV devices of one domain."""

    def __init__(self, xs, guest: GuestAccess):
        self.xs = xs
        self.guest = guest
        self.domid = guest.domid
        # the backends by kind (devkinds' type) and devid
        self.by_kind: dict[str, dict[int, object]] = {k.type: {} for k in DEVICE_KINDS}
        self.specs: dict[tuple[str, int], object] = {}
        self.xsc = None

    def resume(self) -> list[str]:
        """pyxend restarted: start again the backends XenStore says this domain
        has (a running guest's frontends keep their rings and ports)."""
        done = []
        with self.xs.lock:
            c = self.xs.store.new_client(0, True)
            try:
                kinds = {k.type: self.xs.store.directory(
                             c, f"/local/domain/0/backend/{k.type}/{self.domid}")
                         for k in DEVICE_KINDS
                         if self.xs.store.exists(
                             c, f"/local/domain/0/backend/{k.type}/{self.domid}")}
                nodes = {(k, int(d)): {n: self.xs.store.read(c, f"{xenbus.backend_path(k, self.domid, int(d))}/{n}").decode()
                                       for n in self.xs.store.directory(c, xenbus.backend_path(k, self.domid, int(d)))}
                         for k, ds in kinds.items() for d in ds}
            finally:
                self.xs.store.remove_client(c)
        for (kind, devid), n in sorted(nodes.items()):
            try:
                k = BY_TYPE[kind]
                self.attach(k, k.spec_from_backend(n, devid), force=True, existing=True)
                done.append(f"{kind} {devid}")
            except Exception as e:
                log.error("domain %d: cannot resume %s %d: %s", self.domid, kind, devid, e)
        return done

    def _write_device(self, kind: str, devid: int, be: dict, fe: dict) -> None:
        bpath = xenbus.backend_path(kind, self.domid, devid)
        fpath = xenbus.frontend_path(kind, self.domid, devid)
        with self.xs.access() as store:
            if self.xsc is None:
                self.xsc = store.new_client(0, True)
            c = self.xsc
            for path, values, perms in ((bpath, be, ["n0", f"r{self.domid}"]),
                                        (fpath, fe, [f"n{self.domid}", "r0"])):
                store.mkdir(c, path)
                store.set_perms(c, path, perms)
                for k, v in values.items():
                    store.write(c, f"{path}/{k}", str(v).encode())
                    store.set_perms(c, f"{path}/{k}", perms)

    def _remove_device(self, kind: str, devid: int) -> None:
        with self.xs.access() as store:
            c = self.xsc or store.new_client(0, True)
            for path in (xenbus.frontend_path(kind, self.domid, devid),
                         xenbus.backend_path(kind, self.domid, devid)):
                try:
                    store.rm(c, path)
                except Exception:
                    pass

    # --- any kind -----------------------------------------------------------------------------
    def attach(self, kind: DeviceKind, spec, force: bool = False, existing: bool = False):
        """Attach a device of `kind` from its spec: write both XenStore
        directories (unless `existing`: pyxend restarted and they are there)
        and start its backend; `force` lets a disk image in use elsewhere be
        attached. Nothing stays behind when it fails."""
        table = self.by_kind[kind.type]
        if spec.devid in table:
            raise DeviceConfigError(f"domain {self.domid} already has {kind.name(spec)}")
        if spec.backend not in ("0", "Domain-0"):
            raise DeviceConfigError(f"{kind.name(spec)}: only domain 0 runs backends here")
        dev = kind.make(kind.backend_class(), self.xs, self.guest, spec, force)
        be, fe = kind.nodes(self.domid, spec, dev)
        try:
            if not existing:
                self._write_device(kind.type, spec.devid, be, fe)
            dev.start()
        except BaseException as e:
            try:
                dev.stop()
            except Exception:
                log.exception("stopping %s after a failed attach", dev)
            self._remove_device(kind.type, spec.devid)
            if isinstance(e, NetDeviceError):
                raise DeviceConfigError(f"{kind.name(spec)}: {e}") from None
            raise
        table[spec.devid] = dev
        self.specs[(kind.type, spec.devid)] = spec
        return dev

    def attach_text(self, kind: DeviceKind, text: str, seed: str = "",
                    base_dir: str | None = None, force: bool = False):
        """<verb>-attach: a device of `kind` in xl's syntax, at the next free
        index; DeviceConfigError when the spec is wrong."""
        index = 0
        while index in self.by_kind[kind.type]:
            index += 1
        try:
            spec = kind.parse(text, index, seed or f"dom{self.domid}", base_dir or os.getcwd())
        except DevSpecError as e:
            raise DeviceConfigError(str(e)) from None
        return self.attach(kind, spec, force=force)

    def attach_config(self, cfg: DomainConfig, base_dir: str | None = None,
                      force: bool = False) -> None:
        """Attach every device the config lists (disk=, vif=, ... in the order
        of DEVICE_KINDS); relative paths start at base_dir (default: the
        config file's directory). DeviceConfigError names the first that
        fails; the devices attached before it stay (close_all frees them).
        force: disk images the same domain still holds elsewhere are taken
        (an incoming migration: lock_images() once the source is gone)."""
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(cfg.source)) if cfg.source \
                else os.getcwd()
        for kind in DEVICE_KINDS:
            for i, text in enumerate(getattr(cfg, kind.config_key)):
                try:
                    spec = kind.parse(text, i, cfg.name, base_dir)
                except DevSpecError as e:
                    raise DeviceConfigError(str(e)) from None
                self.attach(kind, spec, force=force)

    def lock_images(self) -> list[str]:
        """Take the locks of the disk images attached with force (see
        image.RawImage.lock); the paths still held elsewhere."""
        held = []
        for devs in self.by_kind.values():
            for dev in devs.values():
                image = getattr(dev, "image", None)
                lock = getattr(image, "lock", None)
                if lock is not None and not lock():
                    held.append(image.path)
        return held

    def find(self, kind: DeviceKind, which):
        """The device of `kind` that `which` names (a devid, a vdev, a MAC...)."""
        for _, dev in sorted(self.by_kind[kind.type].items()):
            if kind.matches(dev, str(which)):
                return dev
        raise DeviceConfigError(kind.cli.not_found.format(which=which))

    def detach(self, dev, force: bool = False, timeout: float = DETACH_TIMEOUT) -> None:
        """Close the device with the frontend's cooperation; `force` (or a
        domain that is gone) tears it down without waiting."""
        table = self.by_kind[dev.kind]
        if not force and self.guest.alive():
            dev.request_close()
            if not dev.closed.wait(timeout):
                raise DeviceConfigError(
                    f"the frontend of {dev.kind} {dev.devid} did not close within "
                    f"{timeout:.0f} s (the device is busy in the guest?); use -f to force")
        dev.stop()
        table.pop(dev.devid, None)
        self.specs.pop((dev.kind, dev.devid), None)
        self._remove_device(dev.kind, dev.devid)

    def describe(self, dev) -> dict:
        """What xl block-list / network-list show: the frontend's view (its
        state, event channel and ring references; -1 where it has none)."""
        def num(key):
            v = dev.read_fe(key)
            try:
                return int(v)
            except (TypeError, ValueError):
                return -1
        row = {"devid": dev.devid, "backend_id": 0, "frontend_id": self.domid,
               "state": num("state"), "evtch": num("event-channel"), "be_path": dev.be}
        row.update(BY_TYPE[dev.kind].describe(dev, num))
        return row

    def describe_all(self, kind: DeviceKind) -> list[dict]:
        """<verb>-list: every device of `kind`, by devid."""
        return [self.describe(dev) for _, dev in sorted(self.by_kind[kind.type].items())]

    def close_all(self) -> None:
        """The domain is gone: stop every backend, free what it held."""
        for table in self.by_kind.values():
            for dev in list(table.values()):
                try:
                    dev.stop()
                except Exception:
                    log.exception("stopping %s", dev)
            table.clear()
        if self.xsc is not None:
            with self.xs.access() as store:
                store.remove_client(self.xsc)
            self.xsc = None
