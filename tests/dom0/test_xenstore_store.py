"""Unit tests of the xenstore data model: every operation, permission,
quota, transaction and watch rule."""
from __future__ import annotations

import pytest

from pyxen.dom0.xenstore.store import (
    ERRORS, INITIAL_PATHS, XenStore, XenStoreError, format_perm, parse_perm)

from xs_helpers import Rec


def err(name):
    return pytest.raises(XenStoreError, match=f"^{name}")


def errname(fn, *a):
    with pytest.raises(XenStoreError) as e:
        fn(*a)
    return e.value.name


# ------------------------------------------------------------- basics

def test_errors_match_xs_wire_order():
    assert ERRORS[:5] == ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT")
    assert ERRORS[-4:] == ("EAGAIN", "EISCONN", "E2BIG", "EPERM")
    with pytest.raises(ValueError):
        XenStoreError("EQUOTA")


def test_initial_nodes(store, dom0):
    for p in INITIAL_PATHS:
        assert store.read(dom0.c, p) == b""
        assert store.get_perms(dom0.c, p) == [("n", 0)]
    assert store.directory(dom0.c, "/") == ["local", "tool", "vm"]
    assert store.directory(dom0.c, "/local") == ["domain"]
    assert store.get_perms(dom0.c, "@introduceDomain") == [("n", 0)]
    assert store.get_perms(dom0.c, "@releaseDomain") == [("n", 0)]
    assert store.check() == []


def test_perm_parsing():
    assert parse_perm("r5") == ("r", 5)
    assert parse_perm("b65535") == ("b", 65535)
    assert format_perm(("w", 3)) == "w3"
    for bad in ("", "r", "x1", "r-1", "r1a", "r65536", "R1", "r 1"):
        with err("EINVAL"):
            parse_perm(bad)


def test_write_read_and_implicit_parents(store, dom0):
    store.write(dom0.c, "/a/b/c", b"v\x00\xff")
    assert store.read(dom0.c, "/a/b/c") == b"v\x00\xff"
    assert store.read(dom0.c, "/a/b") == b""
    assert store.directory(dom0.c, "/a") == ["b"]
    store.write(dom0.c, "/a/b", b"x")
    assert store.read(dom0.c, "/a/b") == b"x"
    assert store.directory(dom0.c, "/a/b") == ["c"]
    assert store.check() == []


def test_children_keep_creation_order(store, dom0):
    for name in ("z", "a", "m"):
        store.write(dom0.c, f"/d/{name}", b"")
    assert store.directory(dom0.c, "/d") == ["z", "a", "m"]
    store.rm(dom0.c, "/d/a")
    store.write(dom0.c, "/d/a", b"")
    assert store.directory(dom0.c, "/d") == ["z", "m", "a"]


def test_read_missing(store, dom0):
    with err("ENOENT"):
        store.read(dom0.c, "/nope")
    with err("ENOENT"):
        store.directory(dom0.c, "/nope/deeper")


@pytest.mark.parametrize("path", [
    "", "/a/", "//a", "/a//b", "/a b", "/a\x00", "/ä", "@introduceDomain",
    "/a.b", "/a:b", "/" + "x" * 3072])
def test_invalid_paths(store, dom0, path):
    with err("EINVAL"):
        store.write(dom0.c, path, b"")
    with err("EINVAL"):
        store.read(dom0.c, path)


def test_valid_path_characters(store, dom0):
    store.write(dom0.c, "/Az09-_@x", b"1")
    assert store.read(dom0.c, "/Az09-_@x") == b"1"


def test_relative_paths(store, dom0, domu):
    store.write(dom0.c, "rel", b"0")
    assert store.read(dom0.c, "/local/domain/0/rel") == b"0"
    g = domu(3)
    store.write(dom0.c, "/local/domain/3", b"")
    store.set_perms(dom0.c, "/local/domain/3", ["n3"])
    store.write(g.c, "data/x", b"1")
    assert store.read(dom0.c, "/local/domain/3/data/x") == b"1"
    assert store.read(g.c, "data/x") == b"1"
    assert store.directory(g.c, "data") == ["x"]


def test_mkdir(store, dom0):
    store.write(dom0.c, "/m", b"keep")
    store.mkdir(dom0.c, "/m")
    assert store.read(dom0.c, "/m") == b"keep"
    store.mkdir(dom0.c, "/m/n/o")
    assert store.read(dom0.c, "/m/n/o") == b""
    assert store.directory(dom0.c, "/m/n") == ["o"]


def test_rm(store, dom0):
    store.write(dom0.c, "/r/a/b", b"1")
    store.write(dom0.c, "/r/c", b"2")
    store.rm(dom0.c, "/r/a")
    assert store.directory(dom0.c, "/r") == ["c"]
    with err("ENOENT"):
        store.read(dom0.c, "/r/a/b")
    store.rm(dom0.c, "/r/a")            # missing, parent exists: fine
    with err("ENOENT"):
        store.rm(dom0.c, "/r/a/b")      # parent missing too
    with err("EINVAL"):
        store.rm(dom0.c, "/")
    assert store.check() == []


