"""Watch through python-etcd3: a key, a prefix, a past revision, cancel, on every member."""

import queue
import threading


def collect(iterator, n, timeout=10.0):
    """The first `n` events of a watch iterator (read on a thread, so a hang fails)."""
    out = queue.Queue()

    def read():
        for event in iterator:
            out.put(event)

    threading.Thread(target=read, daemon=True).start()
    return [out.get(timeout=timeout) for _ in range(n)]


def kind(event):
    return type(event).__name__


def test_watch_a_key_and_a_prefix_on_every_member(clients):
    import etcd3

    writer = clients[0]
    for i, c in enumerate(clients):
        prefix = f"py/{i}/"
        events, cancel = c.watch_prefix(prefix)
        key_events, cancel_key = c.watch(prefix + "a")
        writer.put(prefix + "a", "1")
        writer.put(prefix + "b", "2")
        writer.delete(prefix + "a")
        got = collect(events, 3)
        assert [(kind(e), e.key, e.value) for e in got] == [
            ("PutEvent", (prefix + "a").encode(), b"1"),
            ("PutEvent", (prefix + "b").encode(), b"2"),
            ("DeleteEvent", (prefix + "a").encode(), b""),
        ]
        revisions = [e.mod_revision for e in got]
        assert revisions == sorted(revisions) and len(set(revisions)) == 3
        assert [kind(e) for e in collect(key_events, 2)] == ["PutEvent", "DeleteEvent"]
        cancel()
        cancel_key()
        assert isinstance(got[0], etcd3.events.PutEvent)


def test_watch_from_a_past_revision_replays_history(clients):
    c = clients[1]
    first = c.put("hist/k", "0").header.revision
    for i in range(1, 5):
        clients[i % 3].put("hist/k", str(i))
    events, cancel = c.watch("hist/k", start_revision=first)
    got = collect(events, 5)
    assert [e.value for e in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert [e.mod_revision for e in got] == list(range(first, first + 5))
    cancel()


def test_a_canceled_watch_stops_and_others_go_on(clients):
    c = clients[2]
    gone, cancel_gone = c.watch("cancel/a")
    kept, cancel_kept = c.watch("cancel/b")
    cancel_gone()
    c.put("cancel/a", "1")
    c.put("cancel/b", "1")
    assert [e.key for e in collect(kept, 1)] == [b"cancel/b"]
    # The canceled iterator ends instead of delivering the put.
    assert list(gone) == []
    cancel_kept()
