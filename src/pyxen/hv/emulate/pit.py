"""PIT channel 2 and port 0x61 (gate, speaker, OUT2), as Xen's vPIT shows
them to a PV guest that passes guest_io_okay (xen/arch/x86/emul-i8254.c:
pv_pit_handler, handle_pit_io, handle_speaker_io).

Why pyxen has it (issue 15): Linux's early CPU calibration
(native_calibrate_cpu_early -> quick_pit_calibrate, not overridden by Xen
PV) programs channel 2 and polls its MSB through port 0x42. When every read
returns all ones (no PIT) the poll runs its full 50,000 iterations: 100,000
reads, each an exit to pyxen (about half of all exits of a Linux boot).
With a counter that counts, the MSB moves and the poll gives up after a
few reads, as it does on a real PIT when reads are slow. The calibration
fails either way here (a read costs far more than the 18 us it allows);
the kernel's TSC frequency comes from pvclock (xen_tsc_khz).

The counter runs at 1,193,182 Hz of host monotonic time. Modelled: the
control word for channel 2 (access lo/hi/lo-then-hi, mode, the latch
command and read-back latch), the count written through 0x42, counting
only while the gate (0x61 bit 0) is high (modes 1, 2, 3, 5 restart on a
rising gate), OUT2 in 0x61 bit 5 (high once the count has run out; modes
2 and 3: periodic) and the refresh toggle in bit 4. Channels 0 and 1 are
not (their ports exit through #GP and read all ones, as before)."""
from __future__ import annotations

import time

PIT_HZ = 1193182


class Pit2:
    def __init__(self, now=time.monotonic_ns):
        self.now = now
        self.gate = 0
        self.speaker = 0
        self.mode = 0
        self.rw = 3                 # 1: LSB only, 2: MSB only, 3: LSB then MSB
        self.reload = 0x10000
        self.counted = 0            # ticks counted before t0
        self.t0: int | None = None  # ns when counting (re)started; None: not counting
        self.write_msb = False      # lo/hi flip-flops
        self.read_msb = False
        self.latched: int | None = None
        self.latch_msb = False
        self.pending_lsb = 0

    def _ticks(self, now: int) -> int:
        if self.t0 is None:
            return self.counted
        return self.counted + (now - self.t0) * PIT_HZ // 1_000_000_000

    def count(self) -> int:
        ticks = self._ticks(self.now())
        if self.mode in (2, 3):
            step = 2 if self.mode == 3 else 1
            return (self.reload - (ticks * step) % self.reload) & 0xFFFF
        return (self.reload - ticks) & 0xFFFF

    def out(self) -> int:
        ticks = self._ticks(self.now())
        if self.mode == 3:
            return int((ticks % self.reload) < (self.reload + 1) // 2)
        if self.mode == 2:
            return int(ticks % self.reload != self.reload - 1)
        return int(ticks >= self.reload)

    def _load(self) -> None:
        self.counted = 0
        self.t0 = self.now() if self.gate else None

    def _set_gate(self, gate: int) -> None:
        if gate == self.gate:
            return
        now = self.now()
        if gate:
            if self.mode in (1, 2, 3, 5):
                self.counted = 0
            self.t0 = now
        else:
            self.counted = self._ticks(now)
            self.t0 = None
        self.gate = gate

    def _byte(self, value: int, msb: bool) -> int:
        return (value >> 8) & 0xFF if msb else value & 0xFF

    def read(self, port: int) -> int:
        if port == 0x61:
            return (self.speaker << 1) | self.gate | (self.out() << 5) | \
                (((self.now() >> 14) & 1) << 4)
        if port != 0x42:
            return 0xFF                          # the control word cannot be read
        if self.latched is not None:
            value = self.latched
            if self.rw == 3 and not self.latch_msb:
                self.latch_msb = True
                return self._byte(value, False)
            self.latched, self.latch_msb = None, False
            return self._byte(value, self.rw == 2 or self.rw == 3)
        value = self.count()
        if self.rw == 3:
            msb, self.read_msb = self.read_msb, not self.read_msb
            return self._byte(value, msb)
        return self._byte(value, self.rw == 2)

    def write(self, port: int, value: int) -> None:
        value &= 0xFF
        if port == 0x61:
            self.speaker = (value >> 1) & 1
            self._set_gate(value & 1)
        elif port == 0x43:
            channel = value >> 6
            if channel == 3:                     # read-back: latch channel 2's count
                if not value & 0x20 and value & 0x08 and self.latched is None:
                    self.latched, self.latch_msb = self.count(), False
                return
            if channel != 2:
                return
            access = (value >> 4) & 3
            if access == 0:                      # counter latch command
                if self.latched is None:
                    self.latched, self.latch_msb = self.count(), False
                return
            mode = (value >> 1) & 7
            self.rw, self.mode = access, mode - 4 if mode >= 6 else mode
            self.write_msb = self.read_msb = False
            self.latched, self.latch_msb = None, False
            self.counted, self.t0 = 0, None      # counting waits for a count
        elif port == 0x42:
            if self.rw == 1:
                self.reload = value or 0x10000
            elif self.rw == 2:
                self.reload = (value << 8) or 0x10000
            elif not self.write_msb:
                self.pending_lsb, self.write_msb = value, True
                return
            else:
                self.reload = ((value << 8) | self.pending_lsb) or 0x10000
                self.write_msb = False
            self._load()
