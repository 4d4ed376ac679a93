"""RingTransport against a simulated guest writing into a shared page."""
from __future__ import annotations

import mmap
import threading

import pytest

from pyxen.dom0.xenstore import protocol as P
from pyxen.dom0.xenstore import ring as R
from pyxen.dom0.xenstore.ring import RingTransport
from pyxen.dom0.xenstore.store import XenStore

from xs_helpers import HDR, GuestRing


class Notify:
    def __init__(self, then=None):
        self.count = 0
        self.then = then

    def __call__(self):
        self.count += 1
        if self.then:
            self.then()


def setup(domid=0, page=None, store=None, **kw):
    store = store or XenStore()
    page = page if page is not None else bytearray(4096)
    notify = Notify()
    t = RingTransport(store, domid, page, notify, **kw)
    g = GuestRing(page, t.kick)
    return store, t, g, notify


def test_layout_constants():
    assert (R.REQ_CONS, R.REQ_PROD, R.RSP_CONS, R.RSP_PROD) == (2048, 2052, 2056, 2060)
    assert (R.SERVER_FEATURES, R.CONNECTION, R.ERROR) == (2064, 2068, 2072)


def test_features_advertised():
    page = bytearray(4096)
    page[2064:2068] = (8).to_bytes(4, "little")        # bits already set stay set
    setup(page=page)
    assert int.from_bytes(page[2064:2068], "little") == 8 | 1 | 2 | 4


def test_request_reply_and_notify():
    store, t, g, notify = setup()
    assert g.request(P.XS_WRITE, b"/a\0hello") == (P.XS_WRITE, b"OK\0")
    assert g.request(P.XS_READ, b"/a\0") == (P.XS_READ, b"hello")
    assert g.request(P.XS_DIRECTORY, b"/\0") == (P.XS_DIRECTORY, b"local\0tool\0vm\0a\0")
    assert notify.count >= 3
    assert store.read(store.new_client(0), "/a") == b"hello"


def test_spurious_kicks_are_harmless():
    store, t, g, notify = setup()
    for _ in range(5):
        t.kick()
    assert notify.count == 0
    assert g.read_all() == b""


def test_unprivileged_guest_uses_relative_paths_and_perms():
    store = XenStore()
    d0 = store.new_client(0)
    store.mkdir(d0, "/local/domain/4")
    store.set_perms(d0, "/local/domain/4", ["n4"])
    _, t, g, _ = setup(4, store=store)
    assert g.request(P.XS_WRITE, b"data/x\0" + b"1") == (P.XS_WRITE, b"OK\0")
    assert store.read(d0, "/local/domain/4/data/x") == b"1"
    assert g.request(P.XS_READ, b"/tool\0") == (P.XS_ERROR, b"EACCES\0")
    assert g.request(P.XS_CONTROL, b"print\0x\0") == (P.XS_ERROR, b"EACCES\0")


def test_indexes_wrap_around_u32():
    page = bytearray(4096)
    store, t, g, _ = setup(page=page)
    g.set_indexes(0xFFFFFF00, 0xFFFFFFA0)   # guests may not assume zero
    value = bytes(range(256)) * 3            # 768-byte values: many wraps
    for i in range(40):
        key = b"/w/k%d\0" % i
        assert g.request(P.XS_WRITE, key + value) == (P.XS_WRITE, b"OK\0")
        assert g.request(P.XS_READ, key) == (P.XS_READ, value)
    assert g._get(2052) < 0x10000 and g._get(2060) < 0x10000   # both wrapped


def test_partial_messages_byte_by_byte():
    store, t, g, _ = setup()
    data = HDR.pack(P.XS_WRITE, 9, 0, 8) + b"/p\0value"
    for i in range(len(data)):
        g.write_some(data[i:i + 1])
        t.kick()
        if i < len(data) - 1:
            assert g.read_all() == b""
    g.pump()
    assert g.messages() == [(P.XS_WRITE, 9, 0, b"OK\0")]


def test_full_response_ring_keeps_a_backlog():
    store, t, g, notify = setup()
    d0 = store.new_client(0)
    store.write(d0, "/big", b"b" * 600)
    # 10 reads of 600 bytes: far more than the 1024-byte response ring
    reqs = b"".join(HDR.pack(P.XS_READ, i, 0, 5) + b"/big\0" for i in range(10))
    assert g.write_some(reqs) == len(reqs)
    t.kick()
    assert (g._get(2060) - g._get(2056)) & 0xFFFFFFFF == 1024   # ring full
    assert t.has_output
    got = []
    for _ in range(50):
        g.pump()
        got += g.messages()
        t.kick()                   # the guest signals after consuming
        if len(got) == 10:
            break
    assert [(m[0], m[1], m[3]) for m in got] == [(P.XS_READ, i, b"b" * 600) for i in range(10)]
    assert not t.has_output