def test_directory_part(store, dom0):
    names = [f"child-{i:04d}-" + "x" * 40 for i in range(200)]
    for n in names:
        store.write(dom0.c, f"/big/{n}", b"")
    blob = b"".join(n.encode() + b"\0" for n in names)
    assert len(blob) > 4096
    got = b""
    gens = set()
    offset = 0
    while True:
        reply = store.directory_part(dom0.c, "/big", offset)
        assert len(reply) <= 4096
        gen, _, rest = reply.partition(b"\0")
        gens.add(gen)
        if rest.endswith(b"\0\0") or rest == b"\0":
            got += rest[:-1]
            break
        got += rest
        offset += len(rest)
    assert got == blob
    assert len(gens) == 1
    # past the end: generation and an empty list
    gen = store.directory_part(dom0.c, "/big", 10 ** 6).split(b"\0")[0]
    assert store.directory_part(dom0.c, "/big", 10 ** 6) == gen + b"\0\0"
    # the generation changes when the node changes
    store.write(dom0.c, "/big/new", b"")
    assert store.directory_part(dom0.c, "/big", 0).split(b"\0")[0] != gen


def test_directory_part_small(store, dom0):
    store.write(dom0.c, "/s/a", b"")
    store.write(dom0.c, "/s/bb", b"")
    reply = store.directory_part(dom0.c, "/s", 0)
    gen, rest = reply.split(b"\0", 1)
    assert int(gen) > 0
    assert rest == b"a\0bb\0\0"
    assert store.directory_part(dom0.c, "/s", 2) == gen + b"\0bb\0\0"


# -------------------------------------------------------- permissions

@pytest.fixture
def guest(store, dom0, domu):
    """dom5 with a home /local/domain/5 it can read, and data/ it owns."""
    store.mkdir(dom0.c, "/local/domain/5")
    store.set_perms(dom0.c, "/local/domain/5", ["n0", "r5"])
    store.mkdir(dom0.c, "/local/domain/5/data")
    store.set_perms(dom0.c, "/local/domain/5/data", ["n5"])
    return domu(5)


def test_domu_cannot_touch_dom0_nodes(store, dom0, guest):
    store.write(dom0.c, "/secret/x", b"s")
    assert errname(store.read, guest.c, "/secret/x") == "EACCES"
    assert errname(store.write, guest.c, "/secret/x", b"") == "EACCES"
    assert errname(store.rm, guest.c, "/secret/x") == "EACCES"
    assert errname(store.directory, guest.c, "/secret") == "EACCES"
    assert errname(store.get_perms, guest.c, "/secret") == "EACCES"
    assert errname(store.mkdir, guest.c, "/secret/y") == "EACCES"
    assert errname(store.set_perms, guest.c, "/secret", ["b5"]) == "EACCES"


def test_missing_node_reports_eacces_when_parent_unreadable(store, dom0, guest):
    store.write(dom0.c, "/secret/x", b"s")
    # nothing leaks about what exists under an unreadable node
    assert errname(store.read, guest.c, "/secret/nope") == "EACCES"
    assert errname(store.read, guest.c, "/secret/x") == "EACCES"
    # readable parent: the truth
    assert errname(store.read, guest.c, "/local/domain/5/nope") == "ENOENT"


def test_read_only_home(store, dom0, guest):
    store.write(dom0.c, "/local/domain/5/name", b"guest")
    assert store.read(guest.c, "name") == b"guest"
    assert errname(store.write, guest.c, "name", b"x") == "EACCES"
    assert errname(store.write, guest.c, "newkey", b"x") == "EACCES"
    assert store.directory(guest.c, "/local/domain/5") == ["data", "name"]


def test_creation_inherits_perms_with_creator_as_owner(store, dom0, guest):
    store.set_perms(dom0.c, "/local/domain/5/data", ["n5", "r7", "w8"])
    store.write(guest.c, "data/a/b", b"1")
    assert store.get_perms(dom0.c, "/local/domain/5/data/a") == [("n", 5), ("r", 7), ("w", 8)]
    assert store.get_perms(dom0.c, "/local/domain/5/data/a/b") == [("n", 5), ("r", 7), ("w", 8)]
    # dom0 creating under a guest's node keeps the inherited owner
    store.write(dom0.c, "/local/domain/5/data/c", b"")
    assert store.get_perms(dom0.c, "/local/domain/5/data/c")[0] == ("n", 5)


def test_unprivileged_creator_owns_new_node(store, dom0, domu):
    store.mkdir(dom0.c, "/shared")
    store.set_perms(dom0.c, "/shared", ["w0"])   # everyone may write, nobody read
    g = domu(9)
    store.write(g.c, "/shared/mine", b"9")
    assert store.get_perms(dom0.c, "/shared/mine") == [("w", 9)]
    assert store.read(g.c, "/shared/mine") == b"9"   # owner reads
    h = domu(10)
    assert errname(store.read, h.c, "/shared/mine") == "EACCES"
    store.write(h.c, "/shared/mine", b"10")          # 'w' for others
    assert store.read(dom0.c, "/shared/mine") == b"10"


