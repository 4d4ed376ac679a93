"""The state on disk: snapshot + append-only log with group commit.

A write used to rewrite the whole tree as JSON and fsync it under the
lock (7 ms and 377 KB per write at 3,000 nodes).  Now it appends a few
records; replies leave after the fsync covering them; a restart reads the
snapshot and the log, torn tail and all; nothing acknowledged is lost when
the daemon is killed with SIGKILL.
"""
from __future__ import annotations

import json
import random
import signal
import statistics
import threading
import time

import pytest

from pyxen.dom0.xenstore import protocol as P
from pyxen.dom0.xenstore.persist import StateLog, load_state, log_path
from pyxen.dom0.xenstore.server import XenStoreServer
from pyxen.dom0.xenstore.store import XenStore

from xs_helpers import Daemon, GuestRing, XsSocket


def nodes_of(store: XenStore, under: str = "/") -> dict:
    return {p: (v, perms) for p, v, perms in store.walk(under)}


# ------------------------------------------------------------- the cost

def big_store(n: int) -> XenStore:
    store = XenStore()
    d0 = store.new_client(0)
    for i in range(n):
        store.write(d0, f"/big/n{i:04d}", b"value-%d" % i)
    store.remove_client(d0)
    return store


def test_write_cost_stays_small_and_constant_at_3000_nodes(tmp_path):
    """The same writes against a store of 30 and one of 3,000 nodes,
    interleaved so both see the same machine: the bytes written per write
    are the same few hundred (they were the whole tree), one fsync per
    acknowledged write, and the time per write is the same."""
    servers, clients = [], []
    for n in (30, 3000):
        srv = XenStoreServer(big_store(n), str(tmp_path / f"s{n}.sock"),
                             state_file=str(tmp_path / f"s{n}.json"))
        srv.start()
        servers.append(srv)
        clients.append(XsSocket(srv.socket_path))
    try:
        for c in clients:                       # warm up
            for i in range(10):
                c.request(P.XS_WRITE, b"/big/warm%d\0x" % i)
        start = [(s.journal.bytes_written, s.journal.fsyncs) for s in servers]
        times = ([], [])
        rounds = 150
        for i in range(rounds):
            for k, c in enumerate(clients):
                t0 = time.perf_counter()
                assert c.request(P.XS_WRITE, b"/big/m%04d\0" % i + b"v" * 20) == \
                    (P.XS_WRITE, b"OK\0")
                times[k].append(time.perf_counter() - t0)
        per_write = [((s.journal.bytes_written - b0) / rounds, (s.journal.fsyncs - f0) / rounds)
                     for s, (b0, f0) in zip(servers, start)]
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.close()
    (small_bytes, small_fsyncs), (big_bytes, big_fsyncs) = per_write
    assert small_bytes == big_bytes and big_bytes < 512, per_write
    assert small_fsyncs == big_fsyncs == 1
    snapshot = (tmp_path / "s3000.json").stat().st_size
    assert snapshot > 100 * big_bytes           # what a full rewrite would cost
    ratio = statistics.median(times[1]) / statistics.median(times[0])
    print("per write", per_write, "ratio", ratio, statistics.median(times[0]))
    assert ratio < 2.0, (ratio, statistics.median(times[0]), statistics.median(times[1]))


def test_replies_wait_for_the_fsync_and_batches_share_it(tmp_path):
    """Group commit: requests served in the same batch share one fsync, and
    no reply leaves before the records of the batch are on disk."""
    srv = XenStoreServer(XenStore(), str(tmp_path / "sock"),
                         state_file=str(tmp_path / "state.json"))
    sent = []            # (lsn of the reply leaving, durable lsn then)
    srv.start()
    try:
        c = XsSocket(srv.socket_path)
        c.request(P.XS_READ, b"/\0")
        (conn,) = [x.conn for x in srv._clients.values()]
        real_consume = conn.consume_output

        def consume(n):
            sent.append((conn._out[0][3], srv.journal.durable_lsn))
            real_consume(n)
        conn.consume_output = consume
        # 200 pipelined writes in one go
        msgs = b"".join(P.encode_message(P.XS_WRITE, i, 0, b"/p/%d\0v" % i) for i in range(200))
        fsyncs = srv.journal.fsyncs
        c.send_raw(msgs)
        got = 0
        buf = b""
        while got < 200:
            buf += c.sock.recv(65536)
            while len(buf) >= 16 and len(buf) >= 16 + int.from_bytes(buf[12:16], "little"):
                buf = buf[16 + int.from_bytes(buf[12:16], "little"):]
                got += 1
        c.close()
        assert srv.journal.fsyncs - fsyncs < 200 // 4      # shared fsyncs
    finally:
        srv.close()
    assert sent and all(lsn <= durable for lsn, durable in sent)
    st = load_state(tmp_path / "state.json")
    assert len(st.directory(st.new_client(0), "/p")) == 200


