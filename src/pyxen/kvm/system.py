"""KVM system, VM and vCPU objects over ctypes ioctls."""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal

from .. import _atomic as _A
from . import ioctls as I
from . import structs as S

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl_int = _libc.ioctl
_pthread_self = _libc.pthread_self
_pthread_self.restype = ctypes.c_ulong
_pthread_kill = _libc.pthread_kill
_pthread_kill.argtypes = [ctypes.c_ulong, ctypes.c_int]

KICK_SIGNAL = signal.SIGRTMIN + 2


class KvmError(OSError):
    """An ioctl on a KVM file descriptor failed."""


class KvmUnavailable(RuntimeError):
    """/dev/kvm cannot be used; the message says why and what to do."""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise KvmError(err, f"{what}: {os.strerror(err)}")
    return ret


def ioctl(fd: int, request: int, arg=None) -> int:
    """ioctl through libc; arg is a ctypes object (passed by reference), an int, or None."""
    if arg is None:
        ptr = None
    elif isinstance(arg, int):
        ptr = arg
    else:
        ptr = ctypes.addressof(arg)
    return _check(_ioctl(fd, request, ptr), f"ioctl {request:#x}")


def _install_kick_handler() -> None:
    """The kick signal's handler (in C, pyxen._atomic): the signal ends
    KVM_RUN with EINTR instead of killing the process, and one landing while
    the thread is about to enter KVM_RUN sets immediate_exit, so the run
    ends at once. A kick made while the thread is elsewhere is kept in
    immediate_exit by kick() itself. Any thread may install it."""
    _A.install_kick_handler(KICK_SIGNAL)


class Kvm:
    """The /dev/kvm system file descriptor."""

    def __init__(self, path: str = "/dev/kvm"):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(
                f"{path} does not exist: this host has no KVM (load the kvm module, "
                "or run pyxen on a machine or VM that offers /dev/kvm)") from None
        except PermissionError:
            raise KvmUnavailable(
                f"no permission to open {path}: run as root or join the group that owns it "
                f"(ls -l {path})") from None
        except OSError as e:
            raise KvmUnavailable(f"cannot open {path}: {e.strerror}") from None
        version = ioctl(self.fd, I.KVM_GET_API_VERSION)
        if version != 12:
            raise KvmUnavailable(f"{path}: KVM API version {version}, pyxen needs 12")
        self.vcpu_mmap_size = ioctl(self.fd, I.KVM_GET_VCPU_MMAP_SIZE)
        for cap, name in ((I.KVM_CAP_USER_MEMORY, "USER_MEMORY"),
                          (I.KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT")):
            if not self.check_extension(cap):
                raise KvmUnavailable(f"{path}: KVM lacks KVM_CAP_{name}")
        self.has_sync_regs = self.check_extension(I.KVM_CAP_SYNC_REGS) != 0

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, I.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[S.CpuidEntry2]:
        n = 256
        while True:
            c = S.cpuid2_struct(n)
            c.nent = n
            try:
                ioctl(self.fd, I.KVM_GET_SUPPORTED_CPUID, c)
            except KvmError as e:
                if e.errno == errno.E2BIG:
                    n *= 2
                    continue
                raise
            return [c.entries[i] for i in range(c.nent)]

    def create_vm(self) -> "Vm":
        return Vm(self)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class GuestMemory:
    """A memfd-backed block of guest memory, mapped into this process.

    The memfd can be handed to other processes (dom0 services) so they map
    the same pages."""

    def __init__(self, size: int, name: str = "pyxen-guest", fd: int | None = None):
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"guest memory size {size:#x} is not a positive multiple of a page")
        self.size = size
        if fd is None:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except OSError:
                os.close(fd)
                raise
        self.fd = fd
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self._anchor)
        self.view = memoryview(self.mm)

    def close(self) -> None:
        """Unmap and close. If views into the memory are still alive somewhere
        (e.g. a traceback), the mapping is left for the garbage collector."""
        if self.mm is None:
            return
        mm, self.mm = self.mm, None
        self.view.release()
        self._anchor = None
        try:
            mm.close()
        except BufferError:
            pass
        os.close(self.fd)


KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_MEM_READONLY = 2


