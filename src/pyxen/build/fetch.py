"""Fetch a file out of a Debian package, with a local cache.

Used to get real guest material (a Debian kernel, a static busybox) for tests
and examples without shipping it.  The package is downloaded with
``apt-get download`` and unpacked with ``dpkg-deb -x`` under::

    <cache_dir>/debian/<package>/<version>/   (the unpacked tree)

Nothing is downloaded when the cache already holds a matching file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FetchError",
    "PackageInfo",
    "default_cache_dir",
    "apt_package_info",
    "fetch_debian_package_file",
    "find_cached",
]


class FetchError(RuntimeError):
    """A Debian package could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    size: int  # bytes of the .deb
    depends: tuple[str, ...]  # first alternative of each dependency, without version


def default_cache_dir() -> Path:
    """``$PYXEN_CACHE`` if set, else ``~/.cache/pyxen``."""
    env = os.environ.get("PYXEN_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "pyxen"


def _say(msg: str) -> None:
    print(f"pyxen: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise FetchError(f"{cmd[0]} is not available on this machine (needed to fetch Debian packages)") from e


def _parse_record(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # first record only
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _depends(value: str) -> tuple[str, ...]:
    out = []
    for dep in value.split(","):
        first = dep.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            out.append(name)
    return tuple(out)


_updated = False


def apt_package_info(package: str, *, allow_update: bool = True) -> PackageInfo:
    """Candidate version, size and dependencies of *package* from the apt cache.

    Runs ``apt-get update`` once (per process) when apt knows nothing of it.
    """
    global _updated
    for attempt in range(2):
        res = _run(["apt-cache", "show", "--no-all-versions", package])
        rec = _parse_record(res.stdout) if res.returncode == 0 else {}
        if rec.get("Version"):
            return PackageInfo(
                name=rec.get("Package", package),
                version=rec["Version"],
                size=int(rec.get("Size", "0") or 0),
                depends=_depends(rec.get("Depends", "")) + _depends(rec.get("Pre-Depends", "")),
            )
        if attempt == 0 and allow_update and not _updated:
            _say("apt does not know " + package + ": running apt-get update")
            upd = _run(["apt-get", "update"])
            _updated = True
            if upd.returncode != 0:
                raise FetchError(f"apt-get update failed: {upd.stderr.strip()[-500:]}")
            continue
        break
    raise FetchError(f"Debian package {package!r} not found by apt-cache ({res.stderr.strip()[-300:]})")


def _match(root: Path, member_glob: str) -> Path | None:
    pattern = member_glob.lstrip("/")
    hits = sorted(p for p in root.glob(pattern) if p.is_file() or p.is_symlink())
    return hits[-1] if hits else None


def find_cached(package: str, member_glob: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached file for (*package*, *member_glob*), without any network or apt access."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    link = base / "debian" / package / "provider"
    candidates = [base / "debian" / package]
    if link.is_file():
        candidates.insert(0, base / "debian" / link.read_text().strip())
    for pkgdir in candidates:
        if not pkgdir.is_dir():
            continue
        for vdir in sorted((d for d in pkgdir.iterdir() if d.is_dir() and not d.name.startswith(".")), reverse=True):
            hit = _match(vdir, member_glob)
            if hit is not None:
                return hit
    return None


def _download(info: PackageInfo, dest: Path) -> Path:
    """``apt-get download`` *info* into *dest* with a progress display; returns the .deb."""
    mb = info.size / 1e6
    _say(f"downloading Debian package {info.name} {info.version} ({mb:.1f} MB) into {dest}")
    cmd = ["apt-get", "download", "-q", f"{info.name}={info.version}"]
    proc = subprocess.Popen(cmd, cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []

    def drain(stream) -> None:
        out.append(stream.read())

    threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
    for t in threads:
        t.start()

    def done_bytes() -> int:
        total = 0
        for p in dest.rglob("*"):
            try:
                if p.is_file():
                    total += p.stat().st_size
            except OSError:
                pass
        return total

    try:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        console = Console(stderr=True)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=not console.is_terminal,
        ) as progress:
            task = progress.add_task(info.name, total=info.size or None)
            while proc.poll() is None:
                progress.update(task, completed=done_bytes())
                time.sleep(0.1)
            progress.update(task, completed=done_bytes())
    except ImportError:  # pragma: no cover - rich is a declared dependency
        proc.wait()
    for t in threads:
        t.join()
    if proc.returncode != 0:
        raise FetchError(f"apt-get download {info.name}={info.version} failed: {''.join(out).strip()[-500:]}")
    debs = sorted(dest.glob("*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {info.name} produced no .deb file")
    _say(f"downloaded {debs[-1].name} ({debs[-1].stat().st_size / 1e6:.1f} MB)")
    return debs[-1]


def _fetch_one(info: PackageInfo, base: Path) -> Path:
    """Download and unpack one package version; returns the unpacked tree (cached)."""
    pkgdir = base / "debian" / info.name
    vdir = pkgdir / re.sub(r"[^A-Za-z0-9.+~-]", "_", info.version)
    if vdir.is_dir():
        return vdir
    pkgdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pkgdir, prefix=".tmp-") as tmp:
        dl = Path(tmp) / "download"
        dl.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(dl, 0o777)  # lets apt's sandbox user write there
        deb = _download(info, dl)
        tree = Path(tmp) / "tree"
        res = _run(["dpkg-deb", "-x", str(deb), str(tree)])
        if res.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb.name} failed: {res.stderr.strip()[-500:]}")
        try:
            os.rename(tree, vdir)
        except OSError:
            if not vdir.is_dir():  # another process won the race: use its copy
                raise
    return vdir


def fetch_debian_package_file(
    package: str,
    member_glob: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    follow_depends: bool = True,
) -> Path:
    """Path of the file matching *member_glob* (e.g. ``"boot/vmlinuz-*"``) in *package*.

    The cache is consulted first; otherwise the candidate version is resolved
    with ``apt-cache``, downloaded with ``apt-get download`` and unpacked with
    ``dpkg-deb -x``.  When the package itself has no such file (a
    metapackage like ``linux-image-cloud-amd64``) and *follow_depends* is
    true, its dependencies whose names start with the same word (``linux-``)
    are fetched in turn and the first one that has it is remembered.
    Raises :class:`FetchError` on failure.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    hit = find_cached(package, member_glob, base)
    if hit is not None:
        return hit
    info = apt_package_info(package)
    tree = _fetch_one(info, base)
    hit = _match(tree, member_glob)
    if hit is not None:
        return hit
    if follow_depends:
        stem = package.split("-", 1)[0] + "-"
        for dep in info.depends:
            if not dep.startswith(stem) or dep == package:
                continue
            dinfo = apt_package_info(dep)
            dtree = _fetch_one(dinfo, base)
            hit = _match(dtree, member_glob)
            if hit is not None:
                (base / "debian" / package / "provider").write_text(dinfo.name + "\n")
                return hit
    raise FetchError(f"no file matching {member_glob!r} in Debian package {package} {info.version}")