def test_outstanding_requests_quota_applies_back_pressure():
    store = XenStore({"outstanding": 3})
    d0 = store.new_client(0)
    store.mkdir(d0, "/local/domain/6")
    store.set_perms(d0, "/local/domain/6", ["b6"])
    store.write(d0, "/local/domain/6/v", b"x" * 700)
    _, t, g, _ = setup(6, store=store)
    reqs = b"".join(HDR.pack(P.XS_READ, i, 0, 2) + b"v\0" for i in range(8))
    g.write_some(reqs)
    t.kick()
    # one reply fits the ring, three wait: no more requests are read
    consumed = g._get(2048)
    assert consumed == 4 * (16 + 2)
    assert t.conn.replies_queued == 3
    got = []
    for _ in range(100):
        g.pump()
        got += g.messages()
        t.kick()
        if len(got) == 8:
            break
    assert [m[1] for m in got] == list(range(8))


def test_watch_events_reach_the_guest():
    store, t, g, notify = setup(0)
    assert g.request(P.XS_WATCH, b"/ev\0tok\0") == (P.XS_WATCH, b"OK\0")
    g.messages()
    assert g.events == [("/ev", "tok")]
    other = store.new_client(0)
    store.write(other, "/ev/x", b"")
    # the store queued the event; the transport delivers it when flushed
    before = notify.count
    t.flush()
    assert notify.count > before
    g.pump()
    g.messages()
    assert g.events[-1] == ("/ev/x", "tok")


def test_bad_indexes_set_error_and_reconnect_recovers():
    page = bytearray(4096)
    store, t, g, notify = setup(page=page)
    assert g.request(P.XS_WATCH, b"/r\0t\0")[0] == P.XS_WATCH
    g._put(2052, g._get(2048) + 5000)           # producer way ahead: corrupt
    t.kick()
    assert int.from_bytes(page[2072:2076], "little") == R.ERROR_RINGIDX
    assert t.conn.client.watches == []
    t.kick()                                     # ignored while in error
    # the guest asks to reconnect
    page[2068:2072] = (R.RECONNECT).to_bytes(4, "little")
    n = notify.count
    t.kick()
    assert notify.count > n
    assert int.from_bytes(page[2068:2072], "little") == R.CONNECTED
    assert int.from_bytes(page[2072:2076], "little") == R.ERROR_NONE
    assert all(g._get(o) == 0 for o in (2048, 2052, 2056, 2060))
    g.rx = b""
    assert g.request(P.XS_READ, b"/tool\0") == (P.XS_READ, b"")


def test_oversized_message_is_a_protocol_error():
    page = bytearray(4096)
    store, t, g, _ = setup(page=page)
    g.write_some(HDR.pack(P.XS_WRITE, 1, 0, 5000))
    t.kick()
    assert int.from_bytes(page[2072:2076], "little") == R.ERROR_PROTO


def test_reconnect_drops_watches_and_transactions():
    page = bytearray(4096)
    store, t, g, _ = setup(page=page)
    g.request(P.XS_WATCH, b"/a\0t\0")
    g.request(P.XS_TRANSACTION_START, b"\0")
    page[2068:2072] = (1).to_bytes(4, "little")
    t.kick()
    assert t.conn.client.watches == [] and t.conn.client.transactions == {}


def test_notify_that_kicks_back_does_not_recurse():
    page = bytearray(4096)
    store = XenStore()
    holder = {}
    notify = Notify(then=lambda: holder["t"].kick())
    t = holder["t"] = RingTransport(store, 0, page, notify)
    g = GuestRing(page, t.kick)
    assert g.request(P.XS_WRITE, b"/re\0x") == (P.XS_WRITE, b"OK\0")


def test_mmap_page():
    m = mmap.mmap(-1, 4096)
    store, t, g, _ = setup(page=m)
    assert g.request(P.XS_WRITE, b"/m\0v") == (P.XS_WRITE, b"OK\0")
    assert g.request(P.XS_READ, b"/m\0") == (P.XS_READ, b"v")
    t.close()
    g.page.release()
    m.close()


def test_page_validation():
    with pytest.raises(ValueError):
        RingTransport(XenStore(), 1, bytes(4096), lambda: None)
    with pytest.raises(ValueError):
        RingTransport(XenStore(), 1, bytearray(100), lambda: None)


def test_kicks_from_many_threads():
    store, t, g, _ = setup()
    lock = threading.Lock()
    errors = []

    def hammer():
        try:
            for _ in range(200):
                t.kick()
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for th in threads:
        th.start()
    with lock:
        for i in range(30):
            assert g.request(P.XS_WRITE, b"/th/%d\0" % i) == (P.XS_WRITE, b"OK\0")
    for th in threads:
        th.join(10)
    assert not errors
    assert len(store.directory(store.new_client(0), "/th")) == 30


def test_closed_transport_ignores_kicks():
    store, t, g, notify = setup()
    t.close()
    g.write_some(HDR.pack(P.XS_READ, 1, 0, 2) + b"/\0")
    t.kick()
    assert g.read_all() == b"" and notify.count == 0
