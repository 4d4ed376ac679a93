#!/usr/bin/env python3
"""pyxen event/time benchmarks (figures, not a test; bench/run.py does not
run this).

Boots guests/bench_events.c with 2 vCPUs. The guest measures with rdtsc and
converts with its pvclock scale, and prints median and p99 of:

  event latency   EVTCHNOP_send on vCPU0 -> upcall handler entry on vCPU1,
                  with vCPU1 blocked in SCHEDOP_block, and with vCPU1
                  running in the guest (pyxen must kick it out of KVM_RUN)
  IPI round trip  vCPU0 -> vCPU1 -> vCPU0, both blocking between events
  timer accuracy  single-shot deadline -> system time in the VIRQ_TIMER
                  handler (deadlines 1-5 ms ahead)

Then every vCPU blocks (vCPU0 until a timer idle_ms ahead, vCPU1 with no
timer at all) and this script measures the host CPU time the whole domain
process used over that wall time (target: ~0%).

    .venv/bin/python bench/events.py [--idle-ms 3000] [--abi fifo]
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "guests"))

import build as guest_build                      # noqa: E402
from pyxen.toolstack.builder import LocalServices, build_domain, close_domain  # noqa: E402
from pyxen.toolstack.domconfig import DomainConfig  # noqa: E402

LABELS = {
    "event_latency_blocked": "event latency vCPU0 -> vCPU1 (vCPU1 blocked)",
    "event_latency_running": "event latency vCPU0 -> vCPU1 (vCPU1 running)",
    "ipi_round_trip": "IPI round trip vCPU0 -> vCPU1 -> vCPU0",
    "timer_deviation": "timer: handler time - requested deadline",
}


def run(idle_ms: int, abi: str) -> tuple[str, dict]:
    marks: dict[str, tuple[float, float]] = {}
    out = bytearray()

    def console(data: bytes) -> None:
        out.extend(data)
        for name in ("idle begin", "idle end"):
            if name.encode() in data and name not in marks:
                marks[name] = (time.monotonic(), time.process_time())

    cmdline = f"idle_ms={idle_ms}" + (" abi=fifo" if abi == "fifo" else "")
    cfg = DomainConfig(name="bench-events", kernel=str(guest_build.build_guest("bench_events")),
                       memory=32, vcpus=2, cmdline=cmdline)
    dom = build_domain(cfg, LocalServices(console, devices=False), console_io=console)
    watchdog = threading.Timer(120 + idle_ms / 1000, dom.destroy)   # a hang ends as 'destroyed'
    watchdog.daemon = True
    try:
        watchdog.start()
        result = dom.run()
    finally:
        watchdog.cancel()
        close_domain(dom)
    text = out.decode(errors="replace")
    if "Test result: SUCCESS" not in text:
        raise SystemExit(f"bench_events failed ({result.reason}):\n{text}{result.message}")
    return text, marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-ms", type=int, default=3000)
    ap.add_argument("--abi", choices=("2l", "fifo"), default="2l")
    args = ap.parse_args()
    text, marks = run(args.idle_ms, args.abi)
    print(f"pyxen events benchmark ({args.abi} event channels, 2 vCPUs)")
    for m in re.finditer(r"^(\w+)_ns median=(\d+) p99=(\d+) n=(\d+)", text, re.M):
        name, med, p99, n = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        print(f"  {LABELS.get(name, name):46s} median {med / 1000:8.1f} us   "
              f"p99 {p99 / 1000:8.1f} us   (n={n})")
    (w0, c0), (w1, c1) = marks["idle begin"], marks["idle end"]
    wall, cpu = w1 - w0, c1 - c0
    print(f"  {'host CPU while all vCPUs are blocked':46s} {100 * cpu / wall:6.2f} % of one CPU "
          f"({cpu * 1000:.1f} ms CPU in {wall:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