def test_perm_entries(store, dom0, domu):
    store.write(dom0.c, "/p", b"v")
    store.set_perms(dom0.c, "/p", ["n0", "r1", "w2", "b3", "n4"])
    d1, d2, d3, d4, d6 = (domu(i) for i in (1, 2, 3, 4, 6))
    assert store.read(d1.c, "/p") == b"v"
    assert errname(store.write, d1.c, "/p", b"") == "EACCES"
    assert errname(store.read, d2.c, "/p") == "EACCES"
    store.write(d2.c, "/p", b"2")
    assert store.read(d3.c, "/p") == b"2"
    store.write(d3.c, "/p", b"3")
    assert errname(store.read, d4.c, "/p") == "EACCES"
    assert errname(store.read, d6.c, "/p") == "EACCES"
    # the owner entry's access char is the default for unlisted domains
    store.set_perms(dom0.c, "/p", ["r0", "n4"])
    assert store.read(d6.c, "/p") == b"3"
    assert errname(store.read, d4.c, "/p") == "EACCES"


def test_owner_always_has_full_access(store, dom0, guest):
    store.write(guest.c, "data/k", b"v")
    store.set_perms(guest.c, "data/k", ["n5"])
    assert store.read(guest.c, "data/k") == b"v"
    store.write(guest.c, "data/k", b"w")
    store.set_perms(guest.c, "data/k", ["n5", "r0"])


def test_set_perms_rules(store, dom0, guest):
    store.write(guest.c, "data/k", b"v")
    assert errname(store.set_perms, guest.c, "data/k", ["n6"]) == "EPERM"
    assert errname(store.set_perms, guest.c, "data/k", []) == "EINVAL"
    assert errname(store.set_perms, guest.c, "data/k", ["x5"]) == "EINVAL"
    store.set_perms(dom0.c, "/local/domain/5/data/k", ["n6"])   # dom0 may
    assert store.get_perms(dom0.c, "/local/domain/5/data/k") == [("n", 6)]
    assert errname(store.read, guest.c, "data/k") == "EACCES"
    # non-owner with write access may not change permissions
    store.set_perms(dom0.c, "/local/domain/5/data/k", ["n6", "b5"])
    store.write(guest.c, "data/k", b"ok")
    assert errname(store.set_perms, guest.c, "data/k", ["n6", "b5"]) == "EACCES"
    assert errname(store.set_perms, dom0.c, "/nope", ["n0"]) == "ENOENT"


def test_set_perms_tuples(store, dom0):
    store.write(dom0.c, "/t", b"")
    store.set_perms(dom0.c, "/t", [("b", 1), ("r", 2)])
    assert store.get_perms(dom0.c, "/t") == [("b", 1), ("r", 2)]
    with err("EINVAL"):
        store.set_perms(dom0.c, "/t", [("q", 1)])


def test_rm_needs_write_but_not_on_children(store, dom0, guest):
    store.write(guest.c, "data/tree/leaf", b"")
    store.set_perms(dom0.c, "/local/domain/5/data/tree/leaf", ["n0"])
    store.rm(guest.c, "data/tree")
    assert store.directory(dom0.c, "/local/domain/5/data") == []
    assert store.check() == []


def test_set_target(store, dom0, domu):
    dm = domu(7)        # e.g. a device-model stub domain for dom5
    store.introduce(dom0.c, 5, 100, 1)
    store.introduce(dom0.c, 7, 101, 2)
    store.mkdir(dom0.c, "/local/domain/5/device-model")
    store.set_perms(dom0.c, "/local/domain/5/device-model", ["n5"])
    store.write(dom0.c, "/local/domain/5/other", b"x")
    store.set_perms(dom0.c, "/local/domain/5/other", ["n0", "r5"])
    assert errname(store.read, dm.c, "/local/domain/5/device-model") == "EACCES"
    store.set_target(dom0.c, 7, 5)
    store.write(dm.c, "/local/domain/5/device-model/state", b"running")
    assert store.read(dm.c, "/local/domain/5/other") == b"x"   # inherits r5
    assert errname(store.set_target, dom0.c, 7, 99) == "ENOENT"
    assert errname(store.set_target, dm.c, 7, 5) == "EACCES"


def test_privileged_only_operations(store, domu):
    g = domu(4)
    for fn, args in ((store.introduce, (4, 1, 1)), (store.release, (4,)),
                     (store.resume, (4,)), (store.set_target, (4, 5)),
                     (store.is_domain_introduced, (4,)), (store.control, (["help"],))):
        assert errname(fn, g.c, *args) == "EACCES"


# --------------------------------------------------------------- quotas

