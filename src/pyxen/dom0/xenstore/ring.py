"""One guest's xenstore ring page (docs/misc/xenstore-ring.txt).

Layout of the 4 KiB page (``struct xenstore_domain_interface``)::

    0     req[1024]      guest -> xenstored bytes
    1024  rsp[1024]      xenstored -> guest bytes (replies, watch events)
    2048  req_cons  u32  2052 req_prod u32
    2056  rsp_cons  u32  2060 rsp_prod u32
    2064  server_features u32   2068 connection u32   2072 error u32

Indexes are free-running u32 byte counters; byte ``x`` of a stream lives at
``x % 1024``.  The producer writes data, then advances its index; the
consumer reads data, then advances its index; either side signals the event
channel after moving an index.

Wiring: build the transport when the guest's page is mapped (or use
``XenStoreServer.attach_ring``), call :meth:`RingTransport.kick` whenever
the guest signals its xenstore event channel, and give it a ``notify``
callable that signals the guest back.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from typing import Callable, Optional

from ...hv.abi import (XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_RECONNECTION,
                       XENSTORE_SERVER_FEATURE_ERROR, XENSTORE_CONNECTED, XENSTORE_RECONNECT,
                       XENSTORE_ERROR_NONE, XENSTORE_ERROR_COMM, XENSTORE_ERROR_RINGIDX,
                       XENSTORE_ERROR_PROTO, XenstoreDomainInterface)
from .protocol import Connection, ProtocolError
from .store import XenStore

__all__ = [
    "RingTransport",
    "RING_SIZE", "REQ_OFFSET", "RSP_OFFSET", "REQ_CONS", "REQ_PROD",
    "RSP_CONS", "RSP_PROD", "SERVER_FEATURES", "CONNECTION", "ERROR",
    "FEATURE_RECONNECTION", "FEATURE_ERROR", "FEATURE_WATCH_DEPTH",
    "CONNECTED", "RECONNECT",
    "ERROR_NONE", "ERROR_COMM", "ERROR_RINGIDX", "ERROR_PROTO",
]

log = logging.getLogger("pyxen.xenstored")

_P = XenstoreDomainInterface
RING_SIZE = XENSTORE_RING_SIZE
REQ_OFFSET = _P.req.offset
RSP_OFFSET = _P.rsp.offset
REQ_CONS = _P.req_cons.offset
REQ_PROD = _P.req_prod.offset
RSP_CONS = _P.rsp_cons.offset
RSP_PROD = _P.rsp_prod.offset
SERVER_FEATURES = _P.server_features.offset
CONNECTION = _P.connection.offset
ERROR = _P.error.offset
_PAGE_MIN = ctypes.sizeof(_P)

FEATURE_RECONNECTION = XENSTORE_SERVER_FEATURE_RECONNECTION
FEATURE_ERROR = XENSTORE_SERVER_FEATURE_ERROR
FEATURE_WATCH_DEPTH = 4          # newer Xen's; not in 4.17's xs_wire.h

CONNECTED = XENSTORE_CONNECTED
RECONNECT = XENSTORE_RECONNECT

ERROR_NONE = XENSTORE_ERROR_NONE
ERROR_COMM = XENSTORE_ERROR_COMM
ERROR_RINGIDX = XENSTORE_ERROR_RINGIDX
ERROR_PROTO = XENSTORE_ERROR_PROTO

_MASK = 0xFFFFFFFF


#: requests one connection may have performed per turn before the others
#: get theirs (the server's lock is released between turns)
TURN_REQUESTS = 8


class RingTransport:
    """Serves one domain's xenstore ring.

    ``page`` is a writable buffer of (at least) the 4096-byte shared page:
    a memoryview, mmap slice or bytearray.  ``notify()`` must signal the
    guest's xenstore event channel; it is called after the transport moved
    an index (requests consumed and/or responses produced), from whichever
    thread serviced the ring.

    :meth:`kick` is safe to call from any thread, any time (spuriously
    too).  With a ``scheduler`` (set by :class:`~.server.XenStoreServer`
    while its loop runs) it only hands the ring to the server, which
    serves every connection in turn (:meth:`service_input`, at most
    ``turn_requests`` requests a turn), writes the journal and then the
    replies (:meth:`service_output`).  Without one, kick serves the ring
    itself, turn after turn, releasing the lock in between.

    An unprivileged domain's requests are not read while it has
    ``outstanding`` requests unanswered (counting the watch events its
    requests caused that still wait in some queue) or while it is over its
    memory quota, as xenstored does.  When the response ring is full the
    rest stays queued and goes out later (the guest signals after
    consuming).  A guest that corrupts the indexes or sends an oversized
    message gets the ring's error field set and is ignored until it asks
    for a reconnection.
    """

    def __init__(self, store: XenStore, domid: int, page, notify: Callable[[], None],
                 *, privileged: Optional[bool] = None,
                 lock: Optional[threading.RLock] = None,
                 before_output: Optional[Callable[[], None]] = None,
                 on_activity: Optional[Callable[["RingTransport"], None]] = None,
                 features: int = FEATURE_RECONNECTION | FEATURE_ERROR | FEATURE_WATCH_DEPTH,
                 turn_requests: int = TURN_REQUESTS):
        mv = memoryview(page)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if mv.readonly:
            raise ValueError("ring page must be writable")
        if len(mv) < _PAGE_MIN:
            raise ValueError(f"ring page too small ({len(mv)} bytes)")
        self.page = mv
        # the seven u32 fields from req_cons on, as native 32-bit words so
        # each index is read and written with one aligned access
        self._words = mv[REQ_CONS:_PAGE_MIN].cast("I")
        self.domid = domid
        self.store = store
        self.notify = notify
        self.lock = lock if lock is not None else threading.RLock()
        self.before_output = before_output
        self.on_activity = on_activity
        self.turn_requests = max(1, int(turn_requests))
        #: set by the server while its loop runs: scheduler(transport)
        self.scheduler: Optional[Callable[["RingTransport"], None]] = None
        self.conn = Connection(store, domid, privileged, name=f"dom{domid}-ring")
        self.conn.client.persist_watches = True
        saved = store.saved_ring_watches.pop(domid, None)
        if saved:                       # re-attached after a daemon restart
            self.conn.client.watches.extend(saved)
            self.conn.client.watch_mem += sum(len(w.path) + len(w.token) for w in saved)
        self.error = ERROR_NONE
        self.closed = False
        self._busy = False
        self._again = False
        self.kicks = 0
        self.turns = 0
        # features are advertised before any data moves, and never cleared
        self._put(SERVER_FEATURES, self._get(SERVER_FEATURES) | features)

    # -------------------------------------------------------------- page

    def _get(self, off: int) -> int:
        return self._words[(off - REQ_CONS) >> 2]

    def _put(self, off: int, value: int) -> None:
        self._words[(off - REQ_CONS) >> 2] = value & _MASK

    # -------------------------------------------------------------- api

    def kick(self) -> None:
        """The guest signalled us (or we have output to deliver)."""
        self.kicks += 1
        sched = self.scheduler
        if sched is not None and not self.closed:
            sched(self)
            return
        with self.lock:
            if self._busy:          # re-entered from notify() or a hook
                self._again = True
                return
            self._busy = True
        consumed = False
        try:
            while True:
                with self.lock:
                    self._again = False
                    n, more = self._input_turn()
                    consumed |= n > 0
                    if self.conn.has_output():
                        if self.before_output is not None:
                            self.before_output()
                        self.service_output()
                        # replies went out: more requests may be read now
                        more = more or self.can_read()
                    if not (more or self._again):
                        self._busy = False
                        break
        except BaseException:
            with self.lock:
                self._busy = False
            raise
        if consumed and self.on_activity is not None:
            with self.lock:
                self.on_activity(self)

    def flush(self) -> None:
        """Push queued replies / watch events (same as :meth:`kick`)."""
        self.kick()

    def reset(self) -> None:
        """Reset the connection (re-INTRODUCE): empty both rings, drop
        partial messages, queued output, watches and transactions."""
        with self.lock:
            if self.closed:
                return
            self.conn.reset()
            for off in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
                self._put(off, 0)
            self._put(ERROR, ERROR_NONE)
            self.error = ERROR_NONE
            self._put(CONNECTION, CONNECTED)
            self.notify()

    def close(self) -> None:
        """Stop serving the ring and forget the connection's state."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.conn.close()
                try:
                    self._words.release()
                    self.page.release()     # lets the owner close an mmap
                except BufferError:
                    pass

    @property
    def has_output(self) -> bool:
        return self.conn.has_output()

    def has_input(self) -> bool:
        """Are request bytes waiting in the ring?"""
        if self.closed or self.error:
            return False
        return self._get(REQ_CONS) != self._get(REQ_PROD)

    def can_read(self) -> bool:
        """May a request be read now (xenstored's domain_can_read)?  False
        for an unprivileged domain with ``outstanding`` requests unanswered
        or over its memory quota."""
        if self.closed or self.error or not self.has_input():
            return False
        client = self.conn.client
        if client.privileged:
            return True
        if (self.conn.replies_queued + client.events_pending
                >= self.store.quotas["outstanding"]):
            return False
        return not self.store.over_memory_quota(self.domid)

    # ---------------------------------------------------------- internals

    def _fail(self, err: int) -> None:
        log.warning("dom%d: xenstore ring error %d, connection ignored", self.domid, err)
        self.error = err
        self._put(ERROR, err)
        self.conn.reset()

    def service_input(self, budget: Optional[int] = None) -> bool:
        """One turn (call with the lock held): read and perform up to
        ``budget`` (default ``turn_requests``) requests.  Returns True when
        the turn ended on the budget with more requests readable."""
        n, more = self._input_turn(budget)
        return more

    def _input_turn(self, budget: Optional[int] = None) -> tuple[int, bool]:
        if self.closed:
            return 0, False
        if self._get(CONNECTION) == RECONNECT:
            self.reset()
            return 0, False
        if self.error:
            return 0, False
        self.turns += 1
        budget = self.turn_requests if budget is None else budget
        done = 0
        moved = False
        try:
            while done < budget:
                if not self.can_read():
                    return done, False
                # one message at a time (the header, then the rest), so the
                # limits apply between messages
                while True:
                    cons, prod = self._get(REQ_CONS), self._get(REQ_PROD)
                    avail = (prod - cons) & _MASK
                    if avail > RING_SIZE:
                        self._fail(ERROR_RINGIDX)
                        self.notify()
                        return done, False
                    if not avail:
                        return done, False
                    start = cons % RING_SIZE
                    n = min(avail, self.conn.wanted(), RING_SIZE - start)
                    data = bytes(self.page[REQ_OFFSET + start:REQ_OFFSET + start + n])
                    self._put(REQ_CONS, cons + n)
                    moved = True
                    try:
                        got = self.conn.feed(data)
                    except ProtocolError as e:
                        log.warning("dom%d: %s", self.domid, e)
                        self._fail(ERROR_PROTO)
                        self.notify()
                        return done, False
                    if got:
                        break
                done += self.conn.process_pending(1)
            return done, self.can_read()
        finally:
            if moved and not self.error:
                # the guest may wait for room in the request ring
                self.notify()

    def service_output(self) -> bool:
        """Write queued replies and events that may leave into the response
        ring (call with the lock held); returns True if some remain."""
        if self.closed or self.error:
            return False
        if self._get(CONNECTION) == RECONNECT:
            self.reset()
            return False
        if not self.conn.has_ready_output():
            return self.conn.has_output()
        cons, prod = self._get(RSP_CONS), self._get(RSP_PROD)
        used = (prod - cons) & _MASK
        if used > RING_SIZE:
            self._fail(ERROR_RINGIDX)
            self.notify()
            return False
        space = RING_SIZE - used
        wrote = False
        while space:
            start = prod % RING_SIZE
            chunk = self.conn.peek_output(min(space, RING_SIZE - start))
            if not chunk:
                break
            self.page[RSP_OFFSET + start:RSP_OFFSET + start + len(chunk)] = chunk
            self.conn.consume_output(len(chunk))
            prod = (prod + len(chunk)) & _MASK
            space -= len(chunk)
            wrote = True
        if wrote:
            # data is in place before the index moves (program order;
            # x86 keeps stores ordered)
            self._put(RSP_PROD, prod)
            self.notify()
        return self.conn.has_output()
