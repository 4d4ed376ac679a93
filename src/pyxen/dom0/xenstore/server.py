"""xenstored's server: tool connections on a Unix socket plus guest rings,
served by one thread around one store.

``XenStoreServer(store, socket_path)`` is embeddable: ``start()`` runs the
loop in a background thread, ``serve_forever()`` runs it in the calling
thread, ``stop()`` ends it.  Socket clients are dom0 (privileged), as with
Xen's xenstored.  ``attach_ring(domid, page, notify)`` serves a guest's
ring page; the returned :class:`~.ring.RingTransport`'s ``kick()`` is what
the event channel handler calls.

The loop serves connections in turn, like C xenstored's main loop: each
connection with requests waiting (a kicked ring, a socket with data) gets
a turn of at most ``turn_requests`` requests, round-robin, with
``server.lock`` taken for the turn only, so a guest that keeps its ring
full (or a tool that floods its socket) delays the others by one turn per
round, never holds the store.  After a batch of rounds (at most
``_BATCH_REQUESTS`` requests) the changes are journalled and fsynced once
(group commit), then the batch's replies and watch events are sent.

All store access happens under ``server.lock`` (a re-entrant lock), so
other threads may use the store through :meth:`XenStoreServer.access`.
With a state file (``--state``), the state is a snapshot plus an
append-only log (:mod:`.persist`): no reply acknowledging a change leaves
before the change is on disk (``save_delay=0``, the default), or the log is
fsynced at most ``save_delay`` seconds later; the log is compacted into a
new snapshot when it outgrows the last one, and when the server stops.

Command line (``pyxen-xenstored``)::

    pyxen-xenstored --socket PATH [--state FILE] [-F] [--pid-file FILE]
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Union

from .persist import COMPACT_MIN, StateLog, load_or_create
from .protocol import Connection, ProtocolError
from .ring import TURN_REQUESTS, RingTransport
from .domains import DEFAULT_QUOTAS, DEFAULT_SOFT_QUOTAS, QUOTA_ALIASES
from .store import XenStore

__all__ = ["XenStoreServer", "main", "DEFAULT_SOCKET"]

log = logging.getLogger("pyxen.xenstored")

DEFAULT_SOCKET = "/var/run/xenstored/socket"
#: stop reading from a socket client while this much output waits for it
_HIGH_WATER = 1 << 20
#: ... or while this much of its input waits to be performed
_INPUT_HIGH_WATER = 1 << 16
#: requests performed (by all connections) before a group commit
_BATCH_REQUESTS = 256

#: ring_provider(domid, gfn, evtchn) -> (page, notify) or None
RingProvider = Callable[[int, int, int], Optional[tuple]]


class _SocketClient:
    __slots__ = ("sock", "conn", "events", "turns")

    def __init__(self, sock: socket.socket, conn: Connection):
        self.sock = sock
        self.conn = conn
        self.events = 0
        self.turns = 0


_Served = Union[RingTransport, _SocketClient]


class XenStoreServer:
    """See the module docstring.

    ``ring_provider`` (optional) is asked for ``(page, notify)`` when a tool
    sends INTRODUCE for a domain; when it returns one, the ring is attached
    (replacing any previous one for that domain).  RELEASE detaches it.
    """

    def __init__(self, store: Optional[XenStore] = None,
                 socket_path: Optional[str] = None, *,
                 state_file: Optional[str] = None,
                 save_delay: float = 0.0,
                 ring_provider: Optional[RingProvider] = None,
                 socket_mode: int = 0o600,
                 turn_requests: int = TURN_REQUESTS,
                 compact_min: int = COMPACT_MIN):
        self.store = store if store is not None else load_or_create(state_file)
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.state_file = os.fspath(state_file) if state_file is not None else None
        self.save_delay = float(save_delay)
        self.ring_provider = ring_provider
        self.socket_mode = socket_mode
        self.turn_requests = max(1, int(turn_requests))
        self.lock = threading.RLock()
        self.rings: dict[int, RingTransport] = {}
        self._clients: dict[int, _SocketClient] = {}
        self._listener: Optional[socket.socket] = None
        self._socket_ino: Optional[tuple] = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._running = threading.Event()
        self._dirty_since: Optional[float] = None
        self._nclients = 0
        # connections with requests to perform, in turn order
        self._ready: deque = deque()
        self._queued: set = set()
        # rings kicked from other threads, for the loop to pick up
        self._kicked: list[RingTransport] = []
        self._kick_lock = threading.Lock()
        # rings with requests they may not read yet (outstanding, memory)
        self._stalled: set = set()
        #: the snapshot + log, with a state file
        self.journal: Optional[StateLog] = (
            StateLog(self.state_file, self.store, compact_min) if self.state_file else None)
        self.store.on_introduce = self._on_introduce
        self.store.on_release = self._on_release

    # ---------------------------------------------------------- lifetime

    def bind(self) -> None:
        """Create the listening socket (idempotent).  The socket file
        appears only once it accepts connections."""
        if self._listener is not None or self.socket_path is None:
            return
        path = self.socket_path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)       # stale socket from a dead daemon
            else:
                raise OSError(errno.EADDRINUSE, f"a xenstored already serves {path}")
            finally:
                probe.close()
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = os.path.join(os.path.dirname(path) or ".",
                           f".{os.path.basename(path)}.{os.getpid()}.tmp")
        if len(os.fsencode(tmp)) >= 107:
            tmp = None
        try:
            lst.bind(tmp or path)
            os.chmod(tmp or path, self.socket_mode)
            lst.listen(64)
            if tmp:
                os.rename(tmp, path)
        except BaseException:
            lst.close()
            if tmp and os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        lst.setblocking(False)
        st = os.stat(path)
        self._socket_ino = (st.st_dev, st.st_ino)
        self._listener = lst
        self._sel.register(lst, selectors.EVENT_READ, "listener")
        log.info("listening on %s", path)

    def start(self) -> None:
        """Serve in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("server already running")
        self.bind()
        self._stopping = False
        self._thread = threading.Thread(target=self.serve_forever,
                                        name="pyxen-xenstored", daemon=True)
        self._thread.start()
        self._running.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (from any thread, or a signal handler), save the
        state, close socket clients and the listening socket.  Attached
        rings stay usable through kick()."""
        self._stopping = True
        self._wake()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            self._thread = None

    def close(self) -> None:
        """stop() and detach every ring."""
        self.stop()
        with self.lock:
            self._shutdown()
            for domid in list(self.rings):
                self.detach_ring(domid)
            if self.journal is not None:
                try:
                    self.journal.close()
                except OSError as e:
                    log.error("cannot save state to %s: %s", self.state_file, e)
        if self._wake_r < 0:
            return
        try:
            self._sel.close()
        except (OSError, ValueError):
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> "XenStoreServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    @property
    def _loop_running(self) -> bool:
        return self._running.is_set() and not self._stopping

    # --------------------------------------------------------------- rings

    def attach_ring(self, domid: int, page, notify: Callable[[], None], *,
                    privileged: Optional[bool] = None,
                    introduce: bool = True) -> RingTransport:
        """Serve ``domid``'s xenstore ring in ``page`` (4096 writable bytes);
        ``notify()`` signals the guest.  Replaces an existing transport for
        the domain.  With ``introduce`` the domain is marked introduced
        (firing @introduceDomain the first time)."""
        with self.lock:
            old = self.rings.pop(domid, None)
            if old is not None:
                old.close()
            t = RingTransport(self.store, domid, page, notify,
                              privileged=privileged, lock=self.lock,
                              before_output=self._commit_now,
                              on_activity=self._ring_activity,
                              turn_requests=self.turn_requests)
            self._gate(t.conn)
            self.rings[domid] = t
            if introduce:
                self.store.mark_introduced(domid)
            if self._loop_running:
                t.scheduler = self._schedule
            t.kick()
            self._deliver_pending()
            return t

    def detach_ring(self, domid: int) -> None:
        with self.lock:
            t = self.rings.pop(domid, None)
            if t is not None:
                t.scheduler = None
                t.close()
                self._stalled.discard(t)

    def _schedule(self, t: RingTransport) -> None:
        """A ring was kicked while the loop runs: it gets a turn there."""
        with self._kick_lock:
            first = not self._kicked
            self._kicked.append(t)
        if first or threading.current_thread() is not self._thread:
            self._wake()

    def _take_kicked(self) -> None:
        with self._kick_lock:
            kicked, self._kicked = self._kicked, []
        for t in kicked:
            if not t.closed:
                self._stalled.discard(t)
                self._make_ready(t)

    def _make_ready(self, who: _Served) -> None:
        if who not in self._queued:
            self._queued.add(who)
            self._ready.append(who)

    @contextmanager
    def access(self):
        """Use the store from another thread (the toolstack, the
        hypervisor reporting a domain shutdown...)::

            with server.access() as store:
                store.domain_shutdown(5)

        The block runs under the server lock; afterwards changes are on
        disk and the watch events they fired are on their way."""
        try:
            with self.lock:
                try:
                    yield self.store
                finally:
                    if self.journal is not None:
                        self.journal.drain()
        finally:
            if self.journal is not None and self.save_delay <= 0:
                self._sync()
            with self.lock:
                self._deliver_pending()

    def _deliver_pending(self) -> None:
        """After store activity outside the loop: push ring output, and
        wake the loop for socket output."""
        if self._loop_running:
            for t in self.rings.values():
                if t.has_output:
                    self._schedule(t)
            if threading.current_thread() is not self._thread:
                self._wake()
            return
        self._commit_now()
        for t in list(self.rings.values()):
            if t.has_output:
                t.kick()

    def _on_introduce(self, domid: int, gfn: int, evtchn: int, first: bool) -> None:
        if self.ring_provider is not None:
            res = self.ring_provider(domid, gfn, evtchn)
            if res is not None:
                page, notify = res
                self.attach_ring(domid, page, notify, introduce=False)
                return
        t = self.rings.get(domid)
        if t is not None and not first:
            t.reset()

    def _on_release(self, domid: int) -> None:
        self.detach_ring(domid)

    def _ring_activity(self, transport: RingTransport) -> None:
        # a guest request served outside the loop may have fired watches
        # of other clients
        for t in list(self.rings.values()):
            if t is not transport and t.has_output:
                t.kick()
        if self._loop_running and threading.current_thread() is not self._thread:
            if any(c.conn.has_output() for c in self._clients.values()):
                self._wake()

    # ---------------------------------------------------------- persistence

    def _gate(self, conn: Connection) -> None:
        """Hold the connection's replies until the journal covers them."""
        if self.journal is not None and self.save_delay <= 0:
            journal = self.journal
            conn.durable = lambda: journal.durable_lsn

    def _sync(self) -> None:
        try:
            self.journal.sync()
        except OSError as e:
            # nothing may be acknowledged that is not on disk: replies wait
            log.error("cannot write the state log of %s: %s", self.state_file, e)
            return
        self._dirty_since = None

    def _commit_now(self) -> None:
        """Journal what changed so far and put it on disk (lock held)."""
        if self.journal is not None:
            self.journal.drain()
            if self.save_delay <= 0:
                self._sync()

    def flush_state(self) -> None:
        """Put every change made so far on disk."""
        if self.journal is None:
            return
        with self.lock:
            self.journal.drain()
        self._sync()

    def _commit(self) -> None:
        """The group commit at the end of a batch (lock not held)."""
        j = self.journal
        if j is None:
            return
        with self.lock:
            j.drain()
        if not j.pending:
            return
        if self.save_delay <= 0:
            self._sync()
        elif self._dirty_since is None:
            self._dirty_since = time.monotonic()
        elif time.monotonic() - self._dirty_since >= self.save_delay:
            self._sync()
        if j.wants_compaction():
            self.compact()

    def compact(self) -> None:
        """Write a new snapshot and drop the log it makes redundant (the
        snapshot is written without the lock)."""
        if self.journal is None:
            return
        try:
            with self.lock:
                job = self.journal.begin_compaction()
            self.journal.finish_compaction(job)
        except OSError as e:
            log.error("cannot compact the state of %s: %s", self.state_file, e)

    def _timeout(self) -> Optional[float]:
        """How long the loop may sleep."""
        if self._ready or self._kicked:
            return 0
        timeout = None
        j = self.journal
        if j is not None and j.pending:
            if self.save_delay <= 0:
                timeout = 1.0                   # a failed fsync is tried again
            else:
                if self._dirty_since is None:
                    self._dirty_since = time.monotonic()
                timeout = max(0.0, self._dirty_since + self.save_delay - time.monotonic())
        if any(t.conn.timed_events for t in self.rings.values()):
            timeout = 1.0 if timeout is None else min(timeout, 1.0)
        return timeout

    # ----------------------------------------------------------- the loop

    def serve_forever(self) -> None:
        self.bind()
        with self.lock:
            for t in self.rings.values():
                t.scheduler = self._schedule
                self._make_ready(t)
            self._running.set()
        try:
            while not self._stopping:
                with self.lock:
                    self._update_interest()
                    timeout = self._timeout()
                events = self._sel.select(timeout)
                with self.lock:
                    for key, mask in events:
                        self._handle(key, mask)
                self._batch()
        finally:
            with self.lock:
                self._running.clear()
                for t in self.rings.values():
                    t.scheduler = None
                self._ready.clear()
                self._queued.clear()
                with self._kick_lock:
                    self._kicked.clear()
                self._shutdown()
            # requests that arrived meanwhile are served by kick() now
            for t in list(self.rings.values()):
                t.kick()

    def _batch(self) -> None:
        """Rounds of turns over the connections with requests, then one
        group commit, then the replies."""
        self._take_kicked()
        done = 0
        while self._ready and done < _BATCH_REQUESTS and not self._stopping:
            for _ in range(len(self._ready)):
                who = self._ready.popleft()
                self._queued.discard(who)
                with self.lock:
                    n, more = self._turn(who)
                done += n
                if more:
                    self._make_ready(who)
            self._take_kicked()
        self._commit()
        with self.lock:
            self._flush()
            now = time.monotonic()
            for t in self.rings.values():
                if t.conn.timed_events:
                    t.conn.expire_events(now)
            # rings that could not read may do so now
            for t in list(self._stalled):
                if t.closed or not t.has_input():
                    self._stalled.discard(t)
                elif t.can_read():
                    self._stalled.discard(t)
                    self._make_ready(t)

    def _turn(self, who: _Served) -> tuple[int, bool]:
        """One connection's turn (lock held): (requests performed, more
        waiting)."""
        if isinstance(who, RingTransport):
            n, more = who._input_turn()
            if not more and who.has_input() and not who.closed:
                self._stalled.add(who)
            return n, more
        if who.conn.closed:
            return 0, False
        who.turns += 1
        n = who.conn.process_pending(self.turn_requests)
        return n, who.conn.pending_requests > 0

    def _flush(self) -> None:
        """Send what may leave (lock held)."""
        for t in list(self.rings.values()):
            if t.has_output:
                t.service_output()
                if t.has_input() and t.can_read():
                    self._stalled.discard(t)
                    self._make_ready(t)
        for client in list(self._clients.values()):
            if client.conn.has_ready_output():
                self._send(client)

    def _handle(self, key, mask) -> None:
        if key.data is None:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            return
        if key.data == "listener":
            self._accept()
            return
        client: _SocketClient = key.data
        if client.conn.closed:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(client)
                return
            if data:
                try:
                    client.conn.feed(data)
                except ProtocolError as e:
                    log.warning("%s: %s; closing", client.conn.name, e)
                    self._drop(client)
                    return
                if client.conn.pending_requests:
                    self._make_ready(client)
        if mask & selectors.EVENT_WRITE:
            self._send(client)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.error("accept: %s", e)
                return
            sock.setblocking(False)
            self._nclients += 1
            conn = Connection(self.store, 0, True, name=f"socket{self._nclients}")
            self._gate(conn)
            client = _SocketClient(sock, conn)
            self._clients[sock.fileno()] = client
            client.events = selectors.EVENT_READ
            self._sel.register(sock, selectors.EVENT_READ, client)

    def _send(self, client: _SocketClient) -> None:
        conn = client.conn
        while conn.has_ready_output():
            data = conn.peek_output(65536)
            if not data:
                return
            try:
                n = client.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(client)
                return
            conn.consume_output(n)
            if n < len(data):
                return

    def _drop(self, client: _SocketClient) -> None:
        fd = client.sock.fileno()
        self._clients.pop(fd, None)
        try:
            self._sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        client.conn.close()

    def _update_interest(self) -> None:
        for client in list(self._clients.values()):
            want = 0
            conn = client.conn
            if conn.output_size < _HIGH_WATER and conn.input_size < _INPUT_HIGH_WATER:
                want |= selectors.EVENT_READ
            if conn.has_ready_output():
                want |= selectors.EVENT_WRITE
            if want != client.events:
                self._sel.modify(client.sock, want, client)
                client.events = want

    def _shutdown(self) -> None:
        # requests already received are answered (and their changes kept)
        for client in list(self._clients.values()):
            client.conn.process_pending()
        self.flush_state()
        for client in list(self._clients.values()):
            try:
                client.sock.setblocking(True)
                client.sock.settimeout(0.2)
                while client.conn.has_ready_output():
                    data = client.conn.peek_output(65536)
                    client.conn.consume_output(client.sock.send(data))
            except OSError:
                pass
            self._drop(client)
        if self.journal is not None and self.journal.has_records:
            self.compact()
        if self._listener is not None:
            try:
                self._sel.unregister(self._listener)
            except (KeyError, ValueError):
                pass
            self._listener.close()
            self._listener = None
            try:
                st = os.stat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._socket_ino:
                    os.unlink(self.socket_path)
            except OSError:
                pass


