"""Errors raised while inspecting and unpacking guest kernel images."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

__all__ = ["KernelImageError"]


class KernelImageError(Exception):
    """A kernel image (ELF, bzImage, payload) cannot be used to build a PV guest.

    The message always starts with the (base) name of the offending file,
    followed by a plain statement of what is wrong, e.g.::

        vmlinuz: not an ELF file or bzImage
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        name = Path(self.path).name if self.path else "<kernel image>"
        super().__init__(f"{name}: {problem}")
