"""Property tests: random operation sequences never crash the store, keep
its invariants, survive a state round trip, and (for privileged clients)
agree with a plain dictionary model, transactions included."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.dom0.xenstore import persist
from pyxen.dom0.xenstore.store import XenStore, XenStoreError


def replayed(initial: dict, records: list) -> XenStore:
    """A store rebuilt from a snapshot and journal records, the records
    going through the log's encoding as on disk."""
    copy = XenStore.from_state(initial)
    for rec in records:
        copy.apply_record(persist._decode_record(persist._encode_record(rec)))
    copy._recount_memory()
    return copy


def assert_replay_matches(store: XenStore, initial: dict) -> None:
    copy = replayed(initial, store.journal)
    assert list(copy.walk()) == list(store.walk())       # children order included
    assert +copy.node_count == +store.node_count
    assert copy.node_mem == store.node_mem
    assert {n: s.perms for n, s in copy.special.items()} == \
        {n: s.perms for n, s in store.special.items()}
    assert copy.ring_watch_state() == store.ring_watch_state()

PATHS = ["/a", "/a/b", "/a/b/c", "/a/d", "/b", "/b/a", "/local/domain/1",
         "/local/domain/1/data", "/local/domain/1/data/x", "/local/domain/2/y",
         "data", "data/z", "/tool", "@introduceDomain", "@releaseDomain",
         "/bad//path", ""]
PERMS = st.lists(st.tuples(st.sampled_from("nrwb"), st.sampled_from([0, 1, 2, 3])),
                 min_size=1, max_size=6)

op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(PATHS), st.binary(max_size=40)),
    st.tuples(st.just("mkdir"), st.sampled_from(PATHS)),
    st.tuples(st.just("rm"), st.sampled_from(PATHS)),
    st.tuples(st.just("read"), st.sampled_from(PATHS)),
    st.tuples(st.just("directory"), st.sampled_from(PATHS)),
    st.tuples(st.just("directory_part"), st.sampled_from(PATHS), st.integers(0, 30)),
    st.tuples(st.just("get_perms"), st.sampled_from(PATHS)),
    st.tuples(st.just("set_perms"), st.sampled_from(PATHS), PERMS),
    st.tuples(st.just("watch"), st.sampled_from(PATHS), st.sampled_from("ab")),
    st.tuples(st.just("unwatch"), st.sampled_from(PATHS), st.sampled_from("ab")),
    st.tuples(st.just("tx_start")),
    st.tuples(st.just("tx_end"), st.booleans()),
    st.tuples(st.just("introduce"), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("release"), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("shutdown"), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("set_target"), st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("reset")),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.booleans(), op), max_size=60))
def test_random_operations_keep_invariants(steps):
    store = XenStore({"nodes": 8, "watches": 3, "transactions": 2})
    initial = store.to_state()
    store.journal = []
    events = {0: [], 1: [], 2: []}
    clients = {d: store.new_client(d, sink=lambda p, t, d=d: events[d].append((p, t)))
               for d in (0, 1, 2)}
    clients[1].persist_watches = True       # like a guest's ring
    txs = {d: [] for d in clients}
    for domid, in_tx, (name, *args) in steps:
        c = clients[domid]
        if c.closed:
            continue
        tx = txs[domid][-1] if in_tx and txs[domid] else 0
        try:
            if name == "write":
                store.write(c, args[0], args[1], tx)
            elif name in ("mkdir", "rm", "read", "directory", "get_perms"):
                getattr(store, name)(c, args[0], tx)
            elif name == "directory_part":
                assert len(store.directory_part(c, args[0], args[1], tx)) <= 4096
            elif name == "set_perms":
                store.set_perms(c, args[0], args[1], tx)
            elif name == "watch":
                store.watch(c, args[0], args[1])
            elif name == "unwatch":
                store.unwatch(c, args[0], args[1])
            elif name == "tx_start":
                txs[domid].append(store.transaction_start(c))
            elif name == "tx_end":
                if txs[domid]:
                    store.transaction_end(c, txs[domid].pop(), args[0])
            elif name == "introduce":
                store.introduce(c, args[0], 1, 1)
            elif name == "release":
                store.release(c, args[0])
            elif name == "shutdown":
                store.domain_shutdown(args[0])
            elif name == "set_target":
                store.set_target(c, args[0], args[1])
            elif name == "reset":
                store.reset_watches(c)
                txs[domid].clear()
        except XenStoreError:
            pass
        txs[domid] = [t for t in txs[domid] if t in c.transactions]
        assert store.check() == []
        for d in (1, 2):
            assert store.node_count.get(d, 0) <= 8
            assert len(clients[d].watches) <= 3
            assert len(clients[d].transactions) <= 2
    # every event delivered names a path the watcher registered under
    for d, evs in events.items():
        for path, token in evs:
            assert token in "ab"
    copy = XenStore.from_state(store.to_state())
    assert list(copy.walk()) == list(store.walk())
    assert copy.node_count == store.node_count
    # the journal replayed over the first snapshot gives the same store
    assert_replay_matches(store, initial)


MODEL_PATHS = ["/m", "/m/a", "/m/a/b", "/m/c", "/n", "/n/x/y"]