# ------------------------------------------------------------------ daemon

def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="pyxen-xenstored",
        description="pyxen's xenstore daemon: serves the Xen store on a Unix "
                    "socket (for dom0 tools) and on guest rings.")
    p.add_argument("--socket", "-s", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"Unix socket to listen on (default {DEFAULT_SOCKET}); "
                        "tools find it through XENSTORED_PATH")
    p.add_argument("--state", metavar="FILE",
                   help="state file: a snapshot loaded at start, with the changes "
                        "since in FILE.log.N (appended, fsynced before the reply); "
                        "compacted into FILE as the log grows and at exit")
    p.add_argument("-F", "--foreground", action="store_true",
                   help="stay in the foreground (default: daemonize)")
    p.add_argument("--pid-file", metavar="FILE", help="write the daemon's pid here")
    p.add_argument("--save-delay", type=float, default=0.0, metavar="SEC",
                   help="fsync the state log up to SEC seconds after a change, "
                        "acknowledging it before (default 0: each change is on disk "
                        "before its reply leaves)")
    p.add_argument("--compact-min", type=int, default=COMPACT_MIN, metavar="BYTES",
                   help="compact the state log into the snapshot once it is larger "
                        f"than BYTES and than the snapshot (default {COMPACT_MIN})")
    p.add_argument("--log-file", metavar="FILE", help="log here instead of stderr")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-vv traces every request)")
    p.add_argument("-Q", "--quota", action="append", default=[], metavar="NAME=VALUE",
                   help="set a per-domain quota, as xenstored's -Q (defaults as Xen "
                        "4.17: nodes=1000, watches=128, transactions=10, "
                        "outstanding=20, transaction-nodes=1024, memory=2621440 "
                        "(bytes, 0: off), node-size=2048, path-max=2048, "
                        "permissions=5); dom0 is exempt")
    p.add_argument("-q", "--quota-soft", action="append", default=[], metavar="NAME=VALUE",
                   help="set a soft quota (only logged when exceeded): "
                        "memory=2097152 by default")
    return p.parse_args(argv)


