"""Failover without ROS: which backend answers, when it switches, and how soon it goes back.

The two backends here are stand-ins (plain objects that answer or raise as told), not models:
the subject is the Failover wrapper's policy. The real servers and models fail over in
test_failover.py.
"""
from __future__ import annotations

import time

import pytest

from locara_ros.core.backends.failover import FailedOver, Failover
from locara_ros.core.backends.openai_http import BackendUnavailable


class StandInBackend:
    """Answers with its name, or raises what it is told to raise (not a model)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: Exception | None = None
        self.break_after: int | None = None  # a stream that breaks after n items
        self.healthy = True

    def answer(self, text: str) -> str:
        if self.error is not None:
            raise self.error
        return f"{self.name}: {text}"

    def stream(self, text: str):
        for i, word in enumerate(text.split()):
            if self.break_after is not None and i >= self.break_after:
                raise BackendUnavailable("the connection closed before the end")
            if self.error is not None:
                raise self.error
            yield f"{self.name}:{word}"

    def health(self) -> bool:
        return self.healthy


@pytest.fixture
def pair():
    primary, fallback = StandInBackend("server"), StandInBackend("local")
    switches = []
    f = Failover(primary, fallback, retry_interval=0.1, max_backoff=0.8,
                 on_switch=lambda name, reason: switches.append((name, reason)))
    yield f, primary, fallback, switches
    f.close()


def test_a_down_server_is_answered_by_the_fallback_and_comes_back(pair):
    f, primary, _fallback, switches = pair
    assert f.answer("hi") == "server: hi"
    primary.error = BackendUnavailable("connection refused")
    assert f.answer("hi") == "local: hi" and f.served_by() == "local"
    assert switches[-1][0] == "local"
    primary.error = None
    deadline = time.monotonic() + 5
    while not f.on_primary and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f.on_primary and switches[-1][0] == "server"


def test_a_stream_that_breaks_midway_switches_and_asks_for_a_retry(pair):
    f, primary, _fallback, switches = pair
    primary.break_after = 2
    got = []
    with pytest.raises(FailedOver):
        for item in f.stream("go to the kitchen"):
            got.append(item)
    assert got == ["server:go", "server:to"] and not f.on_primary
    assert "mid-answer" in switches[-1][1]
    assert list(f.stream("go to the kitchen")) == ["local:go", "local:to", "local:the",
                                                    "local:kitchen"]


def test_a_silent_server_is_not_flapped_to_and_from(pair):
    """A server that times out (busy, not down) answers probes at once: each timeout doubles
    the wait before going back, and a request it answers resets that."""
    f, primary, _fallback, _switches = pair
    primary.error = BackendUnavailable("read timed out", timed_out=True)
    f.answer("one")
    assert f._wait == pytest.approx(0.2)
    primary.error = None
    while not f.on_primary:
        time.sleep(0.02)
    primary.error = BackendUnavailable("read timed out", timed_out=True)
    f.answer("two")
    assert f._wait == pytest.approx(0.4)
    t0 = time.monotonic()
    primary.error = None
    while not f.on_primary:
        time.sleep(0.02)
    assert time.monotonic() - t0 >= 0.35  # waited the doubled interval
    assert f.answer("three") == "server: three" and f._wait == pytest.approx(0.1)
    # A refused connection is not a timeout: the wait does not grow.
    primary.error = BackendUnavailable("connection refused")
    f.answer("four")
    assert f._wait == pytest.approx(0.1)
