"""A guest (or a tool) must not be able to hold the store (issue 13).

Each test attacks the way the attacker did: a guest that keeps its ring
full from another process (as a vCPU would, without the GIL) while the
event-channel thread kicks, a tool flooding its socket, a transaction
writing one node 200,000 times, a guest filling the store, a guest whose
writes fire events at a watcher that does not read.  Assertions count
requests and bytes, never seconds.
"""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pyxen.dom0.xenstore import protocol as P
from pyxen.dom0.xenstore.protocol import Connection
from pyxen.dom0.xenstore.ring import RingTransport
from pyxen.dom0.xenstore.server import _BATCH_REQUESTS, XenStoreServer
from pyxen.dom0.xenstore.store import (
    DEFAULT_QUOTAS, DEFAULT_SOFT_QUOTAS, XenStore, XenStoreError)

from xs_helpers import HDR, GuestRing, XsSocket

OUTSTANDING = DEFAULT_QUOTAS["outstanding"]


def errname(fn, *a):
    with pytest.raises(XenStoreError) as e:
        fn(*a)
    return e.value.name


def home(store, domid, perms=None):
    d0 = store.new_client(0)
    store.mkdir(d0, f"/local/domain/{domid}")
    store.set_perms(d0, f"/local/domain/{domid}", perms or [f"n{domid}"])
    store.remove_client(d0)


# ------------------------------------------------------------ the floods

RING_FLOODER = textwrap.dedent("""
    import mmap, os, struct, sys
    fd, efd = int(sys.argv[1]), int(sys.argv[2])
    page = mmap.mmap(fd, 4096)
    words = memoryview(page)[2048:2064].cast("I")  # req_cons req_prod rsp_cons rsp_prod
    body = b"data/flood\\0" + b"x" * 40
    req = struct.pack("<IIII", 11, 7, 0, len(body)) + body
    pos = 0
    one = (1).to_bytes(8, "little")
    while True:
        moved = False
        cons, prod = words[0], words[1]
        space = 1024 - ((prod - cons) & 0xFFFFFFFF)
        while space:
            start = prod % 1024
            n = min(space, 1024 - start, len(req) - pos)
            page[start:start + n] = req[pos:pos + n]
            pos = (pos + n) % len(req)
            prod = (prod + n) & 0xFFFFFFFF
            space -= n
            moved = True
        words[1] = prod
        if words[3] != words[2]:          # throw the replies away
            words[2] = words[3]
            moved = True
        if moved:
            os.write(efd, one)            # the guest's event channel notify
""")

SOCKET_FLOODER = textwrap.dedent("""
    import socket, struct, sys, threading
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    body = b"/flood/node\\0" + b"y" * 40
    batch = b"".join(struct.pack("<IIII", 11, i, 0, len(body)) + body for i in range(64))
    def drain():
        while s.recv(1 << 16):
            pass
    threading.Thread(target=drain, daemon=True).start()
    print("ready", flush=True)
    while True:
        s.sendall(batch)
""")


class RingFlood:
    """A guest in another process keeping its xenstore ring full, and the
    event-channel thread that kicks the ring on each of its notifies (as
    pyxend's does)."""

    def __init__(self, srv: XenStoreServer, domid: int):
        self.fd = os.memfd_create("xs-ring")
        os.ftruncate(self.fd, 4096)
        self.map = mmap.mmap(self.fd, 4096)
        self.efd = os.eventfd(0)
        self.t = srv.attach_ring(domid, memoryview(self.map), lambda: None)
        self.stop = threading.Event()
        self.kicker = threading.Thread(target=self._evtchn, daemon=True)
        self.kicker.start()
        self.proc = subprocess.Popen([sys.executable, "-c", RING_FLOODER,
                                      str(self.fd), str(self.efd)],
                                     pass_fds=(self.fd, self.efd))

    def _evtchn(self):
        while not self.stop.is_set():
            try:
                os.eventfd_read(self.efd)
            except OSError:
                return
            self.t.kick()

    @property
    def served(self) -> int:
        return self.t.conn.requests

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.stop.set()
        os.eventfd_write(self.efd, 1)
        self.kicker.join(5)
        os.close(self.efd)
        os.close(self.fd)