def test_node_quota(dom0):
    store = XenStore({"nodes": 5})
    d = Rec(store, 0)
    store.mkdir(d.c, "/local/domain/5")
    store.set_perms(d.c, "/local/domain/5", ["n5"])
    g = Rec(store, 5)
    store.write(g.c, "a", b"")           # the home node itself counts: 1
    store.write(g.c, "b", b"")
    store.write(g.c, "c/d", b"")         # 5 nodes now
    assert errname(store.write, g.c, "e", b"") == "ENOSPC"
    assert errname(store.mkdir, g.c, "f") == "ENOSPC"
    store.write(g.c, "a", b"overwrite is fine")
    store.rm(g.c, "c")
    store.write(g.c, "e", b"")
    assert store.node_count[5] == 4
    # dom0 is not limited
    for i in range(20):
        store.write(d.c, f"/many/{i}", b"")
    assert store.check() == []


def test_node_quota_counts_multi_level_creation(dom0):
    store = XenStore({"nodes": 3})
    d = Rec(store, 0)
    store.mkdir(d.c, "/x")
    store.set_perms(d.c, "/x", ["w0"])
    g = Rec(store, 6)
    assert errname(store.write, g.c, "/x/a/b/c/d", b"") == "ENOSPC"
    assert store.directory(d.c, "/x") == []          # nothing half-created
    store.write(g.c, "/x/a/b/c", b"")
    assert store.node_count[6] == 3


def test_node_size_quota(store, dom0, guest):
    store.write(guest.c, "data/ok", b"x" * 1900)
    assert errname(store.write, guest.c, "data/big", b"x" * 2048) == "ENOSPC"
    assert errname(store.write, guest.c, "data/ok", b"x" * 2048) == "ENOSPC"
    assert store.read(guest.c, "data/ok") == b"x" * 1900
    store.write(dom0.c, "/local/domain/5/data/dom0big", b"x" * 4000)   # dom0 unlimited


def test_permission_count_quota(store, dom0, guest):
    store.write(guest.c, "data/k", b"")
    store.set_perms(guest.c, "data/k", ["n5", "r1", "r2", "r3", "r4"])
    assert errname(store.set_perms, guest.c, "data/k",
                   ["n5", "r1", "r2", "r3", "r4", "r6"]) == "ENOSPC"
    store.set_perms(dom0.c, "/local/domain/5/data/k", [f"r{i}" for i in range(20)])


def test_path_length_quota(store, dom0, guest):
    long_rel = "data/" + "/".join(["abcdefghi"] * 204)   # 2044 chars
    assert len(long_rel) <= 2048
    store.write(guest.c, long_rel, b"")
    too_long = long_rel + "/abcd"
    assert errname(store.write, guest.c, too_long, b"") == "EINVAL"
    # dom0: only the absolute limit
    store.write(dom0.c, "/local/domain/5/" + too_long, b"")
    assert errname(store.write, dom0.c, "/" + "a" * 3072, b"") == "EINVAL"


def test_watch_quota(store, dom0, guest):
    for i in range(128):
        store.watch(guest.c, "data", f"t{i}")
    # C xenstored answers E2BIG to a domain over its watch quota
    assert errname(store.watch, guest.c, "data", "one-more") == "E2BIG"
    store.unwatch(guest.c, "data", "t0")
    store.watch(guest.c, "data", "one-more")
    for i in range(200):
        store.watch(dom0.c, "/", f"t{i}")


def test_transaction_quota(store, dom0, guest):
    ids = [store.transaction_start(guest.c) for _ in range(10)]
    assert len(set(ids)) == 10
    assert errname(store.transaction_start, guest.c) == "ENOSPC"
    store.transaction_end(guest.c, ids[0], False)
    store.transaction_start(guest.c)
    for _ in range(50):
        store.transaction_start(dom0.c)


def test_transaction_node_quota():
    store = XenStore({"transaction-nodes": 4})
    d = Rec(store, 0)
    store.mkdir(d.c, "/local/domain/5")
    store.set_perms(d.c, "/local/domain/5", ["b5"])
    for i in range(6):
        store.write(d.c, f"/local/domain/5/k{i}", b"")
    g = Rec(store, 5)
    tx = store.transaction_start(g.c)
    for i in range(4):
        store.read(g.c, f"/local/domain/5/k{i}", tx)
    assert errname(store.read, g.c, "/local/domain/5/k5", tx) == "ENOSPC"


def test_control_quota(store, dom0, guest):
    text = store.control(dom0.c, ["quota"])
    assert text.startswith("Quota settings:\n")
    assert "nodes" in text and "watches" in text
    assert store.control(dom0.c, ["quota", "set", "watches", "2"]) == "OK"
    store.watch(guest.c, "data", "a")
    store.watch(guest.c, "data", "b")
    assert errname(store.watch, guest.c, "data", "c") == "E2BIG"
    assert "watches          :        2" in store.control(dom0.c, ["quota", "5"])
    assert errname(store.control, dom0.c, ["quota", "set", "bogus", "1"]) == "EINVAL"
    assert errname(store.control, dom0.c, ["quota", "set", "nodes", "0"]) == "EINVAL"


