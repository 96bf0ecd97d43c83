"""Tenants through the Python binding (issue 11): a directory started with
--tenants and --cluster-key-file and a memory server with the same key; the
token given to connect() (or $MAYFLY_TOKEN) decides what a client may touch.
"""

from __future__ import annotations

import os
import secrets
from typing import Iterator

import pytest

import mayfly
from conftest import Cluster, _check_built

TENANTS = """\
[tenant alice]
token = alice-token
prefix = /alice

[tenant bob]
token = bob-token
prefix = /bob

[tenant carol]
token = carol-token
prefix = /carol
max-blocks = 1

[tenant ops]
token = ops-token
prefix = /
admin = true
"""


@pytest.fixture(scope="module")
def tenants(request) -> Iterator[Cluster]:
    """A cluster whose directory has tenants and a cluster key."""
    _check_built()
    cl = Cluster()
    try:
        key = cl.work / "cluster.key"
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
        tf = cl.work / "tenants.ini"
        tf.write_text(TENANTS)
        tf.chmod(0o600)
        cl.token = "ops-token"
        cl.start_directory("--tenants", str(tf), "--cluster-key-file", str(key))
        cl.start_memserver("--cluster-key-file", str(key))
        yield cl
    finally:
        cl.kill_all(request.session.testsfailed > 0)


def test_a_tenant_works_in_its_subtree_and_is_refused_elsewhere(tenants):
    with mayfly.connect(tenants.address, token="alice-token") as alice, \
            mayfly.connect(tenants.address, token="bob-token") as bob:
        alice.mkdir("/alice")
        bob.mkdir("/bob")
        kv = alice.mount("/alice/kv", kind="kv")
        kv[b"k"] = b"v"
        assert kv[b"k"] == b"v"
        bq = bob.mount("/bob/q", kind="queue")
        bq.push(b"item")
        assert bq.pop(timeout=1.0) == b"item"
        with pytest.raises(mayfly.PermissionDenied, match="/bob"):
            alice.stat("/bob/q")
        with pytest.raises(mayfly.PermissionDenied):
            alice.mount("/bob/q", kind="queue")
        with pytest.raises(mayfly.PermissionDenied):
            bob.remove("/alice/kv")
        assert [s.path for s in alice.ls("/")] == ["/alice"]
        assert [t.name for t in alice.tenants()] == ["alice"]
        assert alice.tenants()[0].prefixes == ["/alice"]
        assert kv[b"k"] == b"v"  # bob's attempt changed nothing


def test_no_token_is_refused_and_mayfly_token_is_the_fallback(tenants, monkeypatch):
    monkeypatch.delenv("MAYFLY_TOKEN", raising=False)
    with mayfly.connect(tenants.address) as anon:
        with pytest.raises(mayfly.PermissionDenied, match="permission denied"):
            anon.exists("/")
    with mayfly.connect(tenants.address, token="wrong") as wrong:
        with pytest.raises(mayfly.PermissionDenied):
            wrong.exists("/")
    monkeypatch.setenv("MAYFLY_TOKEN", "bob-token")
    with mayfly.connect(tenants.address) as bob:
        bob.mkdir("/bob", parents=True)
        assert bob.exists("/bob")
        with pytest.raises(mayfly.PermissionDenied):
            bob.exists("/alice/kv")


def test_the_admin_sees_every_tenant(tenants):
    with mayfly.connect(tenants.address, token="ops-token") as ops:
        names = sorted(t.name for t in ops.tenants())
        assert names == ["alice", "bob", "carol", "ops"]
        assert len(ops.servers()) == 1


def test_the_quota_raises_quota_exceeded(tenants):
    with mayfly.connect(tenants.address, token="carol-token") as carol:
        carol.mkdir("/carol")
        carol.create("/carol/one", kind="kv")
        with pytest.raises(mayfly.QuotaExceeded, match="carol"):
            carol.create("/carol/two", kind="kv")
        (me,) = carol.tenants()
        assert (me.blocks_used, me.max_blocks) == (1, 1)
        carol.remove("/carol", recursive=True)
