"""docs/commands.md's table of xl's subcommands: every one of Xen 4.17's
has a row saying whether pyxen has it, and why not where it has not."""
from __future__ import annotations

import argparse
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