def _daemonize() -> int:
    """Fork into the background.  Returns the write end of a pipe to close
    (after a byte is written) once the daemon is ready; the original process
    waits for that and exits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        ok = os.read(r, 1)
        os._exit(0 if ok == b"1" else 1)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
    return w


def main(argv=None) -> int:
    args = _parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = (logging.FileHandler(args.log_file) if args.log_file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s xenstored: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False

    quotas: dict = {}
    soft: dict = {}
    for opt, given, table, known in (("--quota", args.quota, quotas, DEFAULT_QUOTAS),
                                     ("--quota-soft", args.quota_soft, soft,
                                      DEFAULT_SOFT_QUOTAS)):
        for q in given:
            name, _, value = q.partition("=")
            name = QUOTA_ALIASES.get(name, name)
            try:
                if name not in known:
                    raise ValueError(name)
                table[name] = int(value)
                if table[name] < 0:
                    raise ValueError(value)
            except ValueError:
                print(f"pyxen-xenstored: bad {opt} {q!r}", file=sys.stderr)
                return 2
    try:
        store = load_or_create(args.state, quotas or None, soft or None)
    except (OSError, ValueError) as e:
        print(f"pyxen-xenstored: cannot load state {args.state}: {e}", file=sys.stderr)
        return 1

    ready_fd = None
    if not args.foreground:
        ready_fd = _daemonize()
    try:
        server = XenStoreServer(store, args.socket, state_file=args.state,
                                save_delay=args.save_delay, compact_min=args.compact_min)
    except OSError as e:
        log.error("cannot write state %s: %s", args.state, e)
        if ready_fd is None:
            print(f"pyxen-xenstored: cannot write state {args.state}: {e}", file=sys.stderr)
        return 1
    try:
        server.bind()
    except OSError as e:
        log.error("cannot listen on %s: %s", args.socket, e)
        if ready_fd is None:
            print(f"pyxen-xenstored: cannot listen on {args.socket}: {e}", file=sys.stderr)
        return 1

    def on_signal(signum, frame):
        server.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    try:
        server.serve_forever()
        server.close()
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
