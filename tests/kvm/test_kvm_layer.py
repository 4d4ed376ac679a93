"""The KVM layer against the real kernel: ioctl numbers, struct sizes, a vCPU
that runs, and kicking a running vCPU out with a signal."""
from __future__ import annotations

import ctypes
import subprocess
import threading
import time

import pytest

from pyxen.kvm import GuestMemory, ioctls as I, structs as S


def test_ioctl_numbers_match_kernel_headers(tmp_path):
    names = sorted(I.KERNEL_VALUES)
    src = tmp_path / "ioc.c"
    src.write_text("#include <stdio.h>\n#include <linux/kvm.h>\nint main(){\n" + "".join(
        f'printf("%s %lu\\n", "{n}", (unsigned long){n});\n' for n in names) + "}\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "ioc"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "ioc")], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, value = line.split()
        assert getattr(I, name) == int(value), name


def test_struct_sizes_match_kernel_headers(tmp_path):
    pairs = {"kvm_regs": S.Regs, "kvm_sregs": S.Sregs, "kvm_fpu": S.Fpu, "kvm_run": S.Run,
             "kvm_vcpu_events": S.VcpuEvents, "kvm_sync_regs": S.SyncRegs,
             "kvm_userspace_memory_region": S.UserspaceMemoryRegion,
             "kvm_cpuid_entry2": S.CpuidEntry2, "kvm_msr_entry": S.MsrEntry}
    src = tmp_path / "sz.c"
    src.write_text("#include <stdio.h>\n#include <linux/kvm.h>\nint main(){\n" + "".join(
        f'printf("{n} %zu\\n", sizeof(struct {n}));\n' for n in pairs) + "}\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "sz"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "sz")], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, size = line.split()
        assert ctypes.sizeof(pairs[name]) == int(size), name


def test_vm_memory_and_vcpu_registers(kvm):
    vm = kvm.create_vm()
    mem = GuestMemory(1 << 20)
    try:
        vm.add_memory(0, 0, mem)
        v = vm.create_vcpu(0)
        r = v.get_regs()
        r.rax, r.rip = 0x1234, 0x1000
        v.set_regs(r)
        assert v.get_regs().rax == 0x1234
        v.set_msrs({0xC0000102: 0xABCD000})
        assert v.get_msrs([0xC0000102])[0xC0000102] == 0xABCD000
        assert v.get_sregs().cr0 & 1 == 0          # a fresh vCPU is in real mode
    finally:
        vm.close()
        mem.close()


def test_memory_is_a_shareable_memfd(kvm):
    mem = GuestMemory(2 * 4096)
    try:
        mem.mm[10:15] = b"hello"
        with open(f"/proc/self/fd/{mem.fd}", "rb") as f:
            assert f.read(15)[10:] == b"hello"
    finally:
        mem.close()


def _spinning_vcpu(kvm):
    """A VM whose vCPU 0 spins at 0x200000 (jmp .): (vm, vcpu, closer)."""
    from pyxen.hv.xenheap import XenHeap
    from pyxen.hv import cpu as C, layout as L
    import struct
    vm = kvm.create_vm()
    ram = GuestMemory(4 << 20)
    heap = XenHeap(1024, 1, 0x40011)

    def close():
        vm.close()
        ram.close()
        heap.mem.close()
    vm.add_memory(0, 0, ram)
    vm.add_memory(1, L.XEN_GPA, heap.mem)
    F = L.PTE_P | L.PTE_RW | L.PTE_US | L.PTE_A
    q = struct.Struct("<Q")
    q.pack_into(ram.mm, 0x1000, 0x2000 | F)
    q.pack_into(ram.mm, 0x1000 + 257 * 8, heap.l4_entry)
    q.pack_into(ram.mm, 0x2000, 0x3000 | F)
    q.pack_into(ram.mm, 0x3000 + 8, 0x4000 | F)          # va 0x200000
    q.pack_into(ram.mm, 0x4000, 0x200000 | F)
    ram.mm[0x200000:0x200002] = b"\xeb\xfe"               # jmp .
    v = vm.create_vcpu(0)
    v.set_cpuid(kvm.supported_cpuid())
    s = v.get_sregs()
    C.initial_sregs(s, 0, heap.gdt_base(0), heap.tss_base(0), 0x1000)
    v.set_sregs(s)
    r = v.get_regs()
    r.rip, r.rsp, r.rflags = 0x200000, 0x201000, 0x202
    v.set_regs(r)
    return vm, v, close


def test_kick_interrupts_a_running_vcpu(kvm):
    """A vCPU spinning in the guest returns from run() when kicked from another thread."""
    vm, v, close = _spinning_vcpu(kvm)
    try:
        result = []
        t = threading.Thread(target=lambda: result.append(v.run()))
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "the guest loop should still be running"
        v.kick()
        t.join(5)
        assert not t.is_alive(), "kick did not bring the vCPU out of KVM_RUN"
        assert result == [-1]
        assert v.get_regs().rip == 0x200000
    finally:
        close()


def test_kicks_on_a_thread_that_is_not_the_main_one(kvm):
    """On a vCPU set up and run by a thread other than the main one (where
    Python cannot install signal handlers): a stray kick signal outside
    KVM_RUN is harmless, a kick made while the thread is outside KVM_RUN
    ends its next run at once, and one run later the vCPU runs until kicked
    again."""
    import signal
    from pyxen.kvm.system import KICK_SIGNAL
    result = []

    def vcpu_thread():
        vm, v, close = _spinning_vcpu(kvm)
        try:
            signal.pthread_kill(threading.get_ident(), KICK_SIGNAL)
            v.kick()                    # before run(): immediate_exit and the signal
            t0 = time.monotonic()
            result.append(v.run())
            result.append(time.monotonic() - t0)
            result.append(v.run_struct.immediate_exit)
            threading.Timer(0.3, v.kick).start()
            t0 = time.monotonic()
            result.append(v.run())
            result.append(time.monotonic() - t0)
        finally:
            close()
    t = threading.Thread(target=vcpu_thread)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the vCPU never came back from KVM_RUN"
    first, took, ie, second, took2 = result
    assert first == -1 and took < 0.2 and ie == 0
    assert second == -1 and took2 >= 0.25


def test_missing_kvm_device_is_a_clear_error(tmp_path):
    from pyxen.kvm import Kvm, KvmUnavailable
    with pytest.raises(KvmUnavailable, match="does not exist"):
        Kvm(str(tmp_path / "nokvm"))
    dev = tmp_path / "kvm"
    dev.write_text("")
    dev.chmod(0)
    if __import__("os").geteuid() != 0:
        with pytest.raises(KvmUnavailable, match="no permission"):
            Kvm(str(dev))
