"""Python client for pyxend's API (the CLI uses it too).

    from pyxen.toolstack.client import Client
    c = Client()                 # connects to $PYXEN_RUN_DIR or /run/pyxen
    c.call("list")
"""
from __future__ import annotations

from pathlib import Path

from . import paths
from .rpc import Connection, RpcError


class DaemonUnavailable(Exception):
    pass


class Client:
    def __init__(self, run_dir: Path | None = None, timeout: float | None = 60.0):
        self.run_dir = Path(run_dir) if run_dir else paths.run_dir()
        sock = paths.api_socket(self.run_dir)
        try:
            self.conn = Connection.connect(sock, timeout=timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonUnavailable(f"pyxend is not running (nothing listens on {sock}); "
                                    "start it with `pyxend`") from None
        except PermissionError:
            raise DaemonUnavailable(f"no permission to use {sock}: run as root or join the "
                                    "pyxen group") from None
        except OSError as e:
            raise DaemonUnavailable(f"cannot reach pyxend at {sock}: {e.strerror}") from None

    def call(self, method: str, **params):
        return self.conn.call(method, **params)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def daemon_running(run_dir: Path | None = None) -> bool:
    try:
        Client(run_dir, timeout=5).close()
        return True
    except DaemonUnavailable:
        return False


__all__ = ["Client", "DaemonUnavailable", "RpcError", "daemon_running"]
