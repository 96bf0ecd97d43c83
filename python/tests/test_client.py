"""Client calls against the real daemons: namespaces, listings, leases,
servers, renew, remove, stats."""

import pytest

import mayfly


def test_connect_is_a_context_manager_and_close_is_idempotent(cluster):
    with mayfly.connect(cluster.address, timeout=2.0) as c:
        assert not c.closed
        assert c.exists("/")
    assert c.closed
    c.close()
    with pytest.raises(mayfly.MayflyError, match="closed"):
        c.stat("/")


def test_mkdir_ls_stat_exists(client, root):
    client.mkdir(f"{root}/a/b/c", parents=True)
    client.mkdir(f"{root}/a/b/c", parents=True)  # existing: not an error with parents
    with pytest.raises(mayfly.Exists):
        client.mkdir(f"{root}/a")
    with pytest.raises(mayfly.NotFound):
        client.mkdir(f"{root}/x/y")  # no parents
    client.create(f"{root}/a/kv", kind="kv", blocks=2)
    names = [s.path for s in client.ls(f"{root}/a")]
    assert names == [f"{root}/a/b", f"{root}/a/kv"]
    st = client.stat(f"{root}/a/kv")
    assert st.kind == "kv" and st.path == f"{root}/a/kv"
    assert len(st.partitions) == 2
    assert all(p.server_address == client_server(client) and not p.lost for p in st.partitions)
    assert client.stat(f"{root}/a").kind == "directory"
    assert client.stat(f"{root}/a").children == 2
    assert client.exists(f"{root}/a/kv") and not client.exists(f"{root}/nope")


def client_server(client):
    (s,) = client.servers()
    return s.address


def test_create_options_and_pinned(client, root):
    st = client.create(f"{root}/f", kind="file", lease_ms=4000, max_blocks=3)
    assert (st.kind, st.lease_ms, st.max_blocks, st.pinned) == ("file", 4000, 3, False)
    assert 0 < st.remaining_ms
    p = client.create(f"{root}/p", kind="queue", pinned=True)
    assert p.pinned and p.remaining_ms == -1
    with pytest.raises(mayfly.Exists):
        client.create(f"{root}/f", kind="file")
    with pytest.raises(mayfly.InvalidArgument):
        client.create(f"{root}/z", kind="bogus")


def test_a_namespace_without_replicas_has_no_chain(client, root):
    for opts in ({}, {"replicas": 1}):
        name = f"{root}/r{len(opts)}"
        st = client.create(name, kind="kv", blocks=2, **opts)
        assert len(st.partitions) == 2
        for p in st.partitions:
            assert (p.replicas, p.state, p.chain, p.chain_version) == (1, "ok", (), 0)
        with client.mount(name, kind="kv", **opts) as kv:
            kv[b"k"] = b"v"
            assert kv[b"k"] == b"v"
    with pytest.raises(mayfly.InvalidArgument, match="replicas"):
        client.create(f"{root}/neg", kind="kv", replicas=-1)
    assert not client.exists(f"{root}/neg")


def test_tree_and_leases_list_the_subtree_in_order(client, root):
    client.mkdir(f"{root}/d")
    client.create(f"{root}/d/q", kind="queue")
    client.create(f"{root}/kv", kind="kv")
    assert client.tree(root) == [(root, "directory"), (f"{root}/d", "directory"),
                                 (f"{root}/d/q", "queue"), (f"{root}/kv", "kv")]
    rows = client.leases(root)
    assert [r.path for r in rows] == [root, f"{root}/d", f"{root}/d/q", f"{root}/kv"]
    assert all(r.remaining_ms > 0 for r in rows)
    all_rows = client.leases()
    assert all_rows[0].path == "/" and all_rows[0].pinned and all_rows[0].remaining_ms == -1
    assert f"{root}/d/q" in [r.path for r in all_rows]


def test_renew_returns_the_missing_paths(client, root):
    client.create(f"{root}/kv", kind="kv", lease_ms=3000)
    missing = client.renew([f"{root}/kv", f"{root}/gone", f"{root}/also-gone"])
    assert sorted(missing) == [f"{root}/also-gone", f"{root}/gone"]
    assert client.renew([]) == []
    assert client.stat(f"{root}/kv").remaining_ms > 0


def test_remove_and_rename(client, root):
    client.mkdir(f"{root}/d")
    client.create(f"{root}/d/kv", kind="kv")
    with pytest.raises(mayfly.DirectoryNotEmpty):
        client.remove(f"{root}/d")
    client.rename(f"{root}/d", f"{root}/e")
    assert client.exists(f"{root}/e/kv") and not client.exists(f"{root}/d")
    client.remove(f"{root}/e", recursive=True)
    assert not client.exists(f"{root}/e")
    with pytest.raises(mayfly.NotFound):
        client.remove(f"{root}/e")


def test_cluster_of_a_plain_directory_is_one_single_member(cluster, client):
    ci = client.cluster()
    assert ci["etcd"] == "" and ci["leader"] == cluster.address
    assert ci["answered_by"] == cluster.address
    (m,) = ci["members"]
    assert m["role"] == "single" and m["address"] == cluster.address
    assert m["applied_seq"] == ci["committed_seq"] and m["updated_ms"] > 0


def test_a_list_with_a_dead_address_first_reaches_the_directory(cluster, root):
    import socket
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with mayfly.connect(f"{dead} , {cluster.address}", token=cluster.token, timeout=2.0) as c:
        c.mkdir(f"{root}/via-list")
        assert c.exists(f"{root}/via-list")
    with pytest.raises(mayfly.InvalidArgument):
        mayfly.connect(f"{cluster.address},not-an-address")


def test_servers_and_stats(cluster, client, root):
    (s,) = client.servers()
    assert s.address == cluster.memservers[0].address and s.up
    assert s.blocks_total > 0 and s.block_size > 0
    assert isinstance(s.zone, str) and isinstance(s.host, str) and s.chains == 0
    before = client.stats()
    client.create(f"{root}/kv", kind="kv", blocks=3)
    after = client.stats()
    assert after.servers == 1 and after.servers_up == 1
    assert after.blocks_used == before.blocks_used + 3
    assert after.namespaces == before.namespaces + 1
    assert after.requests > before.requests
    assert after.durable == 0
    assert after.partitions_degraded == 0 and after.chain_failovers == 0


def test_usage_counts_the_items(client, root):
    kv = client.mount(f"{root}/kv", kind="kv")
    kv.put_many({f"k{i}": b"v" * 10 for i in range(50)})
    (u,) = client.usage(f"{root}/kv")
    assert u.items == 50 and u.bytes_used >= 500
    kv.unmount()


def test_close_unmounts_what_is_mounted(cluster):
    c = mayfly.connect(cluster.address)
    c.mkdir("/closing", parents=True)
    kv = c.mount("/closing/kv")
    q = c.mount("/closing/q", kind="queue")
    lst = c.listen("/closing/kv")
    c.close()
    assert not kv.mounted and not q.mounted
    with pytest.raises(mayfly.MayflyError):
        kv[b"a"] = b"b"
    with pytest.raises(mayfly.MayflyError):
        lst.next_event(0)
    with mayfly.connect(cluster.address) as c2:
        c2.remove("/closing", recursive=True)


def test_an_open_directory_accepts_any_token(cluster):
    # The token travels (login at the first call); a directory without
    # --tenants accepts it and everything is allowed.
    with mayfly.connect(cluster.address, token="secret") as c:
        c.mkdir("/open-token", parents=True)
        assert c.exists("/open-token")
        assert c.tenants() == []
        c.remove("/open-token")
