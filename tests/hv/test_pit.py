"""PIT channel 2 as a PV guest sees it (hv/emulate/pit.py): the sequence of
Linux's quick_pit_calibrate, the latch command, OUT2 and the gate in port
0x61. A fake clock; no KVM needed."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from pyxen.hv.emulate.pit import Pit2, PIT_HZ  # noqa: E402


def make():
    t = [0]
    return Pit2(now=lambda: t[0]), t


def ns(ticks):
    return ticks * 1_000_000_000 // PIT_HZ + 1


def test_quick_pit_calibrate_sees_the_msb_move():
    p, t = make()
    p.write(0x61, (p.read(0x61) & ~2) | 1)        # gate high, speaker off
    p.write(0x43, 0xB0)                           # channel 2, lo/hi, mode 0
    p.write(0x42, 0xFF)
    p.write(0x42, 0xFF)
    assert (p.read(0x42), p.read(0x42)) == (0xFF, 0xFF)
    t[0] += ns(300)
    lsb, msb = p.read(0x42), p.read(0x42)
    assert msb == 0xFE and (msb << 8 | lsb) == 0xFFFF - 300


def test_gate_low_holds_the_count():
    p, t = make()
    p.write(0x43, 0xB0)
    p.write(0x42, 0x00)
    p.write(0x42, 0x10)                           # 0x1000, gate still low
    t[0] += ns(100)
    assert (p.read(0x42), p.read(0x42)) == (0x00, 0x10)
    p.write(0x61, 1)
    t[0] += ns(0x100)
    assert (p.read(0x42), p.read(0x42)) == (0x00, 0x0F)


def test_latch_and_out2():
    p, t = make()
    p.write(0x61, 1)
    p.write(0x43, 0xB0)
    p.write(0x42, 0x10)
    p.write(0x42, 0x00)                           # 16 ticks
    t[0] += ns(4)
    p.write(0x43, 0x80)                           # latch channel 2
    t[0] += ns(4)
    assert (p.read(0x42), p.read(0x42)) == (12, 0)     # the latched count
    assert p.read(0x61) & 0x21 == 0x01                 # gate high, OUT2 low
    t[0] += ns(16)
    assert p.read(0x61) & 0x20                         # ran out: OUT2 high
    assert p.read(0x43) == 0xFF


def test_lsb_only_access():
    p, t = make()
    p.write(0x61, 1)
    p.write(0x43, 0x90)                           # channel 2, LSB only, mode 0
    p.write(0x42, 0x80)
    t[0] += ns(0x10)
    assert p.read(0x42) == 0x70
    assert p.read(0x42) == 0x70                   # no flip-flop with one byte