@pytest.fixture
def served(tmp_path):
    """A started server whose turns are recorded: (server, turns list)."""
    made = []

    def make(**kw):
        srv = XenStoreServer(XenStore(), str(tmp_path / "sock"),
                             state_file=str(tmp_path / "state.json"), **kw)
        turns = []
        real = srv._turn

        def turn(who):
            n, more = real(who)
            turns.append(n)
            return n, more
        srv._turn = turn
        srv.start()
        made.append(srv)
        return srv, turns
    yield make
    for srv in made:
        srv.close()


class ReplyMeter:
    """Records ``count()`` in the server's thread each time one of
    ``conn``'s replies has been handed to its transport (socket or ring):
    with the count taken just before the request was sent, the number of
    flood requests performed while the request waited, free of the test
    thread's own wake-up delays."""

    def __init__(self, conn: Connection, count):
        self.marks: list[int] = []
        real = conn.consume_output

        def consume_output(n):
            before = conn.replies_queued
            real(n)
            for _ in range(before - conn.replies_queued):
                self.marks.append(count())
        conn.consume_output = consume_output

    def mark(self, i: int) -> int:
        """The count when the i-th reply (from 0) left: it may be read by
        the client before the server thread records it."""
        assert_eventually(lambda: len(self.marks) > i)
        return self.marks[i]


def test_guest_keeping_its_ring_full_does_not_hold_the_store(served):
    """One guest kept its ring full and held the global lock for 6 s while
    others waited.  Now each connection gets turns of at most
    turn_requests requests: a tool's and another guest's requests wait for
    a bounded number of the flooder's, however long it floods."""
    srv, turns = served()
    with srv.access() as store:
        home(store, 5)
        home(store, 6)
    tool = XsSocket(srv.socket_path)
    assert tool.request(P.XS_READ, b"/tool\0") == (P.XS_READ, b"")
    page = bytearray(4096)
    t6 = srv.attach_ring(6, page, lambda: None)
    other = GuestRing(page, t6.kick)
    flood = RingFlood(srv, 5)
    try:
        assert_eventually(lambda: flood.served > 500)
        (tool_conn,) = [c.conn for c in srv._clients.values()]
        tool_meter = ReplyMeter(tool_conn, lambda: flood.served)
        other_meter = ReplyMeter(t6.conn, lambda: flood.served)
        waits = []
        for i in range(30):
            before = flood.served
            assert tool.request(P.XS_WRITE, b"/tool/x\0%d" % i) == (P.XS_WRITE, b"OK\0")
            waits.append(tool_meter.mark(i) - before)
            before = flood.served
            assert other.request(P.XS_WRITE, b"data/y\0%d" % i) == (P.XS_WRITE, b"OK\0")
            waits.append(other_meter.mark(i) - before)
        total = flood.served
        tool.close()
    finally:
        flood.close()
    # the flood went on all along, and nobody waited for more than the
    # flooder's outstanding requests of two batches
    assert total > 500 + 60
    assert max(waits) <= 2 * OUTSTANDING, waits
    # the lock was never held for more than one turn's requests
    assert max(turns) <= srv.turn_requests
    with srv.access() as store:
        assert store.read(store.new_client(0), "/local/domain/6/data/y") == b"29"


