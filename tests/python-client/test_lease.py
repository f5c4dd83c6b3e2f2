"""Leases and python-etcd3's lock (a lease plus a create-revision transaction), on every member."""

import time


def test_lease_grant_attach_refresh_and_revoke(clients):
    leader_or_not = clients[1]
    lease = leader_or_not.lease(60)
    assert lease.granted_ttl == 60
    leader_or_not.put("pylease/a", "1", lease=lease)
    leader_or_not.put("pylease/b", "2", lease=lease)
    for c in clients:
        info = c.get_lease_info(lease.id)
        assert 55 <= info.TTL <= 60
        assert sorted(info.keys) == [b"pylease/a", b"pylease/b"]
    refreshed = list(lease.refresh())
    assert refreshed[0].TTL == 60
    value, meta = clients[2].get("pylease/a")
    assert value == b"1" and meta.lease_id == lease.id
    lease.revoke()
    for c in clients:
        assert c.get("pylease/a") == (None, None)
        assert c.get_lease_info(lease.id).TTL == -1


def test_an_unrefreshed_lease_expires_with_its_keys(clients):
    lease = clients[0].lease(1)
    clients[0].put("pyexpire/k", "v", lease=lease)
    events, cancel = clients[2].watch("pyexpire/k")
    deadline = time.monotonic() + 20
    for event in events:
        if type(event).__name__ == "DeleteEvent":
            break
        assert time.monotonic() < deadline
    cancel()
    assert clients[1].get("pyexpire/k") == (None, None)


def test_lock_excludes_until_released_or_expired(clients):
    first = clients[0].lock("pylock", ttl=60)
    assert first.acquire(timeout=5)
    second = clients[1].lock("pylock", ttl=60)
    assert not second.acquire(timeout=1), "a held lock must not be acquired twice"
    first.release()
    assert second.acquire(timeout=10)
    second.release()

    # A holder that stops refreshing loses the lock when its lease expires.
    abandoned = clients[2].lock("pylock-expiring", ttl=2)
    assert abandoned.acquire(timeout=5)
    waiter = clients[0].lock("pylock-expiring", ttl=60)
    started = time.monotonic()
    assert waiter.acquire(timeout=30)
    assert time.monotonic() - started >= 1
    waiter.release()
