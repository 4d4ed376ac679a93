"""The wire format and the per-client Connection."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.dom0.xenstore import protocol as P
from pyxen.dom0.xenstore.protocol import Connection, Message, Parser, ProtocolError
from pyxen.dom0.xenstore.store import XenStore


def msg(t, payload=b"", req=1, tx=0):
    return struct.pack("<IIII", t, req, tx, len(payload)) + payload


def replies(conn):
    out = conn.take_output()
    msgs = Parser().feed(out)
    assert sum(16 + len(m.payload) for m in msgs) == len(out)
    return msgs


def call(conn, t, payload=b"", tx=0, req=7):
    conn.receive(msg(t, payload, req, tx))
    out = replies(conn)
    assert out[0].req_id == req and out[0].tx_id == tx
    return out[0].type, out[0].payload


def test_message_type_numbers_match_xs_wire():
    assert (P.XS_CONTROL, P.XS_DIRECTORY, P.XS_READ, P.XS_GET_PERMS) == (0, 1, 2, 3)
    assert (P.XS_WATCH, P.XS_UNWATCH, P.XS_TRANSACTION_START) == (4, 5, 6)
    assert (P.XS_TRANSACTION_END, P.XS_INTRODUCE, P.XS_RELEASE) == (7, 8, 9)
    assert (P.XS_GET_DOMAIN_PATH, P.XS_WRITE, P.XS_MKDIR, P.XS_RM) == (10, 11, 12, 13)
    assert (P.XS_SET_PERMS, P.XS_WATCH_EVENT, P.XS_ERROR) == (14, 15, 16)
    assert (P.XS_IS_DOMAIN_INTRODUCED, P.XS_RESUME, P.XS_SET_TARGET) == (17, 18, 19)
    assert (P.XS_RESET_WATCHES, P.XS_DIRECTORY_PART, P.XS_TYPE_COUNT) == (21, 22, 23)


def test_parser_incremental():
    data = msg(P.XS_READ, b"/a\0", 1) + msg(P.XS_WRITE, b"/b\0v", 2, 3)
    p = Parser()
    got = []
    for i in range(len(data)):
        before = p.wanted()
        assert before > 0
        got += p.feed(data[i:i + 1])
    assert got == [Message(P.XS_READ, 1, 0, b"/a\0"), Message(P.XS_WRITE, 2, 3, b"/b\0v")]
    assert p.wanted() == 16 and p.buffered == 0


def test_parser_wanted_counts_header_then_payload():
    p = Parser()
    assert p.wanted() == 16
    p.feed(msg(P.XS_READ, b"abcd")[:10])
    assert p.wanted() == 6
    p.feed(msg(P.XS_READ, b"abcd")[10:16])
    assert p.wanted() == 4


def test_parser_payload_limit():
    assert Parser().feed(msg(P.XS_WRITE, b"x" * 4096))[0].payload == b"x" * 4096
    with pytest.raises(ProtocolError):
        Parser().feed(struct.pack("<IIII", P.XS_WRITE, 1, 0, 4097))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.binary(max_size=300)), max_size=10),
       st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_parser_any_split(messages, cuts):
    data = b"".join(msg(t, p, i) for i, (t, p) in enumerate(messages))
    parser = Parser()
    got = []
    pos = 0
    i = 0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        got += parser.feed(data[pos:pos + n])
        pos += n
        i += 1
    assert [(m.type, m.req_id, m.payload) for m in got] == \
        [(t, i, p) for i, (t, p) in enumerate(messages)]


def test_split_strings():
    assert P.split_strings(b"a\0b\0") == [b"a", b"b"]
    assert P.split_strings(b"a\0b") == [b"a"]
    assert P.split_strings(b"") == []


@pytest.fixture
def conn():
    return Connection(XenStore(), 0)


def test_basic_requests(conn):
    assert call(conn, P.XS_WRITE, b"/a/b\0hello\0world") == (P.XS_WRITE, b"OK\0")
    assert call(conn, P.XS_READ, b"/a/b\0") == (P.XS_READ, b"hello\0world")
    assert call(conn, P.XS_DIRECTORY, b"/a\0") == (P.XS_DIRECTORY, b"b\0")
    assert call(conn, P.XS_MKDIR, b"/a/c\0") == (P.XS_MKDIR, b"OK\0")
    assert call(conn, P.XS_DIRECTORY, b"/a\0") == (P.XS_DIRECTORY, b"b\0c\0")
    assert call(conn, P.XS_GET_PERMS, b"/a\0") == (P.XS_GET_PERMS, b"n0\0")
    assert call(conn, P.XS_SET_PERMS, b"/a\0n0\0r5\0") == (P.XS_SET_PERMS, b"OK\0")
    assert call(conn, P.XS_GET_PERMS, b"/a\0") == (P.XS_GET_PERMS, b"n0\0r5\0")
    assert call(conn, P.XS_RM, b"/a\0") == (P.XS_RM, b"OK\0")
    assert call(conn, P.XS_READ, b"/a\0") == (P.XS_ERROR, b"ENOENT\0")
    assert call(conn, P.XS_GET_DOMAIN_PATH, b"4\0") == (P.XS_GET_DOMAIN_PATH,
                                                         b"/local/domain/4\0")
    assert call(conn, P.XS_IS_DOMAIN_INTRODUCED, b"4\0") == (P.XS_IS_DOMAIN_INTRODUCED, b"F\0")
    assert call(conn, P.XS_INTRODUCE, b"4\x00123\x009\x00") == (P.XS_INTRODUCE, b"OK\0")
    assert call(conn, P.XS_IS_DOMAIN_INTRODUCED, b"4\0") == (P.XS_IS_DOMAIN_INTRODUCED, b"T\0")
    assert call(conn, P.XS_RESUME, b"4\0") == (P.XS_RESUME, b"OK\0")
    assert call(conn, P.XS_SET_TARGET, b"4\0" + b"4\0") == (P.XS_SET_TARGET, b"OK\0")
    assert call(conn, P.XS_RELEASE, b"4\0") == (P.XS_RELEASE, b"OK\0")
    assert call(conn, P.XS_RESET_WATCHES, b"") == (P.XS_RESET_WATCHES, b"OK\0")
    t, p = call(conn, P.XS_CONTROL, b"print\0hi\0")
    assert (t, p) == (P.XS_CONTROL, b"OK\0")
    t, p = call(conn, P.XS_CONTROL, b"help\0")
    assert t == P.XS_CONTROL and b"quota" in p and p.endswith(b"\0")


def test_directory_part(conn):
    call(conn, P.XS_WRITE, b"/d/x\0")
    call(conn, P.XS_WRITE, b"/d/yy\0")
    t, p = call(conn, P.XS_DIRECTORY_PART, b"/d\0" + b"0\0")
    gen, rest = p.split(b"\0", 1)
    assert t == P.XS_DIRECTORY_PART and gen.isdigit() and rest == b"x\0yy\0\0"
    assert call(conn, P.XS_DIRECTORY_PART, b"/d\0")[1] == b"EINVAL\0"


def test_big_directory_is_e2big_but_directory_part_works(conn):
    for i in range(120):
        call(conn, P.XS_WRITE, b"/big/%s-%03d\0" % (b"n" * 40, i))
    assert call(conn, P.XS_DIRECTORY, b"/big\0") == (P.XS_ERROR, b"E2BIG\0")
    names = []
    off = 0
    while True:
        t, p = call(conn, P.XS_DIRECTORY_PART, b"/big\0%d\0" % off)
        assert t == P.XS_DIRECTORY_PART and len(p) <= 4096
        _, rest = p.split(b"\0", 1)
        done = rest.endswith(b"\0\0") or rest == b"\0"
        chunk = rest[:-1] if done else rest
        names += chunk.split(b"\0")[:-1]
        off += len(chunk)
        if done:
            break
    assert len(names) == 120


@pytest.mark.parametrize("t,payload,error", [
    (P.XS_READ, b"/a", "EINVAL"),                  # no NUL
    (P.XS_READ, b"/a\0/b\0", "EINVAL"),            # two args
    (P.XS_READ, b"", "EINVAL"),
    (P.XS_WRITE, b"/a", "EINVAL"),
    (P.XS_READ, b"rel//x\0", "EINVAL"),
    (P.XS_SET_PERMS, b"/\0", "EINVAL"),
    (P.XS_SET_PERMS, b"/\0q0\0", "EINVAL"),
    (P.XS_WATCH, b"/a\0", "EINVAL"),
    (P.XS_WATCH, b"/a\0tok\0deep\0", "EINVAL"),
    (P.XS_UNWATCH, b"/a\0tok\0", "ENOENT"),
    (P.XS_TRANSACTION_END, b"X\0", "EINVAL"),
    (P.XS_TRANSACTION_END, b"T\0", "ENOENT"),      # tx 0 does not exist
    (P.XS_INTRODUCE, b"1\0" + b"2\0", "EINVAL"),
    (P.XS_RELEASE, b"0\0", "EINVAL"),
    (P.XS_CONTROL, b"nope\0", "EINVAL"),
    (P.XS_CONTROL, b"", "EINVAL"),
    (P.XS_WATCH_EVENT, b"/a\0t\0", "ENOSYS"),
    (P.XS_ERROR, b"EINVAL\0", "ENOSYS"),
    (20, b"", "ENOSYS"),                           # removed XS_RESTRICT
    (999, b"", "ENOSYS"),
])
def test_error_replies(conn, t, payload, error):
    assert call(conn, t, payload) == (P.XS_ERROR, error.encode() + b"\0")


def test_transactions_over_the_wire(conn):
    t, p = call(conn, P.XS_TRANSACTION_START, b"\0")
    assert t == P.XS_TRANSACTION_START and p.endswith(b"\0")
    tx = int(p[:-1])
    assert call(conn, P.XS_WRITE, b"/t\0v", tx=tx) == (P.XS_WRITE, b"OK\0")
    assert call(conn, P.XS_READ, b"/t\0") == (P.XS_ERROR, b"ENOENT\0")
    assert call(conn, P.XS_READ, b"/t\0", tx=tx) == (P.XS_READ, b"v")
    assert call(conn, P.XS_TRANSACTION_START, b"\0", tx=tx) == (P.XS_ERROR, b"EBUSY\0")
    assert call(conn, P.XS_TRANSACTION_END, b"maybe\0", tx=tx) == (P.XS_ERROR, b"EINVAL\0")
    assert call(conn, P.XS_TRANSACTION_END, b"T\0", tx=tx) == (P.XS_TRANSACTION_END, b"OK\0")
    assert call(conn, P.XS_READ, b"/t\0") == (P.XS_READ, b"v")
    assert call(conn, P.XS_READ, b"/t\0", tx=tx) == (P.XS_ERROR, b"ENOENT\0")
    assert call(conn, P.XS_TRANSACTION_START, b"\0", tx=99) == (P.XS_ERROR, b"ENOENT\0")


def test_transaction_eagain_over_the_wire():
    store = XenStore()
    a, b = Connection(store), Connection(store)
    call(a, P.XS_WRITE, b"/x\0" + b"1")
    tx = int(call(a, P.XS_TRANSACTION_START, b"\0")[1][:-1])
    call(a, P.XS_READ, b"/x\0", tx=tx)
    call(b, P.XS_WRITE, b"/x\0" + b"2")
    assert call(a, P.XS_TRANSACTION_END, b"T\0", tx=tx) == (P.XS_ERROR, b"EAGAIN\0")


def test_watch_reply_comes_before_first_event(conn):
    conn.receive(msg(P.XS_WATCH, b"/w\0tok\0", 3, tx=5))   # tx_id ignored
    out = replies(conn)
    assert [(m.type, m.req_id, m.tx_id) for m in out] == [(P.XS_WATCH, 3, 5),
                                                            (P.XS_WATCH_EVENT, 0, 0)]
    assert out[1].payload == b"/w\0tok\0"
    conn.receive(msg(P.XS_WRITE, b"/w/x\0", 4))
    out = replies(conn)
    assert [m.type for m in out] == [P.XS_WRITE, P.XS_WATCH_EVENT]
    assert out[1].payload == b"/w/x\0tok\0"
    assert call(conn, P.XS_UNWATCH, b"/w\0tok\0") == (P.XS_UNWATCH, b"OK\0")
    conn.receive(msg(P.XS_WRITE, b"/w/y\0", 4))
    assert [m.type for m in replies(conn)] == [P.XS_WRITE]


def test_watch_with_depth_and_binary_token(conn):
    tok = b"\x01\xfftoken"
    conn.receive(msg(P.XS_WATCH, b"/w\0" + tok + b"\0" + b"1\0"))
    out = replies(conn)
    assert out[1].payload == b"/w\0" + tok + b"\0"
    conn.receive(msg(P.XS_WRITE, b"/w/a/b\0"))
    assert [m.type for m in replies(conn)] == [P.XS_WRITE]


def test_events_for_other_connections():
    store = XenStore()
    a, b = Connection(store), Connection(store)
    call(b, P.XS_WATCH, b"/e\0t\0")
    b.take_output()
    call(a, P.XS_WRITE, b"/e/1\0")
    ev = replies(b)
    assert [(m.type, m.payload) for m in ev] == [(P.XS_WATCH_EVENT, b"/e/1\0t\0")]


def test_event_queue_is_bounded_and_deduplicated():
    store = XenStore()
    writer = Connection(store)
    watcher = Connection(store, max_events=5)
    call(watcher, P.XS_WATCH, b"/q\0t\0")
    watcher.take_output()
    for _ in range(3):
        call(writer, P.XS_WRITE, b"/q/same\0")
    assert watcher.events_queued == 1           # identical pending events merge
    for i in range(10):
        call(writer, P.XS_WRITE, b"/q/%d\0" % i)
    assert watcher.events_queued == 5
    assert watcher.dropped_events == 6
    assert len(replies(watcher)) == 5
    call(writer, P.XS_WRITE, b"/q/same\0")      # no longer pending: queued again
    assert watcher.events_queued == 1


def test_output_can_be_drained_in_pieces(conn):
    call(conn, P.XS_WRITE, b"/p\0" + b"z" * 100)
    conn.receive(msg(P.XS_READ, b"/p\0", 1) + msg(P.XS_READ, b"/p\0", 2))
    total = conn.output_size
    assert total == 2 * (16 + 100)
    assert conn.replies_queued == 2
    got = b""
    while conn.has_output():
        piece = conn.peek_output(7)
        conn.consume_output(len(piece))
        got += piece
    assert len(got) == total and conn.replies_queued == 0
    assert [m.req_id for m in Parser().feed(got)] == [1, 2]


def test_unprivileged_connection():
    store = XenStore()
    guest = Connection(store, 3)
    assert call(guest, P.XS_CONTROL, b"print\0x\0") == (P.XS_ERROR, b"EACCES\0")
    assert call(guest, P.XS_INTRODUCE, b"1\0" + b"1\0" + b"1\0") == (P.XS_ERROR, b"EACCES\0")
    assert call(guest, P.XS_READ, b"/tool\0") == (P.XS_ERROR, b"EACCES\0")
    assert call(guest, P.XS_GET_DOMAIN_PATH, b"3\0") == (P.XS_GET_DOMAIN_PATH,
                                                          b"/local/domain/3\0")


def test_close_and_reset():
    store = XenStore()
    c = Connection(store)
    call(c, P.XS_WATCH, b"/a\0t\0")
    c.receive(msg(P.XS_READ, b"/a"[:1]))          # partial message pending
    c.reset()
    assert not c.has_output() and c.client.watches == [] and c.parser.buffered == 0
    c.close()
    assert c.client not in store.clients
    assert c.receive(msg(P.XS_READ, b"/\0")) == 0
