"""`./dev conformance`: Xen's own suites on pyxen, as a table.

    suite          test                   result    seconds
    XTF            example                SUCCESS   0.7
    test-xenstore  ta err (standalone)    PASS      0.1

XTF: every pv64 test (xtf.cases), its verdict and whether that verdict is
what Xen gives on this host (xtf.EXPECT). test-xenstore: every test of Xen's
test-xenstore against the stand-alone pyxen-xenstored and against pyxend's.
Exit status 0 when everything is as expected.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "dom0")]

from conformance import xtf  # noqa: E402

XS_TESTS = ["read 1", "read 2000", "write 1", "write 2000", "dir", "rm node", "rm dir",
            "ta empty", "ta empty x", "ta rmw", "ta rmw x", "ta err"]


def xtf_rows():
    dest = xtf.build()
    for case in xtf.cases(dest):
        out = xtf.run(case)
        exp = xtf.expectation(case.name)
        ok = exp.accepts(out)
        note = "" if out.result in ("SUCCESS",) else (exp.why if ok else out.detail)
        yield "XTF", case.name, out.result, out.seconds, ok, note


def _test_xenstore() -> str:
    installed = Path("/usr/lib/xen-4.17/bin/test-xenstore")
    if installed.exists():
        return str(installed)
    from pyxen.build.fetch import fetch_debian_package_file
    return str(fetch_debian_package_file("xen-utils-4.17", "usr/lib/xen-4.17/bin/test-xenstore",
                                         follow_depends=False))


def xenstore_rows():
    from daemon_helpers import start_daemon
    from xs_helpers import Daemon
    binary = _test_xenstore()
    with tempfile.TemporaryDirectory(prefix="pyxen-conf-") as tmp:
        tmp = Path(tmp)
        for kind in ("standalone", "pyxend"):
            d = tmp / kind
            d.mkdir()
            if kind == "standalone":
                daemon = Daemon(d / "xs.sock", d / "state.json")
                sock, stop = d / "xs.sock", lambda: daemon.stop(signal.SIGTERM)
            else:
                proc = start_daemon(d)
                sock = d / "xenstored.sock"

                def stop(proc=proc):
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            try:
                env = dict(os.environ, XENSTORED_PATH=str(sock))
                env.pop("XENSTORE_DOMAIN_INTERFACE", None)
                for name in XS_TESTS:
                    t0 = time.monotonic()
                    p = subprocess.run([binary, "-t", name], env=env, capture_output=True,
                                       text=True, timeout=120)
                    secs = time.monotonic() - t0
                    line = next((l for l in p.stdout.splitlines() if l.startswith(name)), "")
                    ok = p.returncode == 0 and "failed" not in line
                    yield ("test-xenstore", f"{name} ({kind})", "PASS" if ok else "FAIL", secs,
                           ok, "" if ok else (line or p.stderr.strip()[-80:]))
            finally:
                stop()


def main() -> int:
    rows = []
    fmt = "{:<14} {:<28} {:<8} {:>7}  {}"
    print(fmt.format("suite", "test", "result", "seconds", "note"))
    for gen in (xtf_rows, xenstore_rows):
        for row in gen():
            rows.append(row)
            suite, name, result, secs, ok, note = row
            print(fmt.format(suite, name, result, f"{secs:.1f}", ("" if ok else "UNEXPECTED: ") + note),
                  flush=True)
    print()
    for suite in ("XTF", "test-xenstore"):
        mine = [r for r in rows if r[0] == suite]
        counts: dict[str, int] = {}
        for r in mine:
            counts[r[2]] = counts.get(r[2], 0) + 1
        bad = sum(1 for r in mine if not r[4])
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        print(f"{suite}: {len(mine)} run: {summary}; {len(mine) - bad} as Xen would end them, "
              f"{bad} unexpected")
    return 1 if any(not r[4] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