def test_tool_flooding_its_socket_gets_turns_too(served):
    """A dom0 tool pipelining writes as fast as it can (no quota applies to
    dom0) gets turns like everybody else: another tool waits for at most
    two batches of its requests."""
    srv, turns = served()
    victim = XsSocket(srv.socket_path)
    assert victim.request(P.XS_READ, b"/tool\0") == (P.XS_READ, b"")
    (victim_conn,) = [c.conn for c in srv._clients.values()]
    proc = subprocess.Popen([sys.executable, "-c", SOCKET_FLOODER, srv.socket_path],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"

        def flooder():
            conns = [c.conn for c in list(srv._clients.values()) if c.conn.requests > 100]
            return conns[0] if conns else None
        assert_eventually(lambda: flooder() is not None)
        f = flooder()
        meter = ReplyMeter(victim_conn, lambda: f.requests)
        waits = []
        for i in range(30):
            before = f.requests
            assert victim.request(P.XS_READ, b"/tool\0") == (P.XS_READ, b"")
            waits.append(meter.mark(i) - before)
        total = f.requests
    finally:
        proc.kill()
        proc.wait()
        victim.close()
    assert total > 1000
    assert max(waits) <= 2 * _BATCH_REQUESTS + srv.turn_requests, waits
    assert max(turns) <= srv.turn_requests


def assert_eventually(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition never became true")


# -------------------------------------------------- outstanding requests

def ring(store, domid, **kw):
    page = bytearray(4096)
    t = RingTransport(store, domid, page, lambda: None, **kw)
    return t, GuestRing(page, t.kick)


def test_events_a_guest_causes_count_as_its_outstanding_requests():
    """Guest 5 writes nodes that guest 6 watches but never reads: as in
    xenstored, a request stays outstanding until the events it caused are
    delivered, so guest 5 stops being served after 20 of them instead of
    growing guest 6's queue (and pyxen's memory) without bound."""
    store = XenStore()
    home(store, 5, ["n5", "r6"])
    home(store, 6)
    t5, g5 = ring(store, 5)
    t6, g6 = ring(store, 6)
    assert g6.request(P.XS_WATCH, b"/local/domain/5\0w\0") == (P.XS_WATCH, b"OK\0")
    # guest 6 stops reading its ring; guest 5 writes 100 nodes, 50 bytes of
    # path each: the 1 KB response ring of guest 6 takes ~20 events
    reqs = b"".join(HDR.pack(P.XS_WRITE, i, 0, 40) + b"node%03d\0" % i + b"v" * 32
                    for i in range(100))
    sent = 0
    for _ in range(200):
        sent += g5.write_some(reqs[sent:])
        t5.kick()
        g5.pump()
        g5.messages()
    in_queue = t6.conn.events_queued
    assert t5.conn.requests <= 2 * OUTSTANDING + in_queue
    assert t5.conn.client.events_pending == in_queue <= OUTSTANDING
    assert t5.conn.requests < 100
    # guest 6 reads its ring again: guest 5 goes on
    for _ in range(500):
        g6.pump()
        g6.messages()
        t6.kick()
        sent += g5.write_some(reqs[sent:])
        t5.kick()
        g5.pump()
        g5.messages()
        if t5.conn.requests == 100:
            break
    assert t5.conn.requests == 100


def test_watch_events_to_a_guest_time_out():
    """Events queued for a guest that does not read them are dropped after
    xenstored's watch-event timeout (20 s), which frees the outstanding
    requests of whoever caused them."""
    store = XenStore()
    home(store, 5, ["n5", "r6"])
    home(store, 6)
    t5, g5 = ring(store, 5)
    t6, g6 = ring(store, 6)
    g6.request(P.XS_WATCH, b"/local/domain/5\0w\0")
    for i in range(40):
        g5.write_some(HDR.pack(P.XS_WRITE, i, 0, 8) + b"n%02d\0abc" % i)
        t5.kick()
        g5.pump()
    assert t5.conn.client.events_pending > 0
    assert t6.conn.expire_events(time.monotonic() + 1) == 0
    dropped = t6.conn.expire_events(time.monotonic() + Connection.WATCH_EVENT_TIMEOUT + 1)
    assert dropped > 0
    assert t5.conn.client.events_pending == 0
    # dom0's connections never lose events that way
    assert Connection(store, 0).event_timeout is None


# ---------------------------------------------------------- transactions

def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_transaction_writing_one_node_200k_times_stays_small():
    """200k writes of one node inside one transaction queued 200k events
    and took +40 MB.  A transaction keeps one entry per node and one
    pending event per node, as C xenstored does."""
    store = XenStore()
    home(store, 5)
    store.journal = []
    watcher = Connection(store, 0)
    watcher.receive(HDR.pack(P.XS_WATCH, 1, 0, 9) + b"/local\0t\0")
    watcher.take_output()
    g = Connection(store, 5)
    g.receive(HDR.pack(P.XS_TRANSACTION_START, 1, 0, 1) + b"\0")
    tx = int(g.take_output()[16:-1])

    def writes(first, n):
        for i in range(first, first + n, 500):
            g.receive(b"".join(HDR.pack(P.XS_WRITE, j, tx, 16) + b"data/x\0%09d" % j
                               for j in range(i, i + 500)))
            out = g.take_output()
            assert len(out) == 500 * (16 + 3)      # 500 replies "OK"
    writes(0, 2000)
    t = g.client.transactions[tx]
    shape = (len(t.overlay), len(t.seen), len(t.accessed), len(t.events), t.mem)
    rss = rss_kb()
    writes(2000, 200_000)
    grown_kb = rss_kb() - rss
    assert (len(t.overlay), len(t.seen), len(t.accessed), len(t.events), t.mem) == shape
    assert len(t.events) == 1 and len(t.overlay) <= 4
    assert grown_kb < 4096, f"RSS grew by {grown_kb} kB"
    assert not store.journal                   # nothing reaches the store before commit
    g.receive(HDR.pack(P.XS_TRANSACTION_END, 2, tx, 2) + b"T\0")
    assert g.take_output()[16:] == b"OK\0"
    assert store.read(store.new_client(0), "/local/domain/5/data/x") == b"%09d" % 201_999
    # one event at commit, a handful of journal records
    assert watcher.take_output().count(b"/local/domain/5/data/x\0t\0") == 1
    assert len(store.journal) <= 4


def test_transaction_over_the_node_limit_fails_as_in_xenstored():
    """The 1025th node accessed in a transaction is refused (ENOSPC) and the
    transaction is doomed: its commit answers ENOMEM."""
    store = XenStore()
    home(store, 5)
    d0 = store.new_client(0)
    for i in range(1100):
        store.write(d0, f"/local/domain/5/n{i}", b"")
    g = store.new_client(5)
    tx = store.transaction_start(g)
    for i in range(DEFAULT_QUOTAS["transaction-nodes"]):
        store.read(g, f"n{i}", tx)
    assert errname(store.read, g, "n1099", tx) == "ENOSPC"
    assert errname(store.transaction_end, g, tx, True) == "ENOMEM"
    # dom0 is exempt
    tx = store.transaction_start(d0)
    for i in range(1100):
        store.read(d0, f"/local/domain/5/n{i}", tx)
    store.transaction_end(d0, tx, True)


def test_transactions_are_bounded_by_the_memory_quota():
    """Ten transactions each copying 1024 large nodes would hold ~20 MB;
    the copies count against the domain's memory (2.5 MB), so the guest
    gets ENOMEM well before."""
    store = XenStore()
    home(store, 5)
    g = store.new_client(5)
    names = [f"d{i // 100}/n{i % 100}" for i in range(900)]
    for name in names:
        store.write(g, name, b"v" * 1000)
    hard = DEFAULT_QUOTAS["memory"]
    txs = [store.transaction_start(g) for _ in range(10)]
    failed = 0
    for tx in txs:
        try:
            for name in names:
                store.read(g, name, tx)
        except XenStoreError as e:
            assert e.name == "ENOMEM"
            failed += 1
    assert failed
    assert store.domain_memory(5) < hard
    for tx in txs:
        store.transaction_end(g, tx, False)
    assert store.domain_memory(5) == store.node_mem[5]


# ---------------------------------------------------------------- quotas

def test_quota_defaults_are_xen_4_17s():
    assert DEFAULT_QUOTAS == {
        "nodes": 1000, "watches": 128, "transactions": 10, "outstanding": 20,
        "transaction-nodes": 1024, "memory": 2 * 1024 * 1024 + 512 * 1024,
        "node-size": 2048, "path-max": 2048, "permissions": 5}
    assert DEFAULT_SOFT_QUOTAS == {"memory": 2 * 1024 * 1024}


def test_guest_filling_the_store_gets_enomem_and_is_bounded():
    """A guest writing long paths and big values until refused: it stops at
    its memory quota (ENOMEM), never past it; dom0 is not limited."""
    store = XenStore()
    home(store, 5)
    g = store.new_client(5)
    hard = DEFAULT_QUOTAS["memory"]
    seg = "/".join(["d" * 100] * 19)       # 1918 chars below the home
    errors = set()
    written = 0
    for i in range(1000):
        try:
            # at most 100 children a directory: its record stays < 2048
            store.write(g, f"{seg}/{i // 100}/{i % 100:02d}", b"v" * 1800)
            written += 1
        except XenStoreError as e:
            errors.add(e.name)
            break
    assert errors == {"ENOMEM"}
    assert store.domain_memory(5) < hard
    assert 0 < written < 1000
    # it is below the quota, so it is still served: it can clean up
    store.rm(g, seg.split("/")[0])
    assert store.domain_memory(5) < 1000
    # dom0 is not limited, not even writing nodes the guest owns
    d0 = store.new_client(0)
    for i in range(800):
        store.write(d0, f"/local/domain/5/{seg}/{i // 100}/{i % 100:02d}", b"v" * 1800)
    assert store.domain_memory(5) > hard
    assert errname(store.write, g, "more", b"") == "ENOMEM"


def test_guest_over_its_memory_quota_is_not_read_and_gets_no_events():
    store = XenStore({"memory": 20000})
    home(store, 5)
    t, g = ring(store, 5)
    assert g.request(P.XS_WATCH, b"data\0w\0") == (P.XS_WATCH, b"OK\0")
    g.messages()
    d0 = store.new_client(0)
    # dom0 makes nodes the guest owns until it is over its quota
    for i in range(40):
        store.write(d0, f"/local/domain/5/data/n{i}", b"x" * 1000)
    assert store.over_memory_quota(5)
    before = t.conn.requests
    g.write_some(HDR.pack(P.XS_READ, 99, 0, 5) + b"data\0")
    t.kick()
    assert t.conn.requests == before                 # stalled, as xenstored
    dropped = t.conn.dropped_events
    store.write(d0, "/local/domain/5/data/n0", b"y")
    assert t.conn.dropped_events > dropped           # no events while over
    # dom0 removes the nodes: the guest is served again
    store.rm(d0, "/local/domain/5/data")
    t.kick()
    assert t.conn.requests == before + 1


def test_watch_quota_answers_e2big_and_node_size_counts_like_xenstored():
    store = XenStore()
    home(store, 5)
    g = store.new_client(5)
    for i in range(128):
        store.watch(g, "x", f"t{i}")
    assert errname(store.watch, g, "x", "over") == "E2BIG"
    # a record of 2048 bytes or more is refused: header 24 + 8 per permission
    store.write(g, "leaf", b"v" * (2048 - 24 - 8 - 1))
    assert errname(store.write, g, "leaf", b"v" * (2048 - 24 - 8)) == "ENOSPC"


def test_control_reports_memory_and_soft_quota():
    store = XenStore()
    home(store, 5)
    g = store.new_client(5)
    store.write(g, "a", b"12345")
    d0 = store.new_client(0)
    text = store.control(d0, ["quota", "5"])
    assert "memory" in text and "outstanding" in text
    assert str(store.domain_memory(5)) in text
    assert "memory" in store.control(d0, ["quota-soft"])
    assert store.control(d0, ["quota", "set", "memory", "0"]) == "OK"
    assert not store.over_memory_quota(5, 1 << 30)
