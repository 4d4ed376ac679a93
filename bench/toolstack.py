#!/usr/bin/env python3
"""The toolstack under load (pyxend, one process per domain, the CLI).

  create   `pyxen create` to the first console byte of the mini-OS idle guest,
           and `pyxen destroy` to resources freed, ms (median, p95) over N domains
  idle     M idle domains at once: host memory per domain beyond guest RAM,
           host CPU while they idle, and `pyxen list` latency
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "guests"))


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "pyxen.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20, help="domains for create/destroy timing")
    ap.add_argument("-m", type=int, default=50, help="idle domains at once")
    args = ap.parse_args()
    import build as guests
    elf = guests.build_guest("idle")
    with tempfile.TemporaryDirectory() as d:
        rd = Path(d) / "run"
        rd.mkdir()
        env = dict(os.environ, PYXEN_RUN_DIR=str(rd), PYTHONPATH=str(ROOT / "src"))
        daemon = subprocess.Popen([sys.executable, "-m", "pyxen.toolstack.daemon", "-F"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while cli(env, "list").returncode != 0:
                time.sleep(0.1)
            create_ms, destroy_ms = [], []
            for i in range(args.n):
                cfg = Path(d) / f"d{i}.cfg"
                cfg.write_text(f'name = "d{i}"\nkernel = "{elf}"\nmemory = 16\n')
                log = rd / "log" / f"guest-d{i}.log"
                t = time.monotonic()
                assert cli(env, "create", "-q", str(cfg)).returncode == 0
                while not (log.exists() and log.stat().st_size > 0):
                    time.sleep(0.002)
                create_ms.append((time.monotonic() - t) * 1000)
                t = time.monotonic()
                assert cli(env, "destroy", f"d{i}").returncode == 0
                destroy_ms.append((time.monotonic() - t) * 1000)
            print(f"create -> first console byte  median {statistics.median(create_ms):7.1f} ms"
                  f"   p95 {pct(create_ms, 0.95):7.1f} ms   ({args.n} domains)")
            print(f"destroy -> resources freed    median {statistics.median(destroy_ms):7.1f} ms"
                  f"   p95 {pct(destroy_ms, 0.95):7.1f} ms")
            for i in range(args.m):
                cfg = Path(d) / f"i{i}.cfg"
                cfg.write_text(f'name = "i{i}"\nkernel = "{elf}"\nmemory = 16\n')
                assert cli(env, "create", "-q", str(cfg)).returncode == 0, i
            time.sleep(3)
            pids = [int(p.read_text().split('"pid": ')[1].split(",")[0])
                    for p in (rd / "domains").glob("*.json")]
            rss = [rss_kb(p) for p in pids]
            c0 = sum(proc_cpu(p) for p in pids) + proc_cpu(daemon.pid)
            time.sleep(5)
            c1 = sum(proc_cpu(p) for p in pids) + proc_cpu(daemon.pid)
            lat = []
            for _ in range(10):
                t = time.monotonic()
                cli(env, "list")
                lat.append((time.monotonic() - t) * 1000)
            beyond = statistics.median(rss) - 16 * 1024
            print(f"{len(pids)} idle domains: host memory per domain beyond its 16 MiB "
                  f"{beyond / 1024:6.1f} MiB (median RSS {statistics.median(rss) / 1024:.1f} MiB)")
            print(f"{len(pids)} idle domains: host CPU {100 * (c1 - c0) / 5:5.1f} % of one CPU")
            print(f"pyxen list with {len(pids)} domains: median {statistics.median(lat):6.1f} ms"
                  f"   p95 {pct(lat, 0.95):6.1f} ms")
            for i in range(args.m):
                cli(env, "destroy", f"i{i}")
        finally:
            daemon.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
