#!/usr/bin/env python3
"""Build the pyxen mini-OS test guests (freestanding 64-bit Xen PV kernels).

Module use::

    from guests.build import build_guest, list_guests, build_native_compute
    path = build_guest("hello")              # -> guests/out/hello.elf

CLI::

    python3 guests/build.py                  # all guests + native_compute
    python3 guests/build.py hello traps      # just these

A guest is ``guests/<name>.c``; it is compiled together with every source in
``guests/runtime/`` and linked with ``guests/minios.ld``.  Outputs are
rebuilt only when an input (sources, headers, linker script, this file) is
newer than the output.  Outputs are written to a temporary name and renamed,
so concurrent builds of the same guest are safe.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

GUESTS_DIR = pathlib.Path(__file__).resolve().parent
RUNTIME_DIR = GUESTS_DIR / "runtime"
INCLUDE_DIR = GUESTS_DIR / "include"
LINKER_SCRIPT = GUESTS_DIR / "minios.ld"
DEFAULT_OUTDIR = GUESTS_DIR / "out"

# Host programs that live next to the guests but are not guests.
NATIVE_PROGRAMS = ("native_compute",)

CC = os.environ.get("PYXEN_GUEST_CC", "gcc")

CFLAGS = [
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Werror",
    "-ffreestanding",
    "-nostdlib",
    "-nostdinc",
    "-fno-builtin",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-common",
    "-fcf-protection=none",
    "-mno-red-zone",          # Xen pushes bounce frames right below %rsp
    "-mcmodel=kernel",
    "-mno-mmx",
    "-mno-sse",
    "-mno-sse2",
    "-mgeneral-regs-only",
]

LDFLAGS = [
    "-no-pie",
    "-static",
    "-nostdlib",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,noexecstack",
    "-Wl,-T," + str(LINKER_SCRIPT),
]

NATIVE_CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-mgeneral-regs-only"]


class BuildError(RuntimeError):
    """A compiler or linker invocation failed."""


def _gcc_include_dir() -> str:
    out = subprocess.run([CC, "-print-file-name=include"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return out


def list_guests() -> list[str]:
    """Names of all guests (guests/<name>.c, excluding host programs)."""
    return sorted(p.stem for p in GUESTS_DIR.glob("*.c")
                  if p.stem not in NATIVE_PROGRAMS)


def _runtime_sources() -> list[pathlib.Path]:
    return sorted(list(RUNTIME_DIR.glob("*.S")) + list(RUNTIME_DIR.glob("*.c")))


def _dependencies(main_source: pathlib.Path) -> list[pathlib.Path]:
    deps = [main_source, LINKER_SCRIPT, pathlib.Path(__file__).resolve()]
    deps += _runtime_sources()
    deps += sorted(RUNTIME_DIR.glob("*.h"))
    deps += sorted(INCLUDE_DIR.glob("*.h"))
    return deps


def _up_to_date(target: pathlib.Path, deps: list[pathlib.Path]) -> bool:
    try:
        t = target.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    return all(d.stat().st_mtime_ns <= t for d in deps)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout}{proc.stderr}")


def _atomic_build(target: pathlib.Path, cmd_for) -> None:
    """Run cmd_for(tmp_path) and rename the result onto target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        _run(cmd_for(tmp))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_guest(name: str, outdir: pathlib.Path | None = None) -> pathlib.Path:
    """Compile guests/<name>.c with the runtime into <outdir>/<name>.elf."""
    source = GUESTS_DIR / f"{name}.c"
    if name in NATIVE_PROGRAMS or not source.is_file():
        raise ValueError(f"unknown guest {name!r}; known: {', '.join(list_guests())}")
    outdir = pathlib.Path(outdir) if outdir is not None else DEFAULT_OUTDIR
    target = outdir / f"{name}.elf"
    deps = _dependencies(source)
    if _up_to_date(target, deps):
        return target

    includes = ["-isystem", _gcc_include_dir(), "-I", str(INCLUDE_DIR), "-I", str(RUNTIME_DIR)]
    sources = [str(p) for p in _runtime_sources()] + [str(source)]

    def cmd(tmp: str) -> list[str]:
        return [CC, *CFLAGS, *includes, *sources, *LDFLAGS, "-o", tmp]

    _atomic_build(target, cmd)
    return target


def build_native_compute(outdir: pathlib.Path | None = None) -> pathlib.Path:
    """Build the hosted comparison program guests/native_compute.c."""
    source = GUESTS_DIR / "native_compute.c"
    outdir = pathlib.Path(outdir) if outdir is not None else DEFAULT_OUTDIR
    target = outdir / "native_compute"
    deps = [source, pathlib.Path(__file__).resolve(), *sorted(INCLUDE_DIR.glob("*.h"))]
    if _up_to_date(target, deps):
        return target

    def cmd(tmp: str) -> list[str]:
        return [CC, *NATIVE_CFLAGS, "-I", str(INCLUDE_DIR), str(source), "-o", tmp]

    _atomic_build(target, cmd)
    return target


def main(argv: list[str]) -> int:
    names = argv or [*list_guests(), *NATIVE_PROGRAMS]
    status = 0
    for name in names:
        try:
            if name == "native_compute":
                path = build_native_compute()
            else:
                path = build_guest(name)
        except (BuildError, ValueError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
