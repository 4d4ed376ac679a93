"""XenStoreServer embedded in-process: socket clients, rings, persistence."""
from __future__ import annotations

import errno
import json
import socket
import struct
import threading
import time

import pytest

from pyxen.dom0.xenstore import protocol as P
from pyxen.dom0.xenstore.persist import load_state, save_state
from pyxen.dom0.xenstore.server import XenStoreServer
from pyxen.dom0.xenstore.store import XenStore

from xs_helpers import HDR, GuestRing, XsSocket


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def server(tmp_path):
    servers = []

    def make(**kw):
        kw.setdefault("state_file", str(tmp_path / "state.json"))
        srv = XenStoreServer(kw.pop("store", None), str(tmp_path / "sock"), **kw)
        srv.start()
        servers.append(srv)
        return srv
    yield make
    for s in servers:
        s.close()


def test_socket_round_trip_and_stop(server, xs_socket, tmp_path):
    srv = server()
    c = xs_socket(srv.socket_path)
    assert c.request(P.XS_WRITE, b"/a/b\0hi") == (P.XS_WRITE, b"OK\0")
    assert c.request(P.XS_READ, b"/a/b\0") == (P.XS_READ, b"hi")
    assert c.request(P.XS_READ, b"/zz\0") == (P.XS_ERROR, b"ENOENT\0")
    assert (tmp_path / "sock").exists()
    srv.stop()
    assert not (tmp_path / "sock").exists()
    with pytest.raises(OSError):
        XsSocket(srv.socket_path)


def test_state_saved_before_reply(server, xs_socket, tmp_path):
    srv = server()
    c = xs_socket(srv.socket_path)
    c.request(P.XS_WRITE, b"/durable\0yes")
    c.request(P.XS_SET_PERMS, b"/durable\0n0\0r3\0")
    # no waiting: the reply only left after the save
    st = load_state(tmp_path / "state.json")
    d0 = st.new_client(0)
    assert st.read(d0, "/durable") == b"yes"
    assert st.get_perms(d0, "/durable") == [("n", 0), ("r", 3)]


def test_batched_saves(server, xs_socket, tmp_path):
    srv = server(save_delay=0.5)
    c = xs_socket(srv.socket_path)
    for i in range(20):
        c.request(P.XS_WRITE, b"/batched/%d\0" % i + b"1")
    path = tmp_path / "state.json"

    def saved():
        try:
            st = load_state(path)
            return st.exists(st.new_client(0), "/batched/19")
        except (OSError, ValueError):
            return False
    assert wait_until(saved, 5)
    # acknowledged before the fsync: 20 writes shared one or two of them
    assert srv.journal.fsyncs <= 3
    c.request(P.XS_WRITE, b"/at-exit\0" + b"1")
    srv.stop()
    # a stop compacts: the snapshot alone has everything
    assert any(n[0] == "/at-exit" for n in json.loads(path.read_text())["nodes"])


def test_loads_existing_state(tmp_path):
    store = XenStore()
    d0 = store.new_client(0)
    store.write(d0, "/old/node", b"v")
    save_state(store, tmp_path / "state.json")
    srv = XenStoreServer(None, str(tmp_path / "sock"), state_file=str(tmp_path / "state.json"))
    srv.start()
    try:
        c = XsSocket(srv.socket_path)
        assert c.request(P.XS_READ, b"/old/node\0") == (P.XS_READ, b"v")
        c.close()
    finally:
        srv.close()


def test_watch_events_between_socket_clients(server, xs_socket):
    srv = server()
    a, b = xs_socket(srv.socket_path), xs_socket(srv.socket_path)
    assert b.request(P.XS_WATCH, b"/w\0tok\0") == (P.XS_WATCH, b"OK\0")
    assert b.wait_event() == ("/w", "tok")
    a.request(P.XS_WRITE, b"/w/x\0" + b"1")
    assert b.wait_event() == ("/w/x", "tok")


def test_disconnect_drops_client_state(server, xs_socket):
    srv = server()
    c = xs_socket(srv.socket_path)
    c.request(P.XS_WATCH, b"/w\0t\0")
    c.request(P.XS_TRANSACTION_START, b"\0")
    assert len(srv.store.clients) == 1
    c.close()
    assert wait_until(lambda: not srv.store.clients)


def test_protocol_violation_closes_only_that_client(server, xs_socket):
    srv = server()
    bad, good = xs_socket(srv.socket_path), xs_socket(srv.socket_path)
    bad.send_raw(struct.pack("<IIII", P.XS_WRITE, 1, 0, 100000))
    with pytest.raises((ConnectionError, OSError)):
        bad.request(P.XS_READ, b"/\0")
    assert good.request(P.XS_READ, b"/tool\0") == (P.XS_READ, b"")


def test_many_concurrent_clients(server):
    srv = server()
    errors = []

    def worker(i):
        try:
            c = XsSocket(srv.socket_path)
            for j in range(20):
                key = b"/c/%d/%d\0" % (i, j)
                assert c.request(P.XS_WRITE, key + b"%d" % j)[0] == P.XS_WRITE
                assert c.request(P.XS_READ, key) == (P.XS_READ, b"%d" % j)
            c.close()
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(srv.store.directory(srv.store.new_client(0), "/c")) == 8


def test_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()                       # leaves a dead socket file behind
    srv = XenStoreServer(XenStore(), str(path))
    srv.start()
    try:
        c = XsSocket(str(path))
        assert c.request(P.XS_READ, b"/\0")[0] == P.XS_READ
        c.close()
        other = XenStoreServer(XenStore(), str(path))
        with pytest.raises(OSError) as e:
            other.bind()
        assert e.value.errno == errno.EADDRINUSE
        other.close()
    finally:
        srv.close()


