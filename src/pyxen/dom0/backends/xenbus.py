"""The xenbus device protocol, backend side (Xen's docs/misc/xenstore-paths,
public/io/xenbus.h, Linux's drivers/xen/xenbus).

Each device has two XenStore directories:

    /local/domain/0/backend/<kind>/<domid>/<devid>/    the backend's (dom0 owns it)
    /local/domain/<domid>/device/<kind>/<devid>/        the frontend's (the guest owns it)

and each side publishes its `state` there. The backend starts in InitWait with
its features written; the frontend answers with its ring references and event
channel and goes to Initialised (blkfront) or straight to Connected
(netfront); the backend then maps the rings and goes to Connected. Closing
runs the other way: either side goes to Closing, both end in Closed, and the
toolstack removes the directories when the backend's `online` is 0.

`XenbusBackend` runs that state machine on a thread of its own (XenStore
watch events are queued to it); subclasses implement `connect()` (read the
frontend's nodes, map rings, bind event channels) and `disconnect()`."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
import queue
import threading

UNKNOWN, INITIALISING, INITWAIT, INITIALISED, CONNECTED, CLOSING, CLOSED = range(7)
STATE_NAMES = {0: "Unknown", 1: "Initialising", 2: "InitWait", 3: "Initialised",
               4: "Connected", 5: "Closing", 6: "Closed", 7: "Reconfiguring",
               8: "Reconfigured"}

log = logging.getLogger("pyxen.backend")


class DeviceError(Exception):
    """The frontend gave the backend something it cannot use."""


def backend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/0/backend/{kind}/{domid}/{devid}"


def frontend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/{kind}/{devid}"


class XenbusBackend(ABC):
    kind = "?"

    def __init__(self, xs, guest, devid: int):
        self.xs = xs                       # a XenStoreServer
        self.guest = guest
        self.domid = guest.domid
        self.devid = devid
        self.be = backend_path(self.kind, self.domid, devid)
        self.fe = frontend_path(self.kind, self.domid, devid)
        self.events: queue.Queue = queue.Queue()
        self.connected = False
        self.stopping = False
        self.error: str | None = None
        self.closed = threading.Event()     # the backend reached Closed
        self.queues: list = []               # QueueWorkers while connected
        self.complaints = 0
        with xs.access() as store:
            self.client = store.new_client(0, True, sink=lambda path, token: self.events.put(path))
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"{self.kind}-{self.domid}-{devid}")

    def __repr__(self) -> str:
        return f"{self.kind} {self.domid}/{self.devid}"

    # --- XenStore helpers -------------------------------------------------------------------
    def read(self, path: str, default: str | None = None) -> str | None:
        try:
            with self.xs.lock:
                return self.xs.store.read(self.client, path).decode()
        except Exception:
            return default

    def read_fe(self, key: str, default: str | None = None) -> str | None:
        return self.read(f"{self.fe}/{key}", default)

    def read_fe_int(self, key: str, default: int | None = None) -> int:
        v = self.read_fe(key)
        if v is None:
            if default is None:
                raise DeviceError(f"frontend did not write {self.fe}/{key}")
            return default
        try:
            return int(v, 0)
        except ValueError:
            raise DeviceError(f"frontend wrote {self.fe}/{key} = {v!r}, not a number") from None

    # --- queues ------------------------------------------------------------------------------
    def queue_paths(self, key: str, max_queues: int) -> list[str]:
        """Where each queue's keys are: flat in the frontend dir for one queue
        (Linux writes multi-queue-num-queues = 1 with flat keys), else queue-N/."""
        nq = self.read_fe_int("multi-queue-num-queues", 0)
        if nq > max_queues:
            raise DeviceError(f"frontend asks for {nq} queues, {max_queues} offered")
        if nq <= 1 and self.read_fe(key) is not None:
            return [""]
        return [f"queue-{i}/" for i in range(max(nq, 1))]

    def open_queues(self, paths: list[str], make) -> None:
        """make(index, path) -> a QueueWorker for each queue; all or none."""
        from ...hv.grant import GrantError
        queues = []
        try:
            for i, q in enumerate(paths):
                try:
                    queues.append(make(i, q))
                except GrantError as e:
                    raise DeviceError(f"queue {i}: cannot map its rings: {e}") from None
        except Exception:
            for qq in queues:
                qq.close()
            raise
        self.queues = queues
        for qq in queues:
            qq.start()

    def disconnect(self) -> None:
        queues, self.queues = self.queues, []
        for qq in queues:
            qq.close()

    def stats(self) -> dict:
        out: dict = {}
        for qq in self.queues:
            for k, v in qq.stats.items():
                out[k] = out.get(k, 0) + v
        return out

    def complain(self, msg: str) -> None:
        """A request failed: logged (the first 20 per device; a guest cannot flood the log)."""
        self.complaints += 1
        if self.complaints <= 20:
            log.warning("%s: %s", self, msg)

    def write_be(self, values: dict) -> None:
        with self.xs.access() as store:
            for k, v in values.items():
                store.write(self.client, f"{self.be}/{k}", str(v).encode())

    def state(self) -> int:
        v = self.read(f"{self.be}/state")
        return int(v) if v and v.isdigit() else UNKNOWN

    def switch_state(self, st: int) -> None:
        if self.state() != st:
            self.write_be({"state": st})
        if st == CLOSED:
            self.closed.set()
        else:
            self.closed.clear()

    def fatal(self, msg: str) -> None:
        """Like xenbus_dev_fatal: say why under the backend dir, then close."""
        self.error = msg
        log.error("%s: %s", self, msg)
        try:
            self.write_be({"error": msg})
        except Exception:
            pass
        self._disconnect()
        self.switch_state(CLOSING)

    # --- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Set up and wait for the frontend. A device found Connected (pyxend
        restarted under a running guest) reconnects to the rings the frontend
        still has."""
        self.setup()
        if self.state() != CONNECTED:
            self.switch_state(INITWAIT)
        with self.xs.access() as store:
            store.watch(self.client, f"{self.fe}/state", "fe")
            store.watch(self.client, f"{self.be}/online", "online")
        self.thread.start()

    def stop(self) -> None:
        """Tear down now (the domain is gone, or a forced detach)."""
        self.stopping = True
        self.events.put(None)
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(5)
        self._disconnect()
        self.teardown()
        with self.xs.access() as store:
            store.remove_client(self.client)

    def _run(self) -> None:
        while not self.stopping:
            item = self.events.get()
            if item is None:
                return
            try:
                if isinstance(item, tuple):          # ("fatal", why) from a ring thread
                    self.fatal(f"frontend broke the ring protocol: {item[1]}")
                else:
                    self.frontend_changed()
            except Exception as e:                  # one device's failure stays its own
                log.exception("%s: backend failed", self)
                self.fatal(f"backend failure: {e}")

    def ring_failed(self, msg: str) -> None:
        """Called from a ring's thread: the device goes down, the rest carries on."""
        self.events.put(("fatal", msg))

    def frontend_state(self) -> int:
        v = self.read_fe("state")
        return int(v) if v and v.isdigit() else UNKNOWN

    def frontend_changed(self) -> None:
        fs, bs = self.frontend_state(), self.state()
        if fs in (INITIALISED, CONNECTED):
            if not self.connected and bs in (INITWAIT, CONNECTED):
                try:
                    self.connect()
                except DeviceError as e:
                    self.fatal(str(e))
                    return
                self.connected = True
                self.switch_state(CONNECTED)
        elif fs == CLOSING:
            self._disconnect()
            self.switch_state(CLOSING)
        elif fs == CLOSED or (fs == UNKNOWN and bs != INITWAIT):
            self._disconnect()
            self.switch_state(CLOSED)
        elif fs == INITIALISING and bs == CLOSED and self.read(f"{self.be}/online") == "1":
            self.error = None
            self.switch_state(INITWAIT)           # the frontend reconnects

    def request_close(self) -> None:
        """Detach asked for (xl block-detach): online=0 and Closing, so the
        frontend lets go. A frontend that never connected is not waited for."""
        self.write_be({"online": 0})
        if self.frontend_state() in (INITIALISED, CONNECTED):
            self.switch_state(CLOSING)
        else:
            self._disconnect()
            self.switch_state(CLOSED)

    def _disconnect(self) -> None:
        if self.connected:
            self.connected = False
            try:
                self.disconnect()
            except Exception:
                log.exception("%s: disconnect", self)

    # --- for subclasses ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Before InitWait: write the features the frontend reads."""

    @abstractmethod
    def connect(self) -> None:
        """The frontend is ready: read its nodes, map rings, bind event channels
        (DeviceError when they are unusable)."""

    def teardown(self) -> None:
        """Release what setup() took (files, host devices)."""