def test_control_commands(store, dom0):
    assert store.control(dom0.c, ["print", "hello"]) == "OK"
    assert store.control(dom0.c, ["log", "off"]) == "OK"
    assert "off" in store.control(dom0.c, ["log"])
    assert store.control(dom0.c, ["log", "on"]) == "OK"
    assert store.control(dom0.c, ["check"]) == "OK"
    assert "print" in store.control(dom0.c, ["help"])
    assert "nodes:" in store.control(dom0.c, ["memreport"])
    assert errname(store.control, dom0.c, ["frobnicate"]) == "EINVAL"
    assert errname(store.control, dom0.c, []) == "EINVAL"
    assert errname(store.control, dom0.c, ["print"]) == "EINVAL"


# -------------------------------------------------------------- watches

def test_watch_fires_on_registration(store, dom0):
    store.watch(dom0.c, "/w", "tok")
    assert dom0.take() == [("/w", "tok")]      # even though /w does not exist


def test_watch_fires_for_path_and_children(store, dom0):
    store.watch(dom0.c, "/w", "t")
    dom0.take()
    store.write(dom0.c, "/w", b"1")
    store.write(dom0.c, "/w/a/b", b"2")
    store.mkdir(dom0.c, "/w/c")
    store.mkdir(dom0.c, "/w/c")                 # no change, no event
    store.set_perms(dom0.c, "/w/c", ["n0", "r1"])
    store.write(dom0.c, "/wx", b"")             # not a child
    store.write(dom0.c, "/other", b"")
    assert dom0.take() == [("/w", "t"), ("/w/a/b", "t"), ("/w/c", "t"), ("/w/c", "t")]


def test_watch_on_root_sees_everything(store, dom0):
    store.watch(dom0.c, "/", "root")
    dom0.take()
    store.write(dom0.c, "/x/y", b"")
    assert dom0.take() == [("/x/y", "root")]


def test_rm_fires_for_removed_subtree(store, dom0):
    store.write(dom0.c, "/r/a/b", b"")
    store.write(dom0.c, "/r/c", b"")
    store.watch(dom0.c, "/r", "top")
    store.watch(dom0.c, "/r/a/b", "leaf")
    store.watch(dom0.c, "/r/zz", "missing")
    dom0.take()
    store.rm(dom0.c, "/r")
    ev = dom0.take()
    # the watched leaf learns of its removal with its own path;
    # the watch on /r sees a single event for /r
    assert ("/r/a/b", "leaf") in ev
    assert ("/r", "top") in ev
    assert ev.count(("/r", "top")) == 1
    assert not [e for e in ev if e[1] == "missing"]


def test_relative_watch_reports_relative_paths(store, dom0, guest):
    store.watch(guest.c, "data", "rel")
    store.watch(guest.c, "/local/domain/5/data", "abs")
    assert guest.take() == [("data", "rel"), ("/local/domain/5/data", "abs")]
    store.write(guest.c, "data/x", b"")
    assert sorted(guest.take()) == [("/local/domain/5/data/x", "abs"), ("data/x", "rel")]


def test_watch_depth(store, dom0):
    store.watch(dom0.c, "/d", "d0", depth=0)
    store.watch(dom0.c, "/d", "d1", depth=1)
    store.watch(dom0.c, "/", "r1", depth=1)
    dom0.take()
    store.write(dom0.c, "/d", b"")
    store.write(dom0.c, "/d/a", b"")
    store.write(dom0.c, "/d/a/b", b"")
    assert dom0.take() == [("/d", "d0"), ("/d", "d1"), ("/d", "r1"), ("/d/a", "d1")]
    with err("EINVAL"):
        store.watch(dom0.c, "/d", "neg", depth=-1)
    with err("EINVAL"):
        store.watch(dom0.c, "@introduceDomain", "s2", depth=2)


def test_watch_duplicates_and_unwatch(store, dom0):
    store.watch(dom0.c, "/u", "t")
    with err("EEXIST"):
        store.watch(dom0.c, "/u", "t")
    store.watch(dom0.c, "/u", "t2")
    store.unwatch(dom0.c, "/u", "t")
    with err("ENOENT"):
        store.unwatch(dom0.c, "/u", "t")
    dom0.take()
    store.write(dom0.c, "/u", b"")
    assert dom0.take() == [("/u", "t2")]
    with err("EINVAL"):
        store.watch(dom0.c, "/bad//path", "t")


def test_watches_respect_permissions(store, dom0, guest):
    store.write(dom0.c, "/local/domain/5/private", b"")
    store.set_perms(dom0.c, "/local/domain/5/private", ["n0"])
    store.watch(guest.c, "/local/domain/5", "home")
    store.watch(guest.c, "/secret", "secret")
    guest.take()
    store.write(dom0.c, "/secret/x", b"")          # unreadable: no event
    store.write(dom0.c, "/local/domain/5/name", b"g")  # readable
    store.write(dom0.c, "/local/domain/5/private/x", b"")   # neither node nor parent readable
    assert guest.take() == [("/local/domain/5/name", "home")]
    # a node whose own perms are unreadable but whose parent is readable fires
    store.write(dom0.c, "/local/domain/5/private", b"changed")
    assert guest.take() == [("/local/domain/5/private", "home")]


