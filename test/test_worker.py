"""locara_ros.core.worker: the one bounded queue / worker the nodes share (asr audio, the
command parser's model lane, vlm requests), its drop policies and counts."""
from __future__ import annotations

import threading
import time

import pytest

from locara_ros.core.worker import BoundedQueue, BoundedWorker, Closed, Empty, Policy


def test_drop_oldest_keeps_the_newest_and_tells_about_the_dropped():
    dropped: list[int] = []
    q = BoundedQueue("audio", 3, Policy.DROP_OLDEST, on_drop=dropped.append)
    for i in range(5):
        assert q.put(i)
    assert dropped == [0, 1] and len(q) == 3
    assert [q.get(0) for _ in range(3)] == [2, 3, 4]
    assert (q.counts.accepted, q.counts.dropped, q.counts.refused) == (5, 2, 0)
    with pytest.raises(Empty):
        q.get(timeout=0.01)


def test_refuse_newest_refuses_and_a_put_may_choose_its_policy():
    q = BoundedQueue("requests", 2, Policy.DROP_OLDEST)
    assert q.put("a") and q.put("b")
    assert not q.put("c", Policy.REFUSE_NEWEST)  # a service call: the caller says "busy"
    assert q.put("d")  # a spoken request: the oldest goes
    assert [q.get(0), q.get(0)] == ["b", "d"]
    assert (q.counts.dropped, q.counts.refused) == (1, 1)
    assert "1 refused" in str(q.counts)


def test_remove_if_keeps_the_order_of_the_rest_and_close_wakes_getters():
    q = BoundedQueue("jobs", 10, Policy.REFUSE_NEWEST)
    for x in ["s1", "t1", "s2", "t2"]:
        q.put(x)
    assert q.remove_if(lambda x: x.startswith("s")) == ["s1", "s2"]
    got: list[object] = []

    def getter():
        try:
            while True:
                got.append(q.get())
        except Closed:
            got.append("closed")
    t = threading.Thread(target=getter)
    t.start()
    time.sleep(0.1)
    assert q.close() == []  # the getter had taken t1 and t2
    t.join(2)
    assert got == ["t1", "t2", "closed"] and not t.is_alive()
    assert not q.put("late") and q.counts.removed == 2


def test_worker_counts_the_item_being_served_and_survives_a_failing_item():
    gate = threading.Event()
    served: list[int] = []

    def handle(x: int) -> None:
        if x == 0:
            raise RuntimeError("a broken request")
        gate.wait(5)
        served.append(x)

    w = BoundedWorker("vlm", 2, Policy.REFUSE_NEWEST, handle, count_serving=True)
    assert w.submit(0)
    deadline = time.monotonic() + 5
    while w.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.failures == 1 and w.alive
    assert w.submit(1) and w.submit(2)
    while w.current != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.queue.held == 2  # one served, one waiting: full
    assert not w.submit(3)
    unserved: list[int] = []
    gate.set()
    while served != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.submit(4)  # served before close or handed back by it: never lost
    rest = w.close(5, unserved=unserved.append)
    assert rest == unserved and sorted(served + unserved) == [1, 2, 4]
    assert not w.alive and w.counts.refused == 1
