"""Generate docs/commands.md, the command reference, from the same argparse
definitions that `--help` prints (python -m pyxen.docgen [--check])."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import build_parser
from .toolstack import daemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"


def render() -> str:
    os.environ["COLUMNS"] = "100"
    p = build_parser()
    parts = ["# pyxen command reference\n",
             "Generated from the commands' own `--help` (python -m pyxen.docgen).\n",
             "## pyxen\n", "```", p.format_help().rstrip(), "```\n"]
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        parts += [f"## pyxen {name}\n", "```", sp.format_help().rstrip(), "```\n"]
    parts += ["## pyxend\n", "```", daemon.build_parser().format_help().rstrip(), "```\n",
              "## pyxend API\n", daemon.__doc__.strip(), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    text = render()
    if check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m pyxen.docgen", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