def test_perm_change_that_revokes_access_still_fires(store, dom0, guest):
    store.write(dom0.c, "/open/x", b"")
    store.set_perms(dom0.c, "/open", ["n0"])
    store.set_perms(dom0.c, "/open/x", ["n0", "r5"])
    store.watch(guest.c, "/open/x", "t")
    guest.take()
    store.set_perms(dom0.c, "/open/x", ["n0"])
    assert guest.take() == [("/open/x", "t")]
    store.write(dom0.c, "/open/x", b"v")
    assert guest.take() == []


def test_events_go_to_every_client(store, dom0, domu):
    other = Rec(store, 0)
    store.watch(dom0.c, "/e", "a")
    store.watch(other.c, "/e", "b")
    dom0.take(), other.take()
    store.write(dom0.c, "/e", b"")
    assert dom0.take() == [("/e", "a")]
    assert other.take() == [("/e", "b")]
    store.remove_client(other.c)
    store.write(dom0.c, "/e", b"2")
    assert other.take() == []


def test_reset_watches(store, dom0):
    store.watch(dom0.c, "/a", "t")
    tx = store.transaction_start(dom0.c)
    store.reset_watches(dom0.c)
    dom0.take()
    store.write(dom0.c, "/a", b"")
    assert dom0.take() == []
    with err("ENOENT"):
        store.read(dom0.c, "/", tx)


# --------------------------------------------------------- special watches

def test_introduce_and_release_fire_special_watches(store, dom0, domu):
    store.watch(dom0.c, "@introduceDomain", "intro")
    store.watch(dom0.c, "@releaseDomain", "rel")
    store.watch(dom0.c, "@releaseDomain", "rel1", depth=1)
    store.watch(dom0.c, "@releaseDomain/9", "only9")
    store.watch(dom0.c, "/", "root")            # never sees special events
    dom0.take()
    store.introduce(dom0.c, 8, 1234, 5)
    assert dom0.take() == [("@introduceDomain", "intro")]
    store.introduce(dom0.c, 8, 1234, 5)          # re-introduce: no event
    assert dom0.take() == []
    assert store.is_domain_introduced(dom0.c, 8)
    store.release(dom0.c, 8)
    assert dom0.take() == [("@releaseDomain", "rel"), ("@releaseDomain/8", "rel1")]
    assert not store.is_domain_introduced(dom0.c, 8)
    store.introduce(dom0.c, 9, 1, 1)
    dom0.take()
    store.release(dom0.c, 9)
    assert ("@releaseDomain/9", "only9") in dom0.take()


def test_special_watches_need_permission(store, dom0, guest):
    store.watch(guest.c, "@introduceDomain", "i")
    assert guest.take() == [("@introduceDomain", "i")]     # registration event
    store.introduce(dom0.c, 8, 1, 1)
    assert guest.take() == []
    store.set_perms(dom0.c, "@introduceDomain", ["n0", "r5"])
    assert store.get_perms(dom0.c, "@introduceDomain") == [("n", 0), ("r", 5)]
    guest.take()
    store.introduce(dom0.c, 11, 1, 1)
    assert guest.take() == [("@introduceDomain", "i")]


def test_domain_shutdown_and_resume(store, dom0):
    store.introduce(dom0.c, 3, 1, 1)
    store.watch(dom0.c, "@releaseDomain", "r")
    dom0.take()
    store.domain_shutdown(3)
    store.domain_shutdown(3)                 # once until resumed
    assert dom0.take() == [("@releaseDomain", "r")]
    store.resume(dom0.c, 3)
    store.domain_shutdown(3)
    assert dom0.take() == [("@releaseDomain", "r")]


def test_domain_ops_errors(store, dom0):
    assert errname(store.release, dom0.c, 0) == "EINVAL"
    assert errname(store.release, dom0.c, 42) == "ENOENT"
    assert errname(store.resume, dom0.c, 42) == "ENOENT"
    assert errname(store.introduce, dom0.c, 3, 1, 0) == "EINVAL"
    assert errname(store.introduce, dom0.c, "x", 1, 1) == "EINVAL"
    assert errname(store.introduce, dom0.c, 0x7FF0, 1, 1) == "EINVAL"
    assert store.get_domain_path(dom0.c, "7") == "/local/domain/7"
    assert errname(store.get_domain_path, dom0.c, "seven") == "EINVAL"
    assert store.is_domain_introduced(dom0.c, 0x7FF0)     # DOMID_SELF
    assert store.is_domain_introduced(dom0.c, 0)
    assert not store.is_domain_introduced(dom0.c, 77)


def test_release_removes_nodes_owned_by_domain(store, dom0, guest):
    store.introduce(dom0.c, 5, 1, 1)
    store.write(guest.c, "data/mine/deep", b"")
    store.write(dom0.c, "/local/domain/5/data/mine/dom0s", b"")   # owner 5 (inherited)
    store.write(dom0.c, "/local/domain/5/name", b"kept")
    store.watch(dom0.c, "/local/domain/5/data/mine", "w")
    store.watch(guest.c, "data", "guestwatch")
    dom0.take(), guest.take()
    store.release(dom0.c, 5)
    assert errname(store.read, dom0.c, "/local/domain/5/data") == "ENOENT"
    assert store.read(dom0.c, "/local/domain/5/name") == b"kept"
    assert ("/local/domain/5/data/mine", "w") in dom0.take()
    assert guest.take() == []           # the released domain's watches are gone
    assert store.node_count.get(5, 0) == 0
    assert store.check() == []