def test_refuses_to_replace_a_regular_file(tmp_path):
    path = tmp_path / "sock"
    path.write_text("precious")
    srv = XenStoreServer(XenStore(), str(path))
    with pytest.raises(OSError):
        srv.bind()
    assert path.read_text() == "precious"
    srv.close()


# ---------------------------------------------------------------- rings

def test_ring_and_socket_see_each_others_changes(server, xs_socket):
    srv = server()
    page = bytearray(4096)
    notified = threading.Event()
    t = srv.attach_ring(0, page, notified.set)
    g = GuestRing(page, t.kick)
    assert g.request(P.XS_WATCH, b"/shared\0guest\0") == (P.XS_WATCH, b"OK\0")
    g.messages()
    assert g.events == [("/shared", "guest")]
    c = xs_socket(srv.socket_path)
    c.request(P.XS_WATCH, b"/shared\0tool\0")
    assert c.wait_event() == ("/shared", "tool")
    # a tool write reaches the guest ring without any kick from the guest
    notified.clear()
    c.request(P.XS_WRITE, b"/shared/from-tool\0" + b"1")
    assert notified.wait(5)

    def guest_got():
        g.pump()
        g.messages()
        return ("/shared/from-tool", "guest") in g.events
    assert wait_until(guest_got)
    assert c.wait_event() == ("/shared/from-tool", "tool")
    # a guest write reaches the tool socket
    assert g.request(P.XS_WRITE, b"/shared/from-guest\0" + b"2") == (P.XS_WRITE, b"OK\0")
    assert c.wait_event() == ("/shared/from-guest", "tool")


def test_attach_ring_marks_domain_introduced(server, xs_socket):
    srv = server()
    c = xs_socket(srv.socket_path)
    c.request(P.XS_WATCH, b"@introduceDomain\0i\0")
    assert c.wait_event() == ("@introduceDomain", "i")
    srv.attach_ring(3, bytearray(4096), lambda: None)
    assert c.wait_event() == ("@introduceDomain", "i")
    assert c.request(P.XS_IS_DOMAIN_INTRODUCED, b"3\0") == (P.XS_IS_DOMAIN_INTRODUCED, b"T\0")


def test_introduce_uses_ring_provider_and_release_detaches(server, xs_socket):
    pages = {}

    def provider(domid, gfn, evtchn):
        pages[domid] = (bytearray(4096), gfn, evtchn)
        return pages[domid][0], lambda: None
    srv = server(ring_provider=provider)
    c = xs_socket(srv.socket_path)
    c.request(P.XS_WATCH, b"@releaseDomain\0r\0")
    c.wait_event()
    c.request(P.XS_MKDIR, b"/local/domain/7\0")
    c.request(P.XS_SET_PERMS, b"/local/domain/7\0n7\0")
    assert c.request(P.XS_INTRODUCE, b"7\0" + b"4660\0" + b"3\0") == (P.XS_INTRODUCE, b"OK\0")
    assert pages[7][1:] == (4660, 3)
    t = srv.rings[7]
    g = GuestRing(pages[7][0], t.kick)
    assert g.request(P.XS_WRITE, b"state\0" + b"up") == (P.XS_WRITE, b"OK\0")
    assert c.request(P.XS_READ, b"/local/domain/7/state\0") == (P.XS_READ, b"up")
    assert c.request(P.XS_RELEASE, b"7\0") == (P.XS_RELEASE, b"OK\0")
    assert c.wait_event() == ("@releaseDomain", "r")
    assert 7 not in srv.rings and t.closed
    # nodes owned by the released domain are gone
    assert c.request(P.XS_READ, b"/local/domain/7\0") == (P.XS_ERROR, b"ENOENT\0")


def test_reintroduce_without_provider_resets_ring(server, xs_socket):
    srv = server()
    page = bytearray(4096)
    t = srv.attach_ring(5, page, lambda: None, introduce=False)
    c = xs_socket(srv.socket_path)
    c.request(P.XS_INTRODUCE, b"5\0" + b"1\0" + b"1\0")
    g = GuestRing(page, t.kick)
    g.request(P.XS_WATCH, b"/x\0t\0")
    assert t.conn.client.watches
    c.request(P.XS_INTRODUCE, b"5\0" + b"1\0" + b"1\0")
    assert not t.conn.client.watches


def test_kick_from_another_thread_while_serving(server, xs_socket):
    srv = server()
    page = bytearray(4096)
    t = srv.attach_ring(0, page, lambda: None)
    g = GuestRing(page, lambda: threading.Thread(target=t.kick).start())
    c = xs_socket(srv.socket_path)
    for i in range(20):
        key = b"/k%02d\0" % i
        g.write_some(HDR.pack(P.XS_WRITE, i, 0, len(key)) + key)
        g.kick()
        c.request(P.XS_WRITE, b"/s%02d\0" % i)
    assert wait_until(lambda: len([n for n in srv.store.nodes if n.startswith("/k")]) == 20)


def test_access_from_another_thread_delivers_events(server, xs_socket):
    srv = server()
    c = xs_socket(srv.socket_path)
    c.request(P.XS_INTRODUCE, b"4\0" + b"1\0" + b"1\0")
    c.request(P.XS_WATCH, b"@releaseDomain\0r\0")
    c.request(P.XS_WATCH, b"/from-embedder\0e\0")
    c.wait_event(), c.wait_event()
    with srv.access() as store:          # e.g. the hypervisor saw dom4 shut down
        store.domain_shutdown(4)
        store.write(store.new_client(0), "/from-embedder", b"1")
    assert sorted([c.wait_event(), c.wait_event()]) == [("/from-embedder", "e"),
                                                        ("@releaseDomain", "r")]
