"""vlm node: answers `vision/ask` about the latest camera frame with a vision-language model.

Camera callbacks only check a frame's header (constant time) and keep a reference to the newest
good one; the service callback checks the question and the frame's age and hands the work to one
worker thread through a bounded queue, waiting for the answer with a timeout. Conversion (JPEG/PNG
decoding, colour conversion, resizing) and inference run on the worker, never on the executor.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from sensor_msgs.msg import CompressedImage, Image

from locara_ros.core import contract as C
from locara_ros.core.backends.openai_http import BackendError
from locara_ros.core.backends.vision import make_vision_model
from locara_ros.core.settings.vlm import MAX_QUEUE_LIMIT, VlmSettings
from locara_ros.core.vision import (
    CompressedFrame,
    Frame,
    FrameError,
    RawFrame,
    frame_to_rgb,
)
from locara_ros.core.worker import BoundedWorker, Policy
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import (
    declare_settings,
    lower_thread_priority,
    publisher,
    run_node,
    service,
    subscription,
)
from locara_ros.nodes.failover import backend_name, served_by, with_failover
from locara_ros.nodes.managed import ManagedNode
from locara_ros.srv import AskVision

# Each held request blocks one executor thread while it waits (max_queue <= MAX_QUEUE_LIMIT): the
# executor gets that many threads plus room for the camera callbacks and refusals.
EXECUTOR_THREADS = MAX_QUEUE_LIMIT + 3
# Seconds between repeated "dropped camera frame" log lines.
LOG_THROTTLE_S = 5.0


@dataclass
class _Stored:
    frame: Frame
    stamp: Time
    arrival: float  # time.monotonic() when it arrived


@dataclass
class _Job:
    question: str
    max_tokens: int
    stored: _Stored
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    success: bool = False
    message: str = ""
    answer: str = ""
    inference_time: float = 0.0
    backend: str = ""


class VlmNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("vlm")
        self.cfg = declare_settings(self, VlmSettings)
        self._p = p = dataclasses.asdict(self.cfg)
        self.max_pixels = int(p["max_pixels"])
        self.max_frame_age = float(p["max_frame_age"])
        self.max_question_chars = int(p["max_question_chars"])
        self.default_max_tokens = int(p["max_tokens"])
        self.max_tokens_limit = int(p["max_tokens_limit"])
        self.max_queue = int(p["max_queue"])
        self.request_timeout = float(p["request_timeout"])
        self.worker_nice = int(p["worker_nice"])
        self._lock = threading.Lock()
        self._latest: Optional[_Stored] = None
        self._last_bad: Optional[tuple[str, float]] = None  # (reason, arrival)
        self.frames_received = 0
        self.frames_dropped = 0
        self.model: Any = None
        self._worker: Optional[BoundedWorker[_Job]] = None

    def setup(self) -> tuple[str, float]:
        """configure: load the model, subscribe the camera, offer vision/ask, start the worker."""
        p = self._p
        t0 = time.monotonic()
        local = dict(model_path=p["model_path"], mmproj_path=p["mmproj_path"],
                     chat_handler=p["chat_handler"], n_ctx=p["n_ctx"], n_threads=p["threads"],
                     n_gpu_layers=p["n_gpu_layers"], image_size=p["image_size"],
                     temperature=p["temperature"], system_prompt=p["system_prompt"],
                     jpeg_quality=p["jpeg_quality"])
        self.model = make_vision_model(
            p["backend"], server_url=p["server_url"], api_key=p["api_key"],
            server_model=p["server_model"], server_timeout=p["server_timeout"], **local)
        if p["backend"] == "openai" and p["fallback"]:
            events = publisher(self, C.VOICE_EVENTS, VoiceEvent)
            self.model = with_failover(self, events, "vlm", self.model,
                                       lambda: make_vision_model("llama_cpp", **local),
                                       probe=self.model.client.health,
                                       retry_interval=float(p["retry_interval"]))
        load_seconds = time.monotonic() - t0

        camera_group = MutuallyExclusiveCallbackGroup()
        if p["subscribe_raw"]:
            subscription(self, C.CAMERA, Image, self._on_image,
                         callback_group=camera_group)
        if p["subscribe_compressed"]:
            subscription(self, C.CAMERA_COMPRESSED, CompressedImage, self._on_compressed,
                         callback_group=camera_group)
        service(self, C.VISION_ASK, AskVision, self._on_ask,
                callback_group=ReentrantCallbackGroup())
        # last, so a failing configure leaves no thread behind. A request counts against
        # max_queue until it is answered; one more is refused as busy.
        self._worker = BoundedWorker(
            "vlm-worker", self.max_queue, Policy.REFUSE_NEWEST, self._serve, count_serving=True,
            on_start=lambda: self.get_logger().info(
                f"model worker: {lower_thread_priority(self.worker_nice)}"))
        return f"vlm ({backend_name(self.model)})", load_seconds

    # ------------------------------------------------------------------ camera (cheap)
    def _on_image(self, msg: Image) -> None:
        self._store(RawFrame(msg.data, int(msg.width), int(msg.height), msg.encoding,
                             int(msg.step), bool(msg.is_bigendian), self.max_pixels),
                    msg.header.stamp)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._store(CompressedFrame(msg.data, msg.format, self.max_pixels), msg.header.stamp)

    def _store(self, frame: Frame, stamp: Time) -> None:
        now = time.monotonic()
        try:
            frame.check()
        except FrameError as e:
            with self._lock:
                self._last_bad = (str(e), now)
                self.frames_dropped += 1
                dropped = self.frames_dropped
            self.get_logger().error(f"dropped camera frame ({dropped} so far): {e}",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        stored = _Stored(frame, Time(sec=stamp.sec, nanosec=stamp.nanosec), now)
        with self._lock:
            self._latest = stored  # the previous frame is released here: memory = one frame
            self.frames_received += 1

    # ------------------------------------------------------------------ service
    def _on_ask(self, request: AskVision.Request, response: AskVision.Response
                ) -> AskVision.Response:
        response.backend = backend_name(self.model)
        question = request.question.strip()
        if not question:
            return self._fail(response, "empty question")
        if len(question) > self.max_question_chars:
            return self._fail(response, f"question too long ({len(question)} chars, "
                                        f"max {self.max_question_chars})")
        max_age = float(request.max_age) if request.max_age > 0 else self.max_frame_age
        with self._lock:
            stored, bad = self._latest, self._last_bad
        now = time.monotonic()
        bad_is_newer = bad is not None and (stored is None or bad[1] > stored.arrival)
        if stored is None:
            return self._fail(response, f"bad frame: {bad[0]}" if bad is not None
                              else "no frame received yet")
        age = now - stored.arrival
        if age > max_age:
            stale = f"latest frame is {age:.1f} s old (max {max_age:.1f} s)"
            if bad_is_newer:
                return self._fail(response, f"bad frame: {bad[0]} ({stale})")
            return self._fail(response, stale)
        max_tokens = int(request.max_tokens) or self.default_max_tokens
        job = _Job(question, min(max_tokens, self.max_tokens_limit), stored)
        worker = self._worker
        if worker is None:
            return self._fail(response, f"node is {self.state_label()}, not active")
        if not worker.submit(job):
            return self._fail(response, f"busy: {self.max_queue} requests queued "
                                        f"(max {self.max_queue})")
        if not job.done.wait(self.request_timeout):
            job.cancelled = True
            return self._fail(response, f"timeout: no answer within {self.request_timeout:.1f} s"
                                        " (request_timeout)")
        response.success = job.success
        response.message = job.message
        response.backend = job.backend or response.backend
        if job.success:
            response.answer = job.answer
            response.image_stamp = stored.stamp
            response.inference_time = float(job.inference_time)
        return response

    def _fail(self, response: AskVision.Response, message: str) -> AskVision.Response:
        self.get_logger().warning(f"vision/ask refused: {message}")
        response.success = False
        response.message = message
        response.answer = ""
        response.image_stamp = Time()
        response.inference_time = 0.0
        return response

    # ------------------------------------------------------------------ worker
    def _serve(self, job: _Job) -> None:
        try:
            if not job.cancelled:
                self._answer(job)
        finally:
            job.done.set()

    def _answer(self, job: _Job) -> None:
        try:
            t0 = time.monotonic()
            image = frame_to_rgb(job.stored.frame)
            t1 = time.monotonic()
            text = self.model.answer(image, job.question, job.max_tokens)
            t2 = time.monotonic()
            job.backend = served_by(self.model)
        except FrameError as e:
            job.message = f"bad frame: {e}"
        except BackendError as e:
            job.message = f"backend error: {e}"
        except Exception as e:  # noqa: BLE001 - the worker must survive anything a model does
            job.message = f"backend error: {type(e).__name__}: {e}"
        else:
            job.success, job.message, job.answer = True, "ok", text
            job.inference_time = t2 - t1
            stamp = job.stored.stamp
            with self._lock:
                received, dropped = self.frames_received, self.frames_dropped
            self.get_logger().info(
                f"answered in {t2 - t1:.3f} s (frame {stamp.sec}.{stamp.nanosec:09d}, "
                f"{image.shape[1]}x{image.shape[0]}, converted in {1000 * (t1 - t0):.1f} ms; "
                f"frames received {received}, dropped {dropped})")
            return
        self.get_logger().error(f"vision/ask failed: {job.message}")

    def pause(self) -> None:
        """deactivate: answer the waiting requests (the one being answered finishes)."""
        if self._worker is not None:
            for job in self._worker.queue.remove_if(lambda j: True):
                job.message = "node deactivated"
                job.done.set()

    def teardown(self) -> None:
        """cleanup / shutdown: stop the worker (waiting requests are answered), free the model."""
        def shutting_down(job: _Job) -> None:
            job.message = "shutting down"
            job.done.set()
        if self._worker is not None:
            self._worker.close(timeout=30.0, unserved=shutting_down)
            self._worker = None
        if self.model is not None:
            self.model.close()
            self.model = None
        with self._lock:
            self._latest = None


def main(args=None) -> int:
    return run_node(VlmNode, args, num_threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    raise SystemExit(main())