# --------------------------------------------------------- kill -9 safety

def _writer(sock_path, acked: list, stop: threading.Event, errors: list):
    """Writes /w/<i> = <i>, a transaction now and then, records what was
    acknowledged, until the daemon dies."""
    try:
        c = XsSocket(str(sock_path), timeout=10)
        i = 0
        while not stop.is_set():
            if i % 10 == 9:
                t, p = c.request(P.XS_TRANSACTION_START, b"\0")
                tx = int(p[:-1])
                c.request(P.XS_WRITE, b"/t/%d\0a" % i, tx)
                c.request(P.XS_WRITE, b"/t/%d/b\0b" % i, tx)
                t, p = c.request(P.XS_TRANSACTION_END, b"T\0", tx)
                if p == b"OK\0":
                    acked.append(("tx", i))
            else:
                t, p = c.request(P.XS_WRITE, b"/w/%d\0%d" % (i, i) + b"x" * (i % 50))
                assert p == b"OK\0"
                acked.append(("w", i))
            if i % 25 == 24:
                # sent: the daemon may make it durable and die before the reply
                acked.append(("rm sent", i - 3))
                t, p = c.request(P.XS_RM, b"/w/%d\0" % (i - 3))
                assert p == b"OK\0"
                acked.append(("rm", i - 3))
            i += 1
    except (OSError, ConnectionError, AssertionError) as e:
        errors.append(e)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_acknowledged_writes_survive_kill_9(tmp_path, seed):
    """The daemon is killed with SIGKILL at a random moment while a tool
    writes (with a small log-compaction threshold, so compactions happen
    during the run): after a restart every acknowledged write, removal and
    transaction is there."""
    rng = random.Random(seed)
    sock, state = tmp_path / "xs.sock", tmp_path / "xs-state.json"
    d = Daemon(sock, state, ["--compact-min", "20000"])
    acked: list = []
    stop = threading.Event()
    errors: list = []
    w = threading.Thread(target=_writer, args=(sock, acked, stop, errors), daemon=True)
    w.start()
    deadline = time.monotonic() + 60
    target = rng.randint(300, 900)
    while len(acked) < target and time.monotonic() < deadline:
        time.sleep(0.001)
    d.stop(signal.SIGKILL)
    stop.set()
    w.join(15)
    assert len(acked) >= target
    logs = sorted(p.name for p in tmp_path.glob("xs-state.json.log.*"))
    assert int(logs[-1].rsplit(".", 1)[-1]) > 1, logs        # it did compact
    st = load_state(state)
    d0 = st.new_client(0)
    removed = {i for kind, i in acked if kind == "rm"}
    rm_sent = {i for kind, i in acked if kind == "rm sent"}    # acknowledged or not
    for kind, i in acked:
        if kind == "w" and i not in rm_sent:
            assert st.read(d0, f"/w/{i}") == b"%d" % i + b"x" * (i % 50)
        elif kind == "rm":
            assert not st.exists(d0, f"/w/{i}")
        elif kind == "tx":
            assert st.read(d0, f"/t/{i}") == b"a" and st.read(d0, f"/t/{i}/b") == b"b"
    assert st.check() == []
    # and the daemon starts again on those files
    d2 = Daemon(sock, state)
    try:
        c = XsSocket(str(sock))
        last = max(i for kind, i in acked if kind == "w" and i not in rm_sent)
        assert c.request(P.XS_READ, b"/w/%d\0" % last)[1].startswith(b"%d" % last)
        c.close()
    finally:
        d2.stop()
    # a clean stop leaves the snapshot alone
    assert not list(tmp_path.glob("xs-state.json.log.*"))


# ------------------------------------------------------------- the files

def test_torn_last_record_is_ignored(tmp_path):
    path = tmp_path / "state.json"
    store = XenStore()
    j = StateLog(path, store)
    d0 = store.new_client(0)
    for i in range(5):
        store.write(d0, f"/n{i}", b"v%d" % i)
        j.drain()
        j.sync()
    logfile = log_path(path, j.log_id)
    good = logfile.read_bytes()
    store.write(d0, "/torn", b"never acknowledged")
    j.drain()
    j.sync()
    whole = logfile.read_bytes()
    for cut in (1, 5, 9, len(whole) - len(good) - 1):   # a write cut anywhere
        logfile.write_bytes(whole[:len(good) + cut])
        st = load_state(path)
        assert [st.read(st.new_client(0), f"/n{i}") for i in range(5)] == \
            [b"v%d" % i for i in range(5)]
        assert not st.exists(st.new_client(0), "/torn")
    # a daemon takes over those files and goes on
    srv = XenStoreServer(None, str(tmp_path / "sock"), state_file=str(path))
    srv.start()
    try:
        c = XsSocket(srv.socket_path)
        assert c.request(P.XS_READ, b"/n4\0") == (P.XS_READ, b"v4")
        c.request(P.XS_WRITE, b"/after\0ok")
        c.close()
    finally:
        srv.close()
    st = load_state(path)
    assert st.read(st.new_client(0), "/after") == b"ok"


