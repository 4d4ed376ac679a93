"""Drive a guest's shell through its Xen console (tests and benchmarks):
wait for output, type commands, collect results. `GuestShell` boots a domain
in this process; `ConsoleShell` attaches to a domain pyxend runs, as
`pyxen console` does."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
import threading
import time

from .domconfig import DomainConfig
from .builder import LocalServices, build_domain, close_domain

PROMPT = "pyxen:"


class ShellSession(ABC):
    """Console output collected in `out`; subclasses deliver it (`_sink`),
    type keys (`type`) and set `result` when the guest has ended."""

    def __init__(self):
        self.out = bytearray()
        self.cond = threading.Condition()
        self.result = None

    def _sink(self, data: bytes) -> None:
        with self.cond:
            self.out += data
            self.cond.notify_all()

    def _ended(self, result) -> None:
        with self.cond:
            self.result = result
            self.cond.notify_all()

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120, start: int = 0) -> re.Match:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.text, start)
                if m:
                    return m
                if self.result is not None:
                    raise AssertionError(f"guest ended ({self.result}) waiting for {pattern!r}:\n"
                                         + self.text[-3000:])
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}:\n" + self.text[-3000:])
                self.cond.wait(left)

    @abstractmethod
    def type(self, data: str) -> None:
        """Send keystrokes to the guest's console."""

    def run(self, cmd: str, timeout: float = 60) -> str:
        """Run a shell command; returns its output."""
        marker = f"__done_{time.monotonic_ns()}__"
        start = len(self.text)        # a position in the text (UTF-8 output: not len(out))
        self.type(f"{cmd}; echo {marker[:7]}''{marker[7:]}\r")
        m = self.wait_for("(?<!')" + re.escape(marker) + r"\r?\n", timeout, start)
        body = self.text[start:m.start()].replace("\r", "")
        typed = marker[:7] + "''" + marker[7:]
        echo = body.rfind(typed)                      # the shell echoing our command line
        if echo >= 0:
            body = body[echo + len(typed):]
        return body.strip()

    def quiet(self) -> None:
        """Turn off echo, prompt and line wrapping so run() sees only output."""
        self.type("stty -echo cols 4000; PS1=\r")
        time.sleep(0.5)

    def settle(self, timeout: float = 180) -> None:
        """Wait for the shell, quiet it and keep kernel messages off the console."""
        self.wait_for(PROMPT, timeout=timeout)
        self.quiet()
        self.type("dmesg -n 1\r")             # kernel messages stay in dmesg, off the console
        out = self.run("seq 1 3 | wc -l")
        if out != "3":
            raise AssertionError(f"unexpected output from the first command: {out!r}")


class GuestShell(ShellSession):
    def __init__(self, images, vcpus=1, memory=256, extra="console=hvc0", cfg_lines=(),
                 restore: str | None = None):
        """images: anything with .kernel and .initrd paths; cfg_lines: more
        xl.cfg lines (disk = [...], vif = [...]); restore: a save file the
        domain is made from instead (savefile.py)."""
        super().__init__()
        text = (f'name = "linux-test"\nkernel = "{images.kernel}"\nramdisk = "{images.initrd}"\n'
                f'extra = "{extra}"\nmemory = {memory}\nvcpus = {vcpus}\n'
                + "".join(line + "\n" for line in cfg_lines))
        self.cfg = DomainConfig.from_text(text)
        reader = None
        if restore is not None:
            from .savefile import SaveReader
            reader = SaveReader(restore)
        try:
            self.dom = build_domain(self.cfg, LocalServices(self._sink), console_io=self._sink,
                                    restore=reader)
        finally:
            if reader is not None:
                reader.close()
        self.thread = threading.Thread(target=lambda: self._ended(self.dom.run()), daemon=True)
        self.thread.start()

    def type(self, data: str) -> None:
        self.dom.dom0.console.feed(data.encode())

    def wait_end(self, timeout: float = 60):
        self.thread.join(timeout)
        assert self.result is not None, "the domain did not end:\n" + self.text[-2000:]
        return self.result

    def close(self) -> None:
        if self.result is None:
            self.dom.destroy()
            self.thread.join(30)
        close_domain(self.dom)


class ConsoleShell(ShellSession):
    """The console of a domain pyxend runs (its history first, then live)."""

    def __init__(self, dom: str, run_dir=None):
        from .client import Client
        super().__init__()
        self.client = Client(run_dir, timeout=30)
        conn = self.client.conn
        conn.send({"id": 1, "method": "console", "params": {"dom": str(dom)}})
        reply = conn.recv()
        if reply is None or "error" in reply:
            raise RuntimeError(f"cannot attach to the console of {dom}: {reply}")
        self.sock = conn.sock
        self.sock.settimeout(None)
        if conn.buf:
            self._sink(bytes(conn.buf))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._ended("console closed")
                return
            self._sink(data)

    def type(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
