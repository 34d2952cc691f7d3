"""One bounded queue and one bounded worker for every node, with an explicit, counted drop policy.

Before this module each node had its own queue design (asr: a queue.Queue that dropped the
oldest chunk; command_parser: a queue.Queue that refused service calls and dropped the oldest
spoken request; vlm: a deque and a counter that refused the newest), each counting (or not) in
its own way. Now the policy is named where the queue is made, and every drop is counted:

* ``Policy.DROP_OLDEST``: live input (audio chunks, spoken requests): the newest is what matters;
  the oldest item is dropped (``on_drop`` is told, so a waiting caller gets an answer).
* ``Policy.REFUSE_NEWEST``: requests with a caller (service calls): ``put`` returns False and the
  caller answers "busy".

No ROS here: nodes and tests use it alike.
"""
from __future__ import annotations

import collections
import enum
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Policy(enum.Enum):
    DROP_OLDEST = "drop the oldest"
    REFUSE_NEWEST = "refuse the newest"


class Closed(Exception):
    """get() on a closed queue with nothing left in it."""


class Empty(Exception):
    """get() timed out."""


@dataclass
class Counts:
    accepted: int = 0
    dropped: int = 0  # the oldest, to make room (DROP_OLDEST)
    refused: int = 0  # the newest, not taken (REFUSE_NEWEST)
    removed: int = 0  # taken out before they were served (remove_if, close)

    def __str__(self) -> str:
        return (f"{self.accepted} accepted, {self.dropped} dropped, {self.refused} refused, "
                f"{self.removed} removed")


class BoundedQueue(Generic[T]):
    """A FIFO of at most `maxsize` items with a drop policy. `reserve` items are counted against
    the bound while they are being served (see BoundedWorker); thread-safe."""

    def __init__(self, name: str, maxsize: int, policy: Policy,
                 on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"{name}: maxsize must be >= 1, got {maxsize}")
        self.name, self.maxsize, self.policy = name, int(maxsize), policy
        self.on_drop = on_drop
        self.counts = Counts()
        self._items: collections.deque[T] = collections.deque()
        self._in_service = 0
        self._closed = False
        self._cv = threading.Condition()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    @property
    def held(self) -> int:
        """Items waiting plus items being served."""
        with self._cv:
            return len(self._items) + self._in_service

    def put(self, item: T, policy: Policy | None = None) -> bool:
        """Queue `item`. False: refused (REFUSE_NEWEST and full, or closed). With DROP_OLDEST a
        full queue drops its oldest waiting item (on_drop is called with it, outside the lock)."""
        policy = policy or self.policy
        dropped: T | None = None
        has_dropped = False
        with self._cv:
            if self._closed:
                self.counts.refused += 1
                return False
            if len(self._items) + self._in_service >= self.maxsize:
                if policy is Policy.REFUSE_NEWEST or not self._items:
                    self.counts.refused += 1
                    return False
                dropped, has_dropped = self._items.popleft(), True
                self.counts.dropped += 1
            self._items.append(item)
            self.counts.accepted += 1
            self._cv.notify()
        if has_dropped and self.on_drop is not None:
            self.on_drop(dropped)  # type: ignore[arg-type]
        return True

    def get(self, timeout: float | None = None, *, serve: bool = False) -> T:
        """The oldest item; raises Empty after `timeout` s, Closed once closed and drained. With
        `serve`, the item keeps its place in the bound until done() is called."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._items or self._closed, timeout):
                raise Empty
            if not self._items:
                raise Closed
            item = self._items.popleft()
            if serve:
                self._in_service += 1
            return item

    def done(self) -> None:
        """An item taken with get(serve=True) is finished."""
        with self._cv:
            self._in_service = max(0, self._in_service - 1)

    def remove_if(self, pred: Callable[[T], bool]) -> list[T]:
        """Take out (and return) the waiting items for which pred is true."""
        with self._cv:
            gone = [x for x in self._items if pred(x)]
            if gone:
                self._items = collections.deque(x for x in self._items if not pred(x))
                self.counts.removed += len(gone)
            return gone

    def close(self) -> list[T]:
        """Refuse further items, wake every getter; return what was still waiting."""
        with self._cv:
            self._closed = True
            rest = list(self._items)
            self._items.clear()
            self.counts.removed += len(rest)
            self._cv.notify_all()
            return rest


class BoundedWorker(Generic[T]):
    """A thread that serves a BoundedQueue one item at a time with `handle(item)`.

    With `count_serving`, the item being served counts against the bound (a vision request held
    by the model is still "held"); otherwise only waiting items do. An exception from `handle`
    is logged and the worker goes on. `current` is the item being served (None between items);
    other threads read it to cancel that item (one attribute read, no lock needed).
    """

    def __init__(self, name: str, maxsize: int, policy: Policy, handle: Callable[[T], None], *,
                 on_drop: Callable[[T], None] | None = None, count_serving: bool = False,
                 on_start: Callable[[], None] | None = None) -> None:
        self.queue: BoundedQueue[T] = BoundedQueue(name, maxsize, policy, on_drop)
        self.handle, self.count_serving, self.on_start = handle, count_serving, on_start
        self.current: T | None = None
        self.failures = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def counts(self) -> Counts:
        return self.queue.counts

    def submit(self, item: T, policy: Policy | None = None) -> bool:
        return self.queue.put(item, policy)

    def _loop(self) -> None:
        if self.on_start is not None:
            self.on_start()
        while True:
            try:
                item = self.queue.get(serve=self.count_serving)
            except Closed:
                return
            except Empty:  # pragma: no cover - get() without a timeout does not time out
                continue
            self.current = item
            try:
                self.handle(item)
            except Exception as e:  # noqa: BLE001 - the worker must survive any one item
                self.failures += 1
                log.error("%s: an item failed: %s: %s", self.queue.name, type(e).__name__, e)
            finally:
                self.current = None
                if self.count_serving:
                    self.queue.done()

    def close(self, timeout: float = 30.0,
              unserved: Callable[[T], None] | None = None) -> list[T]:
        """Stop taking items; tell `unserved` about each one never served (before waiting, so
        their callers are answered at once); wait for the one being served; return the
        unserved."""
        rest = self.queue.close()
        if unserved is not None:
            for item in rest:
                unserved(item)
        self._thread.join(timeout)
        return rest

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
