"""docs/commands.md's table of xl's subcommands: every one of Xen 4.17's
has a row saying whether pyxen has it, and why not where it has not."""
from __future__ import annotations

import argparse
import subprocess
import re

from pyxen import docgen
from pyxen.cli import build_parser


def test_every_xl_subcommand_has_a_status():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    have = set(sub.choices)
    table = docgen.parity_table(have)
    rows = re.findall(r"^\| ([a-z0-9-]+) \| (has|partial|no|n/a) \| (.*) \|$", table, re.M)
    assert [r[0] for r in rows] == docgen.XL_COMMANDS and len(rows) == 92
    for name, status, note in rows:
        assert (name in have) == (status in ("has", "partial")), name
        if status != "has":
            assert note, f"{name}: a status other than 'has' says what or why"
    assert set(docgen.PARTIAL) <= have          # 'partial' notes only for commands pyxen has
    assert f"pyxen has {sum(r[1] in ('has', 'partial') for r in rows)} of xl's 92" in table


def test_man_page_and_bash_completion_come_from_the_parser():
    out = docgen.outputs()
    man = out[docgen.DOCS / "man" / "pyxen.1"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert man.startswith(".TH PYXEN 1 ")
    assert [line[4:] for line in man.splitlines() if line.startswith(".SS ")] == list(sub.choices)
    assert out[docgen.DOCS / "man" / "pyxend.8"].startswith(".TH PYXEND 8 ")
    script = out[docgen.DOCS / "bash-completion" / "pyxen"]

    def complete(*words):
        prog = script + f"\nCOMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n" \
            "_pyxen; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        return sorted(r.stdout.split())

    assert complete("xl", "block-") == ["block-attach", "block-detach", "block-list"]
    assert complete("pyxen", "block-attach", "--") == \
        sorted(o for a in sub.choices["block-attach"]._actions for o in a.option_strings
               if o.startswith("--"))
    assert complete("pyxen", "-v", "uptim") == ["uptime"]

