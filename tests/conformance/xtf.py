"""The Xen Test Framework (XTF) on pyxen: build it, list its pv64 tests, run
one as a user would (`pyxen create -F -c` on the .cfg XTF writes for it) and
read the verdict from its console.

XTF's source and build script live in ../shared/conformance (never copied
into this repository); the build goes to $PYXEN_CACHE/xtf.

What each test may end with is in EXPECT: SUCCESS everywhere, SKIP only where
Xen on this host would skip for the same reason (decided from the host's real
CPUID, never from a list of machines), each with its reason in one line.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PYXEN_SHARED", ROOT.parent / "shared"))
BUILD_SCRIPT = SHARED / "conformance" / "build-xtf"
RESULTS = ("SUCCESS", "SKIP", "FAILURE", "ERROR")
TIMEOUT = 60          # seconds; an XTF test takes ~1 s here


def cache_dir() -> Path:
    env = os.environ.get("PYXEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pyxen"


def build() -> Path:
    """Build XTF into the cache (a no-op when it is current); its directory."""
    if not BUILD_SCRIPT.exists():
        raise FileNotFoundError(f"XTF build script not found at {BUILD_SCRIPT} "
                                "(the shared/ directory must sit beside the checkout)")
    dest = cache_dir() / "xtf"
    out = subprocess.run([str(BUILD_SCRIPT), str(dest)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"building XTF failed:\n{out.stderr}")
    return dest


@dataclass(frozen=True)
class Case:
    name: str              # test name, with ~variation if any
    cfg: Path


def cases(dest: Path) -> list[Case]:
    """Every pv64 test XTF built, one per variation, in name order."""
    found = []
    for info in sorted((dest / "tests").glob("*/info.json")):
        meta = json.loads(info.read_text())
        if "pv64" not in meta.get("environments", ()):
            continue
        name = meta["name"]
        variants = meta.get("variations") or [None]
        for v in variants:
            full = name if v is None else f"{name}~{v}"
            found.append(Case(full, info.parent / f"test-pv64-{full}.cfg"))
    return found


@dataclass
class Outcome:
    result: str            # SUCCESS / SKIP / FAILURE / ERROR / CRASH / TIMEOUT
    detail: str            # the test's last words
    seconds: float
    output: str


_VERDICT = re.compile(r"Test result: (SUCCESS|SKIP|FAILURE|ERROR)")


def run(case: Case, timeout: float = TIMEOUT) -> Outcome:
    """Boot the test kernel with `pyxen create -F -c` and read its verdict."""
    pyxen = Path(sys.executable).with_name("pyxen")
    cmd = [str(pyxen), "create", "-F", "-c", str(case.cfg)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        return Outcome("TIMEOUT", f"no verdict within {timeout:.0f} s", time.monotonic() - t0, out)
    secs = time.monotonic() - t0
    verdicts = _VERDICT.findall(out)
    lines = [l for l in out.splitlines() if l.strip()]
    if "crashed" in out or not verdicts:
        tail = "; ".join(lines[-3:])
        return Outcome("CRASH", f"exit {rc}: {tail}", secs, out)
    # the line before the verdict explains it (XTF prints the reason first)
    lines = [l.strip() for l in lines]
    idx = next(i for i, l in enumerate(lines) if "Test result:" in l)
    detail = lines[idx - 1] if idx else ""
    return Outcome(verdicts[-1], detail, secs, out)


# --- what Xen would say on this host -------------------------------------------------
def _host_cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
    from pyxen import _atomic
    return _atomic.host_cpuid(leaf, sub)


def _amd_dbext() -> bool:
    """AMD's debug-breakpoint address-mask extension (CPUID 0x80000001 ECX[26])."""
    return _host_cpuid(0x80000000)[0] >= 0x80000001 and bool(_host_cpuid(0x80000001)[2] >> 26 & 1)


@dataclass(frozen=True)
class Expect:
    """What a test may end with here. skip_ok: SKIP is what Xen gives on this
    host too. differs: where pyxen must differ from Xen, the verdict it then
    ends with and the only Fail/Error lines it may print (regexes)."""
    skip_ok: object = False    # bool, or a function of the host -> bool
    why: str = ""              # one line: why SKIP / the difference
    differs: tuple[str, ...] = ()
    verdict: str = "FAILURE"   # the verdict a known difference ends with

    def allowed(self) -> set[str]:
        ok = self.skip_ok() if callable(self.skip_ok) else self.skip_ok
        return {"SUCCESS", "SKIP"} if ok else {"SUCCESS"}

    def accepts(self, out: "Outcome") -> bool:
        if out.result in self.allowed():
            return True
        if not self.differs or out.result != self.verdict:
            return False
        complaints = {l.strip() for l in out.output.splitlines()
                      if re.match(r"\s*(Fail|Error)\b", l)}
        return bool(complaints) and all(any(re.search(p, c) for p in self.differs)
                                        for c in complaints)


# PVM runs the guest at CPL3 with the host's CR4 and does not load the
# guest's %dr7 here (measured: neither KVM_SET_DEBUGREGS nor
# KVM_SET_GUEST_DEBUG breakpoints fire), so these two properties of real
# hardware cannot be given to a PV guest on this KVM.
NO_HW_BREAKPOINTS = "PVM here never fires the guest's data breakpoints (KVM_SET_DEBUGREGS is accepted, no #DB comes)"

EXPECT: dict[str, Expect] = {
    "argo": Expect(True, "Xen 4.17 is built without Argo by default (CONFIG_ARGO=n): argo_op is -ENOSYS"),
    "cpuid-faulting": Expect(True, "PV CPUID faulting needs it in hardware (Xen copies the host's "
                                   "MSR_PLATFORM_INFO); pyxen offers none: PVM runs CPL3 CPUID natively"),
    "xsa-167": Expect(True, "PV superpages were removed from Xen (4.9): MMUEXT_MARK_SUPER is -EOPNOTSUPP"),
    "xsa-444": Expect(lambda: not _amd_dbext(), "needs AMD DBEXT (CPUID 0x80000001 ECX[26]), absent on this host"),
    "debug-regs": Expect(why=NO_HW_BREAKPOINTS,
                         differs=(r"^Fail: Single write to %dr7 failed to latch$",)),
    "xsa-260": Expect(why=NO_HW_BREAKPOINTS, verdict="ERROR",
                      differs=(r"^Error checking breakpoint$",)),
    "pv-fsgsbase": Expect(why="PVM keeps the host's CR4.FSGSBASE while the guest runs: "
                              "{RD,WR}{FS,GS}BASE never #UD in a guest here",
                          differs=(r"^Fail: Testing '(rd|wr)(fs|gs)base'$",)),
}


def expectation(name: str) -> Expect:
    return EXPECT.get(name.split("~")[0], Expect())
