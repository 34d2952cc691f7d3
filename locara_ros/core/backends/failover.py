"""Failover between a remote backend and a local fallback.

:class:`Failover` wraps any two backends with the same interface (Transcriber, CommandModel,
VisionModel, ...). Calls go to the primary (the remote server) while it works. When it is
unreachable or times out (:class:`BackendUnavailable`), the *same call* is retried at once on the
fallback, so no request is lost, and the wrapper stays on the fallback while a background thread
probes the primary every ``retry_interval`` seconds; when the probe succeeds, calls go to the
primary again. A primary that was left because it went *silent* (a timeout: up, but too busy to
answer in time) answers a cheap probe at once, so each such switch doubles the wait before
going back (up to ``max_backoff``) instead of flapping between the two; a request the primary
answers resets it. Every switch is reported through ``on_switch(active_name, reason)``.

Generator methods (token streams) fail over at once if the primary fails before its first item.
A stream that breaks half-way (the server died mid-answer, or stopped answering) cannot be
resumed, because its items have already been consumed: the wrapper switches to the fallback and
raises :class:`FailedOver`, and the caller retries the whole request (it lands on the fallback).
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Callable

from locara_ros.core.backends.openai_http import BackendUnavailable

log = logging.getLogger(__name__)

SwitchCallback = Callable[[str, str], None]


class FailedOver(BackendUnavailable):
    """The primary failed in the middle of a stream; the fallback serves from now on. Retry."""


def _name(backend: Any) -> str:
    return str(getattr(backend, "name", type(backend).__name__))


class Failover:
    """Proxy that sends calls to `primary` and falls back to `fallback` when it is unavailable."""

    def __init__(self, primary: Any, fallback: Any, *, probe: Callable[[], bool] | None = None,
                 retry_interval: float = 5.0, on_switch: SwitchCallback | None = None,
                 max_backoff: float = 120.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self._probe = probe or getattr(primary, "health", None)
        if self._probe is None:
            raise ValueError(f"{_name(primary)} has no health() probe; pass probe=")
        self.retry_interval = float(retry_interval)
        self.max_backoff = float(max_backoff)
        self._wait = self.retry_interval  # before the next probe; grows on timeout switches
        self._on_switch = on_switch
        self._lock = threading.Lock()
        self._using_primary = True
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._served = threading.local()
        self.switches: list[tuple[float, str, str]] = []  # (monotonic time, active, reason)

    # ------------------------------------------------------------------ state
    @property
    def name(self) -> str:
        return f"failover({_name(self.primary)} -> {_name(self.fallback)})"

    @property
    def active(self) -> Any:
        with self._lock:
            return self.primary if self._using_primary else self.fallback

    def served_by(self) -> str:
        """Name of the backend that served this thread's last call (a switch back to the primary
        may happen while the fallback is still answering, so `active` is not the same thing)."""
        return getattr(self._served, "name", _name(self.active))

    @property
    def on_primary(self) -> bool:
        with self._lock:
            return self._using_primary

    def _failed(self, error: BackendUnavailable, reason: str) -> None:
        """The primary failed: wait longer before going back if it only went silent."""
        if error.timed_out:
            self._wait = min(self.max_backoff, self._wait * 2)
        self._switch(False, reason)

    def _answered(self) -> None:
        self._wait = self.retry_interval

    def _switch(self, to_primary: bool, reason: str) -> None:
        with self._lock:
            if self._using_primary == to_primary:
                return
            self._using_primary = to_primary
            active = self.primary if to_primary else self.fallback
        self.switches.append((time.monotonic(), _name(active), reason))
        log.warning("backend switched to %s: %s", _name(active), reason)
        if self._on_switch is not None:
            try:
                self._on_switch(_name(active), reason)
            except Exception:
                log.exception("on_switch callback failed")
        if not to_primary:
            self._start_prober()

    def _start_prober(self) -> None:
        if self._prober is not None and self._prober.is_alive():
            return
        self._prober = threading.Thread(target=self._probe_loop, name="failover-probe",
                                        daemon=False)
        self._prober.start()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self._wait):
            try:
                ok = bool(self._probe())
            except Exception as e:  # noqa: BLE001 - any probe failure means "still down"
                log.debug("probe of %s failed: %s", _name(self.primary), e)
                ok = False
            if ok:
                self._switch(True, f"{_name(self.primary)} is reachable again")
                return

    def close(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(self.retry_interval + 5.0)
        for backend in (self.primary, self.fallback):
            close = getattr(backend, "close", None)
            if callable(close):
                close()

    # ------------------------------------------------------------------ calls
    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes not found on the wrapper: proxy backend methods.
        if attr.startswith("_"):
            raise AttributeError(attr)
        target = getattr(self.primary, attr)
        if not callable(target):
            return getattr(self.active, attr)
        if inspect.isgeneratorfunction(getattr(type(self.primary), attr, None)):
            return lambda *a, **kw: self._stream(attr, *a, **kw)
        return lambda *a, **kw: self._call(attr, *a, **kw)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.on_primary:
            try:
                self._served.name = _name(self.primary)
                result = getattr(self.primary, method)(*args, **kwargs)
                self._answered()
                return result
            except BackendUnavailable as e:
                self._failed(e, f"{_name(self.primary)} unavailable: {e}")
        self._served.name = _name(self.fallback)
        return getattr(self.fallback, method)(*args, **kwargs)

    def _stream(self, method: str, *args: Any, **kwargs: Any):
        if self.on_primary:
            self._served.name = _name(self.primary)
            stream = getattr(self.primary, method)(*args, **kwargs)
            try:
                first = next(stream)
            except StopIteration:
                return
            except BackendUnavailable as e:
                self._failed(e, f"{_name(self.primary)} unavailable: {e}")
            else:
                yield first
                try:
                    yield from stream
                except BackendUnavailable as e:
                    self._failed(e, f"{_name(self.primary)} failed mid-answer: {e}")
                    raise FailedOver(f"{_name(self.primary)} failed mid-answer ({e}); "
                                     f"{_name(self.fallback)} serves now") from e
                self._answered()
                return
        self._served.name = _name(self.fallback)
        yield from getattr(self.fallback, method)(*args, **kwargs)
