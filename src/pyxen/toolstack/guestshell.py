"""Drive a guest's shell through its Xen console (tests and benchmarks):
boot a domain in-process, wait for output, type commands, collect results."""
from __future__ import annotations

import re
import threading
import time

from .domconfig import DomainConfig
from .runner import make_domain
from .xlcfg import parse

PROMPT = "pyxen:"


class GuestShell:
    def __init__(self, images, vcpus=1, memory=256, extra="console=hvc0"):
        """images: anything with .kernel and .initrd paths."""
        text = (f'name = "linux-test"\nkernel = "{images.kernel}"\nramdisk = "{images.initrd}"\n'
                f'extra = "{extra}"\nmemory = {memory}\nvcpus = {vcpus}\n')
        self.cfg = DomainConfig.from_config(parse(text, "test.cfg"))
        self.out = bytearray()
        self.cond = threading.Condition()
        self.dom = make_domain(self.cfg, console=self._sink)
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sink(self, data: bytes) -> None:
        with self.cond:
            self.out += data
            self.cond.notify_all()

    def _run(self) -> None:
        self.result = self.dom.run()
        with self.cond:
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

    def type(self, data: str) -> None:
        self.dom.console_backend.feed(data.encode())

    def run(self, cmd: str, timeout: float = 60) -> str:
        """Run a shell command; returns its output."""
        marker = f"__done_{time.monotonic_ns()}__"
        start = len(self.out)
        self.type(f"{cmd}; echo {marker[:7]}''{marker[7:]}\r")
        m = self.wait_for("(?<!')" + re.escape(marker) + r"\r?\n", timeout, start)
        body = self.text[start:m.start()].replace("\r", "")
        typed = marker[:7] + "''" + marker[7:]
        echo = body.rfind(typed)                      # the shell echoing our command line
        if echo >= 0:
            body = body[echo + len(typed):]
        return body.strip()

    def wait_end(self, timeout: float = 60):
        self.thread.join(timeout)
        assert self.result is not None, "the domain did not end:\n" + self.text[-2000:]
        return self.result

    def close(self) -> None:
        if self.result is None:
            self.dom.destroy()
            self.thread.join(30)
        self.dom.close()

    def quiet(self) -> None:
        """Turn off echo, prompt and line wrapping so run() sees only output."""
        self.type("stty -echo cols 4000; PS1=\r")
        time.sleep(0.5)
