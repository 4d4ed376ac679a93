"""What a backend needs of a guest: its memory (to reach granted pages), its
grant table (to check and mark grants while they are in use) and event
channels bound to the frontend's ports.

`LocalGuest` wraps a Domain running in this process. `ForeignGrantTable` is
the grant table of a guest in another process, read through the memfds that
process shares (Xen's dom0 reaches a guest's grant table the same way: the
hypervisor's copy, not the guest's)."""
from __future__ import annotations

import errno
import os
import threading
from abc import ABC, abstractmethod
from types import SimpleNamespace

from ...hv.grant import GrantTable
from ...hv.mm import FrameRefs


def eventfd_poke(fd: int) -> None:
    """Signal an eventfd; a full counter already means 'signalled'."""
    try:
        os.eventfd_write(fd, 1)
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno not in (errno.EBADF, errno.EAGAIN):
            raise


class EventEnd:
    """dom0's end of an inter-domain event channel: `fd` becomes readable when
    the guest sends; `notify()` raises the guest's port."""

    def __init__(self, port: int, fd: int, notify, on_close=None):
        self.port = port
        self.fd = fd
        self.notify = notify
        self._on_close = on_close

    def consume(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class GuestAccess(ABC):
    """A guest as a backend sees it."""
    domid: int
    ram: memoryview         # all of the guest's RAM (frame n at n * 4096)
    nr_pages: int
    grants: GrantTable

    @abstractmethod
    def bind(self, port: int) -> EventEnd:
        """Bind to the frontend's unbound port (remote domain 0)."""

    def alive(self) -> bool:
        return True


class _Owns:
    """What GrantTable needs of mm: owns() (any frame of the guest's RAM) and
    frefs (the shared words where dom0's writable references are counted)."""

    def __init__(self, nr_pages: int):
        self.nr_pages = nr_pages
        self.frefs: FrameRefs | None = None

    def owns(self, mfn: int) -> bool:
        return 0 <= mfn < self.nr_pages


class ForeignGrantTable(GrantTable):
    """A grant table of a guest in another process. The list of table frames
    comes from `fetch()` -> (version, frames, status_frames, frame_refs_off)
    and is fetched again when a reference lies beyond the frames known so
    far (the guest grew its table). frame_refs_off is where in the heap the
    domain keeps its FrameRefs words: a writable map takes its reference
    there, as the domain's own grant maps take theirs."""

    def __init__(self, heap, ram: memoryview, nr_pages: int, fetch):
        # the parts of a Domain GrantTable reads: heap.mem.addr, ram.view, mm
        super().__init__(SimpleNamespace(heap=SimpleNamespace(mem=heap),
                                         ram=SimpleNamespace(view=ram), mm=_Owns(nr_pages)))
        self._fetch = fetch
        self.refresh()

    def refresh(self) -> None:
        version, frames, status, frefs_off = self._fetch()
        self.version = version
        self.frames = list(frames)
        self.status_frames = list(status)
        mm = self.dom.mm
        if mm.frefs is None:
            mm.frefs = FrameRefs(self.dom.heap.mem.addr + frefs_off, mm.nr_pages)

    def acquire(self, ref: int, mapper: int, readonly: bool):
        if ref >= self.nr_entries():
            self.refresh()
        return super().acquire(ref, mapper, readonly)


class LocalGuest(GuestAccess):
    """A Domain object in this process (a foreground `pyxen create`)."""

    def __init__(self, dom):
        self.dom = dom
        self.domid = dom.domid
        self.ram = dom.ram.view
        self.nr_pages = dom.nr_pages
        self.grants = dom.grants
        self._lock = threading.Lock()

    def bind(self, port: int) -> EventEnd:
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        if not self.dom.events.accept_remote(port, 0, port, lambda: eventfd_poke(fd)):
            os.close(fd)
            raise OSError(errno.EINVAL, f"event channel {port} is not unbound for domain 0")
        return EventEnd(port, fd, lambda: self.dom.events.raise_port(port),
                        on_close=lambda: self.dom.events.detach_remote(port))

    def alive(self) -> bool:
        return not self.dom.stopped