def test_crash_in_the_middle_of_a_compaction(tmp_path):
    path = tmp_path / "state.json"
    store = XenStore()
    j = StateLog(path, store)
    d0 = store.new_client(0)
    store.write(d0, "/before", b"1")
    j.drain()
    j.sync()
    # step 1 done (new log started), snapshot not written: a crash here
    job = j.begin_compaction()
    store.write(d0, "/during", b"2")
    j.drain()
    j.sync()
    assert log_path(path, job[0] - 1).exists() and log_path(path, job[0]).exists()
    st = load_state(path)
    assert st.read(st.new_client(0), "/before") == b"1"
    assert st.read(st.new_client(0), "/during") == b"2"
    # step 2 done, the old log not removed yet: a crash here
    snapshot = job[1]
    path.write_text(json.dumps(snapshot))
    st = load_state(path)
    assert st.read(st.new_client(0), "/before") == b"1"
    assert st.read(st.new_client(0), "/during") == b"2"
    assert nodes_of(st) == nodes_of(store)
    # a new owner of the files cleans up
    StateLog(path, st)
    assert [p.name for p in tmp_path.glob("state.json.log.*")] == \
        [log_path(path, job[0] + 1).name]


def test_old_state_files_without_log_still_load(tmp_path):
    """A state file written before the log existed (no "log" field) is a
    snapshot like any other."""
    store = XenStore()
    d0 = store.new_client(0)
    store.write(d0, "/old", b"format")
    state = store.to_state()
    path = tmp_path / "xenstore.json"
    path.write_text(json.dumps(state))
    st = load_state(path)
    assert st.read(st.new_client(0), "/old") == b"format"


def test_transaction_children_order_survives_a_restart(tmp_path):
    """A transaction that removes and re-creates children: the order of
    DIRECTORY after a restart is the order before."""
    path = tmp_path / "state.json"
    srv = XenStoreServer(XenStore(), None, state_file=str(path))
    try:
        with srv.access() as store:
            d0 = store.new_client(0)
            for c in "abc":
                store.write(d0, f"/p/{c}", b"")
            tx = store.transaction_start(d0)
            store.rm(d0, "/p/a", tx)
            store.write(d0, "/p/a", b"again", tx)
            store.write(d0, "/p/d", b"", tx)
            store.rm(d0, "/p/b", tx)
            store.transaction_end(d0, tx, True)
            expect = store.directory(d0, "/p")
        assert expect == ["c", "a", "d"]
        st = load_state(path)          # the daemon still runs: from the log
        assert st.directory(st.new_client(0), "/p") == expect
    finally:
        srv.close()


def test_guest_watches_survive_a_restart_through_the_log(tmp_path):
    """A guest's ring outlives the daemon, so do its watches: registered
    after the last snapshot, they are in the log."""
    path = tmp_path / "state.json"
    store = XenStore()
    d0 = store.new_client(0)
    store.mkdir(d0, "/local/domain/5")
    store.set_perms(d0, "/local/domain/5", ["n5"])
    srv = XenStoreServer(store, str(tmp_path / "sock"), state_file=str(path))
    srv.start()
    page = bytearray(4096)
    t = srv.attach_ring(5, page, lambda: None)
    g = GuestRing(page, t.kick)
    assert g.request(P.XS_WATCH, b"device\0dev\0") == (P.XS_WATCH, b"OK\0")
    assert g.request(P.XS_WATCH, b"control\0ctl\0") == (P.XS_WATCH, b"OK\0")
    assert g.request(P.XS_UNWATCH, b"control\0ctl\0") == (P.XS_UNWATCH, b"OK\0")
    # the daemon dies here (no stop, no snapshot): what does a new one see?
    st = load_state(path)
    assert [(w.path, w.token) for w in st.saved_ring_watches[5]] == \
        [("/local/domain/5/device", "dev")]
    srv.close()


def test_a_failed_fsync_acknowledges_nothing_and_is_retried(tmp_path, monkeypatch):
    from pyxen.dom0.xenstore import persist
    path = tmp_path / "state.json"
    store = XenStore()
    j = StateLog(path, store)
    d0 = store.new_client(0)
    store.write(d0, "/a", b"1")
    j.drain()
    real = persist.os.fsync
    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(fd)
    monkeypatch.setattr(persist.os, "fsync", failing)
    durable = j.durable_lsn
    with pytest.raises(OSError):
        j.sync()
    assert j.durable_lsn == durable and j.pending       # replies keep waiting
    store.write(d0, "/b", b"2")
    j.drain()
    assert j.sync() == store.op_seq
    st = load_state(path)
    assert st.read(st.new_client(0), "/a") == b"1" and st.read(st.new_client(0), "/b") == b"2"