_write = st.tuples(st.just("write"), st.sampled_from(MODEL_PATHS), st.binary(max_size=8))
model_op = st.one_of(
    _write, _write, _write,
    st.tuples(st.just("mkdir"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("rm"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("read"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("directory"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("tx_start")),
    st.tuples(st.just("tx_start")),
    st.tuples(st.just("tx_end"), st.booleans()),
)


def _parents(path):
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


class Model:
    """dom0's view: path -> value (parents implied)."""

    def __init__(self, store, client):
        self.nodes = {p: v for p, v, _ in store.walk()}

    def apply(self, name, args):
        if name == "write":
            path, value = args
            for p in _parents(path):
                self.nodes.setdefault(p, b"")
            self.nodes[path] = value
        elif name == "mkdir":
            for p in _parents(args[0]) + [args[0]]:
                self.nodes.setdefault(p, b"")
        elif name == "rm":
            path = args[0]
            if path not in self.nodes:
                return "ENOENT" if _parents(path) and _parents(path)[-1] not in self.nodes else None
            for p in [p for p in self.nodes if p == path or p.startswith(path + "/")]:
                del self.nodes[p]
        return None

    def children(self, path):
        pre = path.rstrip("/") + "/"
        return sorted(p[len(pre):] for p in self.nodes
                      if p.startswith(pre) and "/" not in p[len(pre):] and p != "/")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 3).map(bool), model_op),
                min_size=10, max_size=80))
def test_privileged_clients_match_dict_model(steps):
    store = XenStore()
    initial = store.to_state()
    store.journal = []
    clients = [store.new_client(0), store.new_client(0)]
    model = Model(store, clients[0])
    open_tx = [None, None]          # (tx id, list of ops)
    for who, in_tx, (name, *args) in steps:
        c = clients[who]
        if name == "tx_start":
            if open_tx[who] is None:
                open_tx[who] = (store.transaction_start(c), [])
            continue
        if name == "tx_end":
            if open_tx[who] is not None:
                tx, ops = open_tx[who]
                open_tx[who] = None
                try:
                    store.transaction_end(c, tx, args[0])
                except XenStoreError as e:
                    assert e.name == "EAGAIN" and args[0]
                else:
                    if args[0]:
                        for o in ops:
                            model.apply(*o)
            continue
        tx = open_tx[who][0] if in_tx and open_tx[who] is not None else 0
        try:
            if name in ("write",):
                store.write(c, args[0], args[1], tx)
            elif name in ("mkdir", "rm"):
                getattr(store, name)(c, args[0], tx)
            elif name == "read":
                got = store.read(c, args[0], tx)
                if not tx:
                    assert got == model.nodes[args[0]]
                continue
            elif name == "directory":
                got = store.directory(c, args[0], tx)
                if not tx:
                    assert sorted(got) == model.children(args[0])
                continue
        except XenStoreError as e:
            if not tx:
                if name == "rm":
                    assert e.name == "ENOENT" and model.apply(name, args) == "ENOENT"
                else:
                    assert e.name == "ENOENT" and args[0] not in model.nodes
            continue
        if tx:
            open_tx[who][1].append((name, args))
        else:
            assert name not in ("read", "directory")
            model.apply(name, args)
        assert store.check() == []
    assert {p: v for p, v, _ in store.walk()} == model.nodes
    assert_replay_matches(store, initial)


_outside = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(MODEL_PATHS), st.binary(max_size=4)),
    st.tuples(st.just("mkdir"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("rm"), st.sampled_from(MODEL_PATHS)),
    st.tuples(st.just("set_perms"), st.sampled_from(MODEL_PATHS),
              st.sampled_from([["n0"], ["n0", "r1"], ["b0"]])),
)
_inside = st.tuples(st.sampled_from(["read", "directory", "get_perms"]),
                    st.sampled_from(MODEL_PATHS))


def _observe(store, c, name, path, tx):
    try:
        return getattr(store, name)(c, path, tx)
    except XenStoreError as e:
        return e.name


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_outside, _inside), min_size=1, max_size=40),
       st.lists(st.tuples(st.sampled_from(MODEL_PATHS), st.binary(max_size=4)), max_size=6))
def test_transaction_reads_are_repeatable(steps, setup):
    """As in C xenstored: whatever happens outside, a transaction sees every
    node (value, children, permissions, absence) as it first saw it, and
    its commit fails with EAGAIN when something it saw is no longer so."""
    store = XenStore()
    reader, writer = store.new_client(0), store.new_client(0)
    for path, value in setup:
        store.write(writer, path, value)
    tx = store.transaction_start(reader)
    first: dict = {}
    for name, path, *args in steps:
        if name in ("read", "directory", "get_perms"):
            got = _observe(store, reader, name, path, tx)
            if (name, path) in first:
                assert got == first[(name, path)], (name, path)
            else:
                first[(name, path)] = got
            continue
        try:
            if name == "write":
                store.write(writer, path, args[0])
            elif name == "set_perms":
                store.set_perms(writer, path, args[0])
            else:
                getattr(store, name)(writer, path)
        except XenStoreError:
            pass
    # what the transaction saw first, as the world now stands outside it
    stale = any(_observe(store, writer, name, path, 0) != got
                for (name, path), got in first.items())
    try:
        store.transaction_end(reader, tx, True)
        committed = True
    except XenStoreError as e:
        assert e.name == "EAGAIN"
        committed = False
    if stale:
        assert not committed
    assert store.check() == []
