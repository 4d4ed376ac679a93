"""Xen's own test kernels (XTF), every pv64 test, one case each: each must
end as Xen would end it on this host (SUCCESS; SKIP only where xtf.EXPECT
says why). FAILURE, ERROR, a crash or a timeout fail the case."""
from __future__ import annotations

import pytest

from conformance import xtf

_DEST = xtf.build()
CASES = xtf.cases(_DEST)


def test_all_pv64_tests_found():
    # XTF's pv64 set at the shared source's commit: 39 tests, pv-iopl in two variations
    assert len({c.name.split("~")[0] for c in CASES}) >= 39
    assert all(c.cfg.exists() for c in CASES), [str(c.cfg) for c in CASES if not c.cfg.exists()]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_xtf(kvm, case):
    exp = xtf.expectation(case.name)
    out = xtf.run(case)
    tail = "\n".join(out.output.splitlines()[-25:])
    assert exp.accepts(out), (
        f"XTF {case.name}: {out.result} ({out.detail}) after {out.seconds:.1f} s"
        + (f"; acceptable only as: {exp.why}" if exp.why else "")
        + f"\n--- console ---\n{tail}")
