"""Xen's own XenStore test program, test-xenstore (tools/tests/xenstore in
Xen's tree; Debian ships it in xen-utils-4.17), against pyxen's xenstored:
the stand-alone ``pyxen-xenstored --socket`` and the one inside pyxend.
libxenstore finds the server through XENSTORED_PATH.

The binary is taken from an installed xen-utils-4.17 or else fetched by
package name with apt-get download into pyxen's cache (no install, no
services started); only libxenstore4 is needed to run it (xenstore-utils
pulls it in).  Missing, it fails the tests: like every other test here, none
of these skip.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from daemon_helpers import start_daemon
from xs_helpers import Daemon

PACKAGE = "xen-utils-4.17"
INSTALLED = Path("/usr/lib/xen-4.17/bin/test-xenstore")
TIMEOUT = 120

#: test-xenstore's tests (`test-xenstore -l`, Xen 4.17), in its order
TESTS = ["read 1", "read 2000", "write 1", "write 2000", "dir", "rm node", "rm dir",
         "ta empty", "ta empty x", "ta rmw", "ta rmw x", "ta err"]

_LINE = re.compile(r"^(?P<name>.{10}): (?P<result>.*)$")


@pytest.fixture(scope="session")
def test_xenstore() -> str:
    if INSTALLED.exists():
        return str(INSTALLED)
    from pyxen.build.fetch import FetchError, fetch_debian_package_file
    try:
        return str(fetch_debian_package_file(PACKAGE, "usr/lib/xen-4.17/bin/test-xenstore",
                                             follow_depends=False))
    except FetchError as e:
        pytest.fail(f"test-xenstore unavailable (Debian package {PACKAGE}): {e}")


@pytest.fixture(scope="module", params=["standalone", "pyxend"])
def server(request, tmp_path_factory):
    """XENSTORED_PATH of a running server of either kind (stopped at the end)."""
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "standalone":
        daemon = Daemon(d / "xs.sock", d / "xs-state.json")
        try:
            yield request.param, d / "xs.sock", lambda: daemon.proc.poll() is None
        finally:
            daemon.stop(signal.SIGTERM)
    else:
        proc = start_daemon(d)
        try:
            yield request.param, d / "xenstored.sock", lambda: proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def run(binary, server, *args):
    kind, sock, alive = server
    env = dict(os.environ, XENSTORED_PATH=str(sock))
    env.pop("XENSTORE_DOMAIN_INTERFACE", None)
    p = subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert alive(), f"{kind} xenstored died during test-xenstore {args}"
    return p


def results(stdout: str) -> dict[str, str]:
    """test-xenstore's per-test lines: name -> "<n> ns" / "avg: ..." / "failed (...)"."""
    out = {}
    for line in stdout.splitlines():
        m = _LINE.match(line)
        if m:
            out[m["name"].rstrip()] = m["result"]
    return out


def assert_passed(p, names):
    got = results(p.stdout)
    failed = {n: got.get(n, "not run") for n in names
              if not re.fullmatch(r"(avg: )?\d+ ns.*", got.get(n, ""))}
    assert not failed and p.returncode == 0, (
        f"test-xenstore failed {failed} (exit {p.returncode})\n{p.stdout}{p.stderr}")
    assert "Exhaustive transaction retries" not in p.stdout, p.stdout


def test_lists_the_tests_we_run(test_xenstore):
    p = subprocess.run([test_xenstore, "-l"], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0
    assert [line.split(":")[0].rstrip() for line in p.stdout.splitlines()] == TESTS


@pytest.mark.parametrize("name", TESTS)
def test_each(test_xenstore, server, name):
    assert_passed(run(test_xenstore, server, "-t", name), [name])


def test_whole_program(test_xenstore, server):
    """All tests in one run (it stops at the first failure), then its cleanup
    leaves nothing behind."""
    p = run(test_xenstore, server)
    assert_passed(p, TESTS)
    ls = subprocess.run(["xenstore-ls", "/local/domain/0"],
                        env=dict(os.environ, XENSTORED_PATH=str(server[1])),
                        capture_output=True, text=True, timeout=TIMEOUT)
    assert "xenstore-test" not in ls.stdout


def test_iterations(test_xenstore, server):
    assert_passed(run(test_xenstore, server, "-i", "25"), TESTS)


def test_random_order(test_xenstore, server):
    """-r: random tests for 3 s; it prints only a failure."""
    p = run(test_xenstore, server, "-r", "3")
    assert p.returncode == 0 and "failed" not in p.stdout, p.stdout + p.stderr


def test_two_programs_at_once(test_xenstore, server):
    """Two clients with their own transactions on one server."""
    kind, sock, alive = server
    env = dict(os.environ, XENSTORED_PATH=str(sock))
    env.pop("XENSTORE_DOMAIN_INTERFACE", None)
    procs = [subprocess.Popen([test_xenstore, "-i", "10"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for pr in procs:
        out, errs = pr.communicate(timeout=TIMEOUT)
        assert_passed(subprocess.CompletedProcess(pr.args, pr.returncode, out, errs), TESTS)
    assert alive()
