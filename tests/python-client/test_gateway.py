"""etcd's HTTP/JSON gateway through etcd3gw (PyPI; OpenStack's client, which speaks only the
gateway): keys, prefixes, transactions, leases, watches, locks, status and members, on every
member."""

import base64
import threading
import queue


def gateway_clients(endpoints):
    import etcd3gw

    return [etcd3gw.client(host=e.split(":")[0], port=int(e.split(":")[1]), timeout=10) for e in endpoints]


def b64(s):
    return base64.b64encode(s.encode()).decode()


def test_keys_prefixes_and_transactions(endpoints):
    clients = gateway_clients(endpoints)
    assert clients[0].put("gw/a", "1")
    assert clients[1].put("gw/b", "2")
    for c in clients:
        assert c.get("gw/a") == [b"1"]
        got = sorted(v for v, _ in c.get_prefix("gw/"))
        assert got == [b"1", b"2"]
    # create() is a transaction: only if the key does not exist yet.
    assert clients[2].create("gw/c", "3")
    assert not clients[0].create("gw/c", "again")
    txn = {
        "compare": [{"key": b64("gw/a"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("gw/a"), "value": b64("10")}}],
        "failure": [],
    }
    assert clients[1].transaction(txn)["succeeded"] is True
    assert clients[2].get("gw/a") == [b"10"]
    assert clients[0].delete("gw/a")
    assert clients[1].get("gw/a") == []


def test_leases_refresh_and_attach(endpoints):
    clients = gateway_clients(endpoints)
    lease = clients[1].lease(30)
    assert clients[1].put("gw/leased", "x", lease=lease)
    assert lease.refresh() == 30
    assert lease.ttl() > 0
    assert [k for k in lease.keys()] == [b"gw/leased"]
    assert lease.revoke()
    assert clients[2].get("gw/leased") == []


def test_watch_sees_puts_from_another_member(endpoints):
    clients = gateway_clients(endpoints)
    events, cancel = clients[2].watch("gw/w")
    seen = queue.Queue()

    def read():
        for e in events:
            seen.put(e)

    threading.Thread(target=read, daemon=True).start()
    # Written until the watch (opened in the background) delivers one.
    for i in range(50):
        clients[0].put("gw/w", str(i))
        try:
            event = seen.get(timeout=0.2)
            break
        except queue.Empty:
            continue
    else:
        raise AssertionError("no watch event through the gateway")
    assert event["kv"]["key"] == b"gw/w"
    cancel()


def test_lock_status_and_members(endpoints):
    clients = gateway_clients(endpoints)
    lock = clients[0].lock("gw-lock", ttl=30)
    assert lock.acquire()
    other = clients[1].lock("gw-lock", ttl=30)
    assert not other.acquire(), "held by the first"
    assert lock.release()
    assert other.acquire()
    assert other.release()
    status = clients[1].status()
    assert status["version"] == "3.5.13"
    assert len(clients[2].members()) == 3
