"""vision/ask without ROS: the newest camera frame, the checks of a question, and the worker that
answers it with a vision-language model.

Camera frames are only checked by header (constant time: encoding, declared size against
`max_pixels`) and the newest good one is kept (memory: one frame). A question is checked (empty,
too long, no frame, a frame too old or a newer bad one) and handed to one worker thread through
a bounded queue (:class:`~locara_ros.core.worker.BoundedWorker`, REFUSE_NEWEST: one more than
`max_queue` is answered busy); the caller waits at most `request_timeout`. Decoding, colour
conversion, resizing and inference run on the worker, never on the caller's thread.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from locara_ros.core.backends.openai_http import BackendError
from locara_ros.core.vision import Frame, FrameError, frame_to_rgb
from locara_ros.core.worker import BoundedWorker, Policy

log = logging.getLogger("locara_ros.vision")

LOG_THROTTLE_S = 5.0  # seconds between repeated "dropped camera frame" lines


@dataclass
class VisionLimits:
    max_frame_age: float = 2.0  # s; a request may ask for another
    max_question_chars: int = 500
    max_tokens: int = 64  # when a request says 0
    max_tokens_limit: int = 256
    max_queue: int = 2  # requests waiting or being answered
    request_timeout: float = 30.0  # s


@dataclass
class Stored:
    frame: Frame
    stamp_ns: int  # the frame's header stamp
    arrival: float  # time.monotonic() when it arrived


@dataclass
class Answer:
    """What vision/ask answers (image_stamp_ns: the frame's stamp, 0 on failure)."""

    success: bool = False
    message: str = ""
    answer: str = ""
    image_stamp_ns: int = 0
    inference_time: float = 0.0
    backend: str = ""


@dataclass
class _Job:
    question: str
    max_tokens: int
    stored: Stored
    result: Answer = field(default_factory=Answer)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False


class VisionService:
    """Frames in (:meth:`store`), questions in (:meth:`ask`, blocking), answers out.

    `served_by()` names the backend that answered (a failover wrapper may switch);
    `on_worker_start` runs on the worker thread first (the node lowers its priority there).
    """

    def __init__(self, model: Any, limits: VisionLimits, *,
                 served_by: Callable[[], str] = lambda: "",
                 on_worker_start: Callable[[], None] | None = None) -> None:
        self.model, self.limits, self.served_by = model, limits, served_by
        self._lock = threading.Lock()
        self._latest: Stored | None = None
        self._last_bad: tuple[str, float] | None = None  # (reason, arrival)
        self.frames_received = 0
        self.frames_dropped = 0
        self._last_drop_log = 0.0
        self.worker: BoundedWorker[_Job] = BoundedWorker(
            "vlm-worker", limits.max_queue, Policy.REFUSE_NEWEST, self._serve,
            count_serving=True, on_start=on_worker_start)

    # ------------------------------------------------------------------ camera (cheap)
    def store(self, frame: Frame, stamp_ns: int) -> None:
        """A camera frame: checked by header, kept if good (the previous one is released)."""
        now = time.monotonic()
        try:
            frame.check()
        except FrameError as e:
            with self._lock:
                self._last_bad = (str(e), now)
                self.frames_dropped += 1
                dropped = self.frames_dropped
            if now - self._last_drop_log >= LOG_THROTTLE_S:
                self._last_drop_log = now
                log.error(f"dropped camera frame ({dropped} so far): {e}")
            return
        with self._lock:
            self._latest = Stored(frame, int(stamp_ns), now)
            self.frames_received += 1

    def forget(self) -> None:
        with self._lock:
            self._latest = None

    # ------------------------------------------------------------------ requests
    def ask(self, question: str, *, max_age: float = 0.0, max_tokens: int = 0) -> Answer:
        """Answer `question` about the newest frame (blocks up to request_timeout); a refusal
        or failure is success=False with the reason."""
        lim = self.limits
        question = question.strip()
        if not question:
            return self._refuse("empty question")
        if len(question) > lim.max_question_chars:
            return self._refuse(f"question too long ({len(question)} chars, "
                                f"max {lim.max_question_chars})")
        max_age = float(max_age) if max_age > 0 else lim.max_frame_age
        with self._lock:
            stored, bad = self._latest, self._last_bad
        bad_is_newer = bad is not None and (stored is None or bad[1] > stored.arrival)
        if stored is None:
            return self._refuse(f"bad frame: {bad[0]}" if bad is not None
                                else "no frame received yet")
        age = time.monotonic() - stored.arrival
        if age > max_age:
            stale = f"latest frame is {age:.1f} s old (max {max_age:.1f} s)"
            return self._refuse(f"bad frame: {bad[0]} ({stale})" if bad_is_newer else stale)
        job = _Job(question, min(int(max_tokens) or lim.max_tokens, lim.max_tokens_limit),
                   stored)
        if not self.worker.submit(job):
            return self._refuse(f"busy: {lim.max_queue} requests queued (max {lim.max_queue})")
        if not job.done.wait(lim.request_timeout):
            job.cancelled = True
            return self._refuse(f"timeout: no answer within {lim.request_timeout:.1f} s "
                                "(request_timeout)")
        return job.result

    def _refuse(self, message: str) -> Answer:
        log.warning(f"vision/ask refused: {message}")
        return Answer(success=False, message=message)

    def drop_waiting(self, why: str) -> None:
        """Answer the requests still waiting (the one being answered finishes)."""
        for job in self.worker.queue.remove_if(lambda j: True):
            job.result.message = why
            job.done.set()

    def close(self, timeout: float = 30.0) -> None:
        def shutting_down(job: _Job) -> None:
            job.result.message = "shutting down"
            job.done.set()
        self.worker.close(timeout=timeout, unserved=shutting_down)
        self.forget()

    # ------------------------------------------------------------------ worker
    def _serve(self, job: _Job) -> None:
        try:
            if not job.cancelled:
                self._answer(job)
        finally:
            job.done.set()

    def _answer(self, job: _Job) -> None:
        r = job.result
        try:
            t0 = time.monotonic()
            image = frame_to_rgb(job.stored.frame)
            t1 = time.monotonic()
            text = self.model.answer(image, job.question, job.max_tokens)
            t2 = time.monotonic()
            r.backend = self.served_by()
        except FrameError as e:
            r.message = f"bad frame: {e}"
        except BackendError as e:
            r.message = f"backend error: {e}"
        except Exception as e:  # noqa: BLE001 - the worker must survive anything a model does
            r.message = f"backend error: {type(e).__name__}: {e}"
        else:
            r.success, r.message, r.answer = True, "ok", text
            r.inference_time, r.image_stamp_ns = t2 - t1, job.stored.stamp_ns
            sec, nsec = divmod(job.stored.stamp_ns, 1_000_000_000)
            with self._lock:
                received, dropped = self.frames_received, self.frames_dropped
            log.info(f"answered in {t2 - t1:.3f} s (frame {sec}.{nsec:09d}, "
                     f"{image.shape[1]}x{image.shape[0]}, converted in {1000 * (t1 - t0):.1f} "
                     f"ms; frames received {received}, dropped {dropped})")
            return
        log.error(f"vision/ask failed: {r.message}")