# ----------------------------------------------------------- transactions

def test_transaction_isolation_and_commit(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/t/a", b"old")
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/t/a", b"new", tx)
    store.write(dom0.c, "/t/b/c", b"created", tx)
    store.rm(dom0.c, "/t/a", tx)
    store.write(dom0.c, "/t/a", b"again", tx)
    assert store.read(dom0.c, "/t/a", tx) == b"again"
    assert store.read(other.c, "/t/a") == b"old"
    with err("ENOENT"):
        store.read(other.c, "/t/b")
    assert store.directory(dom0.c, "/t", tx) == ["b", "a"]
    store.transaction_end(dom0.c, tx, True)
    assert store.read(other.c, "/t/a") == b"again"
    assert store.read(other.c, "/t/b/c") == b"created"
    assert store.check() == []


def test_transaction_abort(store, dom0):
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/ab/x", b"", tx)
    store.transaction_end(dom0.c, tx, False)
    with err("ENOENT"):
        store.read(dom0.c, "/ab")
    with err("ENOENT"):
        store.transaction_end(dom0.c, tx, True)       # gone
    assert store.check() == []


def test_transaction_conflict_eagain(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/c/x", b"1")
    tx = store.transaction_start(dom0.c)
    v = store.read(dom0.c, "/c/x", tx)
    store.write(dom0.c, "/c/y", v + b"+", tx)
    store.write(other.c, "/c/x", b"2")               # intervening write
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    with err("ENOENT"):
        store.read(dom0.c, "/c/y")
    # retry succeeds
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/c/y", store.read(dom0.c, "/c/x", tx) + b"+", tx)
    store.transaction_end(dom0.c, tx, True)
    assert store.read(dom0.c, "/c/y") == b"2+"


def test_transaction_keeps_a_node_as_first_read(store, dom0):
    """test-xenstore's "ta err", as C xenstored does it: a node read in a
    transaction keeps that value there after a write outside; the
    transaction's own write shows; the commit fails with EAGAIN."""
    other = Rec(store, 0)
    store.write(dom0.c, "/e/a", b"a")
    tx = store.transaction_start(dom0.c)
    assert store.read(dom0.c, "/e/a", tx) == b"a"
    store.write(other.c, "/e/a", b"b")
    assert store.read(dom0.c, "/e/a", tx) == b"a"
    assert store.read(dom0.c, "/e/a") == b"b"
    store.write(dom0.c, "/e/a", b"c", tx)
    assert store.read(dom0.c, "/e/a", tx) == b"c"
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.read(dom0.c, "/e/a") == b"b"
    assert store.check() == []


def test_transaction_keeps_children_perms_and_absence_as_first_seen(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/f/x", b"")
    tx = store.transaction_start(dom0.c)
    assert store.directory(dom0.c, "/f", tx) == ["x"]
    assert store.get_perms(dom0.c, "/f/x", tx) == [("n", 0)]
    with err("ENOENT"):
        store.read(dom0.c, "/f/later", tx)
    store.write(other.c, "/f/y", b"")
    store.write(other.c, "/f/later", b"now")
    store.set_perms(other.c, "/f/x", ["n0", "r3"])
    store.rm(other.c, "/f/x")
    assert store.directory(dom0.c, "/f", tx) == ["x"]
    assert store.get_perms(dom0.c, "/f/x", tx) == [("n", 0)]
    assert store.read(dom0.c, "/f/x", tx) == b""
    with err("ENOENT"):
        store.read(dom0.c, "/f/later", tx)
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.directory(dom0.c, "/f") == ["y", "later"]


def test_read_only_transaction_commits_when_nothing_changed(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/g/a", b"1")
    tx = store.transaction_start(dom0.c)
    assert store.read(dom0.c, "/g/a", tx) == b"1"
    store.write(other.c, "/h", b"unrelated")
    assert store.read(dom0.c, "/g/a", tx) == b"1"
    store.transaction_end(dom0.c, tx, True)


def test_transaction_rm_of_a_child_whose_parent_went_away(store, dom0):
    """The transaction still holds /p/c as read, but /p was removed outside:
    removing /p/c there is EINVAL, as in C xenstored; nothing breaks."""
    other = Rec(store, 0)
    store.write(dom0.c, "/p/c", b"v")
    tx = store.transaction_start(dom0.c)
    assert store.read(dom0.c, "/p/c", tx) == b"v"
    store.rm(other.c, "/p")
    with err("EINVAL"):
        store.rm(dom0.c, "/p/c", tx)
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.check() == []


def test_transaction_hides_a_node_it_read_below_a_node_it_removed(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/q/r/s", b"v")
    tx = store.transaction_start(dom0.c)
    assert store.read(dom0.c, "/q/r/s", tx) == b"v"
    store.rm(other.c, "/q/r/s")              # /q/r no longer lists s ...
    store.rm(dom0.c, "/q/r", tx)             # ... so the tx removes /q/r alone
    with err("ENOENT"):
        store.read(dom0.c, "/q/r/s", tx)
    with err("ENOENT"):
        store.rm(dom0.c, "/q/r/s", tx)
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.check() == []


def test_transaction_conflict_on_created_node(store, dom0):
    other = Rec(store, 0)
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/n/x", b"mine", tx)
    store.write(other.c, "/n/x", b"theirs")
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.read(dom0.c, "/n/x") == b"theirs"


def test_unrelated_writes_do_not_conflict(store, dom0):
    other = Rec(store, 0)
    store.write(dom0.c, "/u/a", b"")
    store.write(dom0.c, "/v", b"")
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/u/a", b"tx", tx)
    store.write(other.c, "/v", b"other")
    store.transaction_end(dom0.c, tx, True)
    assert store.read(dom0.c, "/u/a") == b"tx"


def test_transaction_watches_fire_on_commit_only(store, dom0):
    w = Rec(store, 0)
    store.watch(w.c, "/tw", "t")
    w.take()
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/tw/a", b"", tx)
    store.rm(dom0.c, "/tw/a", tx)
    store.write(dom0.c, "/tw/b", b"", tx)
    assert w.take() == []
    store.transaction_end(dom0.c, tx, True)
    # one event per node changed, as C xenstored's accessed-node list
    assert w.take() == [("/tw/a", "t"), ("/tw/b", "t")]
    tx = store.transaction_start(dom0.c)
    store.write(dom0.c, "/tw/c", b"", tx)
    store.transaction_end(dom0.c, tx, False)
    assert w.take() == []


def test_transactions_are_per_client(store, dom0):
    other = Rec(store, 0)
    tx = store.transaction_start(dom0.c)
    with err("ENOENT"):
        store.read(other.c, "/", tx)
    with err("ENOENT"):
        store.transaction_end(other.c, tx, True)
    with err("ENOENT"):
        store.transaction_end(dom0.c, 0, True)


def test_transaction_node_quota_checked_at_commit():
    store = XenStore({"nodes": 4})
    d = Rec(store, 0)
    store.mkdir(d.c, "/local/domain/5")
    store.set_perms(d.c, "/local/domain/5", ["n5"])
    g = Rec(store, 5)
    t1 = store.transaction_start(g.c)
    t2 = store.transaction_start(g.c)
    store.write(g.c, "a", b"", t1)
    store.write(g.c, "b", b"", t1)
    store.write(g.c, "c", b"", t2)
    store.write(g.c, "d", b"", t2)
    store.transaction_end(g.c, t1, True)
    with pytest.raises(XenStoreError) as e:
        store.transaction_end(g.c, t2, True)
    assert e.value.name in ("EAGAIN", "ENOSPC")
    assert store.node_count[5] <= 4


# ------------------------------------------------------------- snapshots

def test_state_roundtrip(store, dom0):
    store.write(dom0.c, "/s/a", b"\x00\x01binary\xff")
    store.write(dom0.c, "/s/b/c", b"text")
    store.set_perms(dom0.c, "/s/b", ["n3", "r4", "b0"])
    store.set_perms(dom0.c, "@releaseDomain", ["n0", "r3"])
    copy = XenStore.from_state(store.to_state())
    assert list(copy.walk()) == list(store.walk())
    assert copy.node_count == store.node_count
    assert copy.special["@releaseDomain"].perms == (("n", 0), ("r", 3))
    assert copy.generation >= store.generation
    assert copy.check() == []


@pytest.mark.parametrize("state", [
    {},
    {"format": "pyxen-xenstore", "version": 1, "nodes": []},
    {"format": "pyxen-xenstore", "version": 1, "nodes": [["/a", "", ["n0"]]]},
    {"format": "pyxen-xenstore", "version": 1, "nodes": [["/", "", []]]},
    {"format": "pyxen-xenstore", "version": 1, "nodes": [["/", "", ["q0"]]]},
    {"format": "pyxen-xenstore", "version": 1,
     "nodes": [["/", "", ["n0"]], ["/bad//p", "", ["n0"]]]},
])
def test_bad_state_rejected(state):
    with pytest.raises((ValueError, XenStoreError, KeyError, TypeError)):
        XenStore.from_state(state)


def test_transaction_view_hides_nodes_created_under_its_removals(store, dom0):
    """Found by hypothesis: a node created outside below a node the
    transaction removed must stay invisible to the transaction."""
    other = Rec(store, 0)
    store.write(dom0.c, "/m", b"")
    tx = store.transaction_start(dom0.c)
    store.rm(dom0.c, "/m", tx)
    store.write(other.c, "/m/a/b", b"")
    with err("ENOENT"):
        store.read(dom0.c, "/m/a/b", tx)
    with err("ENOENT"):
        store.rm(dom0.c, "/m/a", tx)      # missing, and so is its parent
    with err("EAGAIN"):
        store.transaction_end(dom0.c, tx, True)
    assert store.read(dom0.c, "/m/a/b") == b""
    assert store.check() == []