class Vm:
    def __init__(self, kvm: Kvm):
        self.kvm = kvm
        self.fd = ioctl(kvm.fd, I.KVM_CREATE_VM, 0)
        self.vcpus: list[Vcpu] = []
        self.slots: dict[int, tuple[int, GuestMemory, bool]] = {}

    def add_memory(self, slot: int, gpa: int, mem: GuestMemory, readonly: bool = False,
                   log_dirty: bool = False) -> None:
        """Map mem at gpa as slot (again: change its flags). log_dirty: KVM
        records the frames the guest writes (KVM_MEM_LOG_DIRTY_PAGES), read
        and cleared by dirty_log()."""
        flags = (KVM_MEM_READONLY if readonly else 0) | (KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0)
        region = S.UserspaceMemoryRegion(slot=slot, flags=flags,
                                         guest_phys_addr=gpa, memory_size=mem.size,
                                         userspace_addr=mem.addr)
        ioctl(self.fd, I.KVM_SET_USER_MEMORY_REGION, region)
        self.slots[slot] = (gpa, mem, readonly)

    def set_dirty_logging(self, slot: int, on: bool) -> None:
        """Start (or stop) recording the guest's writes to slot's frames."""
        gpa, mem, readonly = self.slots[slot]
        self.add_memory(slot, gpa, mem, readonly, log_dirty=on)

    def dirty_log(self, slot: int) -> bytearray:
        """The bitmap (bit n: frame n of the slot) of the frames the guest
        wrote since logging started or the last call; KVM clears it and
        write-protects them again (KVM_GET_DIRTY_LOG). Only the guest's own
        writes: what userspace writes through the mapping is not seen."""
        _, mem, _ = self.slots[slot]
        pages = mem.size >> 12
        buf = (ctypes.c_uint64 * ((pages + 63) // 64))()
        ioctl(self.fd, I.KVM_GET_DIRTY_LOG, S.DirtyLog(slot=slot, dirty_bitmap=ctypes.addressof(buf)))
        return bytearray(buf)

    def create_vcpu(self, vcpu_id: int) -> "Vcpu":
        v = Vcpu(self, vcpu_id)
        self.vcpus.append(v)
        return v

    def close(self) -> None:
        for v in self.vcpus:
            v.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vcpu:
    """One KVM vCPU. `run()` enters the guest on the calling thread."""

    def __init__(self, vm: Vm, vcpu_id: int):
        _install_kick_handler()
        self.vm = vm
        self.id = vcpu_id
        self.fd = ioctl(vm.fd, I.KVM_CREATE_VCPU, vcpu_id)
        size = vm.kvm.vcpu_mmap_size
        self._run_mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        self._run_anchor = ctypes.c_char.from_buffer(self._run_mm)
        self.run_struct = S.Run.from_address(ctypes.addressof(self._run_anchor))
        self._immediate_exit_addr = ctypes.addressof(self._run_anchor) + S.Run.immediate_exit.offset
        self.sync = vm.kvm.has_sync_regs
        if self.sync:
            self.run_struct.kvm_valid_regs = I.KVM_SYNC_X86_REGS
        self.thread_id: int | None = None
        self._fd_run = self.fd

    # --- register access -------------------------------------------------
    @property
    def regs(self) -> S.Regs:
        """The general registers. With sync regs, these live in the kvm_run page
        (valid after each exit); call `regs_dirty()` after changing them."""
        if self.sync:
            return self.run_struct.s.regs.regs
        r = S.Regs()
        ioctl(self.fd, I.KVM_GET_REGS, r)
        return r

    def regs_dirty(self, regs: S.Regs | None = None) -> None:
        if self.sync:
            if regs is not None and ctypes.addressof(regs) != ctypes.addressof(self.run_struct.s.regs.regs):
                self.run_struct.s.regs.regs = regs
            self.run_struct.kvm_dirty_regs |= I.KVM_SYNC_X86_REGS
        else:
            ioctl(self.fd, I.KVM_SET_REGS, regs)

    def get_regs(self) -> S.Regs:
        r = S.Regs()
        ioctl(self.fd, I.KVM_GET_REGS, r)
        return r

    def set_regs(self, regs: S.Regs) -> None:
        ioctl(self.fd, I.KVM_SET_REGS, regs)
        if self.sync:
            # keep the sync copy coherent with what we just wrote
            self.run_struct.s.regs.regs = regs
            self.run_struct.kvm_dirty_regs &= ~I.KVM_SYNC_X86_REGS

    def get_sregs(self) -> S.Sregs:
        s = S.Sregs()
        ioctl(self.fd, I.KVM_GET_SREGS, s)
        return s

    def set_sregs(self, sregs: S.Sregs) -> None:
        ioctl(self.fd, I.KVM_SET_SREGS, sregs)

    def set_sregs_lazy(self, sregs: S.Sregs) -> None:
        """Hand sregs to KVM with the next KVM_RUN (no extra ioctl when sync regs exist)."""
        if self.sync:
            self.run_struct.s.regs.sregs = sregs
            self.run_struct.kvm_dirty_regs |= I.KVM_SYNC_X86_SREGS
        else:
            self.set_sregs(sregs)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        m = S.msrs_struct(len(indices))
        m.nmsrs = len(indices)
        for i, idx in enumerate(indices):
            m.entries[i].index = idx
        n = ioctl(self.fd, I.KVM_GET_MSRS, m)
        return {m.entries[i].index: m.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> None:
        m = S.msrs_struct(len(values))
        m.nmsrs = len(values)
        for i, (idx, val) in enumerate(values.items()):
            m.entries[i].index = idx
            m.entries[i].data = val
        n = ioctl(self.fd, I.KVM_SET_MSRS, m)
        if n != len(values):
            bad = list(values)[n]
            raise KvmError(errno.EINVAL, f"KVM_SET_MSRS refused MSR {bad:#x}")

    def set_cpuid(self, entries: list[S.CpuidEntry2]) -> None:
        c = S.cpuid2_struct(len(entries))
        c.nent = len(entries)
        for i, e in enumerate(entries):
            c.entries[i] = e
        ioctl(self.fd, I.KVM_SET_CPUID2, c)

    def get_debugregs(self) -> S.DebugRegs:
        d = S.DebugRegs()
        ioctl(self.fd, I.KVM_GET_DEBUGREGS, d)
        return d

    def set_debugregs(self, db: list[int], dr6: int, dr7: int) -> None:
        d = S.DebugRegs()
        for i, v in enumerate(db):
            d.db[i] = v
        d.dr6, d.dr7 = dr6, dr7
        ioctl(self.fd, I.KVM_SET_DEBUGREGS, d)

    def get_fpu(self) -> S.Fpu:
        f = S.Fpu()
        ioctl(self.fd, I.KVM_GET_FPU, f)
        return f

    def set_fpu(self, fpu: S.Fpu) -> None:
        ioctl(self.fd, I.KVM_SET_FPU, fpu)

    def get_xsave(self) -> bytes:
        """The vCPU's FPU/vector state (KVM_GET_XSAVE: legacy area, header,
        the extended components in the standard layout)."""
        x = S.Xsave()
        ioctl(self.fd, I.KVM_GET_XSAVE, x)
        return bytes(x)

    def set_xsave(self, data: bytes) -> None:
        ioctl(self.fd, I.KVM_SET_XSAVE, S.Xsave.from_buffer_copy(data))

    def tsc_khz(self) -> int:
        return ioctl(self.fd, I.KVM_GET_TSC_KHZ)

    def get_events(self) -> S.VcpuEvents:
        e = S.VcpuEvents()
        ioctl(self.fd, I.KVM_GET_VCPU_EVENTS, e)
        return e

    def set_events(self, ev: S.VcpuEvents) -> None:
        ioctl(self.fd, I.KVM_SET_VCPU_EVENTS, ev)

    # --- running ---------------------------------------------------------
    def run(self) -> int:
        """Enter the guest until the next exit. Returns the exit reason, or
        -1 (KVM_EXIT_INTR equivalent) when a kick (signal / immediate_exit)
        interrupted the run. The GIL is released while the guest runs."""
        self.thread_id = _pthread_self()
        ret, err = _A.kvm_run(self._fd_run, I.KVM_RUN, self._immediate_exit_addr)
        if ret < 0:
            if err in (errno.EINTR, errno.EAGAIN):
                return -1
            raise KvmError(err, f"KVM_RUN: {os.strerror(err)}")
        return self.run_struct.exit_reason

    def complete_pending(self, max_exits: int = 64) -> int:
        """Let KVM finish an instruction it exited for (an IN owes its data;
        a string form may exit again per chunk) without running the guest:
        KVM_RUN with immediate_exit (the API's way to complete pending I/O).
        An IN reads all ones. Returns the I/O exits it took (0: done at once)."""
        exits = 0
        rs = self.run_struct
        while True:
            if rs.exit_reason == I.KVM_EXIT_IO and rs.exit.io.direction == I.KVM_EXIT_IO_IN:
                data = self.io_data()
                data[:] = b"\xff" * len(data)
            rs.immediate_exit = 1
            try:
                ret = _ioctl(self._fd_run, I.KVM_RUN, None)
            finally:
                rs.immediate_exit = 0
            if ret < 0:
                err = ctypes.get_errno()
                if err in (errno.EINTR, errno.EAGAIN):
                    return exits
                raise KvmError(err, f"KVM_RUN: {os.strerror(err)}")
            exits += 1
            if rs.exit_reason != I.KVM_EXIT_IO or exits >= max_exits:
                raise KvmError(errno.EIO, "KVM_RUN did not complete the pending I/O "
                               f"(exit {rs.exit_reason})")

    def kick(self) -> None:
        """Make a running (or about-to-run) vCPU return from run() promptly."""
        if self.fd < 0:
            return                          # closed: nothing runs any more
        self.run_struct.immediate_exit = 1
        tid = self.thread_id
        if tid is not None:
            _pthread_kill(tid, KICK_SIGNAL)

    def io_data(self) -> memoryview:
        io = self.run_struct.exit.io
        off = io.data_offset
        return memoryview(self._run_mm)[off:off + io.size * io.count]

    def close(self) -> None:
        if self.fd >= 0:
            del self.run_struct
            del self._run_anchor
            self._run_mm.close()
            os.close(self.fd)
            self.fd = -1
