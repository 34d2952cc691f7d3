"""vlm node: answers `vision/ask` about the latest camera frame with a vision-language model.

A thin adapter over :class:`locara_ros.core.vision_service.VisionService`: camera callbacks only
check a frame's header (constant time) and keep the newest good one; the service callback checks
the question and the frame's age and hands the work to one worker thread through a bounded
queue, waiting for the answer with a timeout. Conversion (JPEG/PNG decoding, colour conversion,
resizing) and inference run on the worker, never on the executor.
"""
from __future__ import annotations

import time
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from sensor_msgs.msg import CompressedImage, Image

from locara_ros.core import contract as C
from locara_ros.core.backends import factory
from locara_ros.core.settings.vlm import MAX_QUEUE_LIMIT, VlmSettings
from locara_ros.core.vision import CompressedFrame, RawFrame
from locara_ros.core.vision_service import VisionLimits, VisionService
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import (
    declare_settings,
    lower_thread_priority,
    ns_to_stamp,
    publisher,
    run_node,
    service,
    stamp_to_ns,
    subscription,
)
from locara_ros.nodes.failover import backend_name, served_by, with_failover
from locara_ros.nodes.managed import ManagedNode
from locara_ros.srv import AskVision

# Each held request blocks one executor thread while it waits (max_queue <= MAX_QUEUE_LIMIT): the
# executor gets that many threads plus room for the camera callbacks and refusals.
EXECUTOR_THREADS = MAX_QUEUE_LIMIT + 3


class VlmNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("vlm")
        self.cfg = declare_settings(self, VlmSettings)
        self.model: Any = None
        self.vision: VisionService | None = None

    def setup(self) -> tuple[str, float]:
        """configure: load the model, subscribe the camera, offer vision/ask, start the worker."""
        c = self.cfg
        t0 = time.monotonic()
        made = factory.vision_model(c)
        if isinstance(made, factory.Remote):  # voice/events only for failover switches
            events = publisher(self, C.VOICE_EVENTS, VoiceEvent) if made.make_fallback else None
            made = with_failover(self, events, "vlm", made.backend, made.make_fallback,
                                 probe=made.probe, retry_interval=float(c.retry_interval))
        self.model = made
        load_seconds = time.monotonic() - t0

        # A request counts against max_queue until it is answered; one more is refused as busy.
        self.vision = VisionService(
            self.model, VisionLimits(
                max_frame_age=float(c.max_frame_age), max_question_chars=c.max_question_chars,
                max_tokens=c.max_tokens, max_tokens_limit=c.max_tokens_limit,
                max_queue=c.max_queue, request_timeout=float(c.request_timeout)),
            served_by=lambda: served_by(self.model),
            on_worker_start=lambda: self.get_logger().info(
                f"model worker: {lower_thread_priority(c.worker_nice)}"))
        camera_group = MutuallyExclusiveCallbackGroup()
        if c.subscribe_raw:
            subscription(self, C.CAMERA, Image, self._on_image, callback_group=camera_group)
        if c.subscribe_compressed:
            subscription(self, C.CAMERA_COMPRESSED, CompressedImage, self._on_compressed,
                         callback_group=camera_group)
        service(self, C.VISION_ASK, AskVision, self._on_ask,
                callback_group=ReentrantCallbackGroup())
        return f"vlm ({backend_name(self.model)})", load_seconds

    # ------------------------------------------------------------------ camera (cheap)
    def _on_image(self, msg: Image) -> None:
        self.vision.store(RawFrame(msg.data, int(msg.width), int(msg.height), msg.encoding,
                                   int(msg.step), bool(msg.is_bigendian), self.cfg.max_pixels),
                          stamp_to_ns(msg.header.stamp))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self.vision.store(CompressedFrame(msg.data, msg.format, self.cfg.max_pixels),
                          stamp_to_ns(msg.header.stamp))

    # ------------------------------------------------------------------ service
    def _on_ask(self, request: AskVision.Request, response: AskVision.Response
                ) -> AskVision.Response:
        vision = self.vision
        if vision is None:
            response.success, response.message = False, f"node is {self.state_label()}, not active"
            return response
        a = vision.ask(request.question, max_age=float(request.max_age),
                       max_tokens=int(request.max_tokens))
        response.success, response.message = a.success, a.message
        response.backend = a.backend or backend_name(self.model)
        response.answer = a.answer if a.success else ""
        response.image_stamp = ns_to_stamp(a.image_stamp_ns) if a.success else Time()
        response.inference_time = float(a.inference_time) if a.success else 0.0
        return response

    def pause(self) -> None:
        """deactivate: answer the waiting requests (the one being answered finishes)."""
        if self.vision is not None:
            self.vision.drop_waiting("node deactivated")

    def teardown(self) -> None:
        """cleanup / shutdown: stop the worker (waiting requests are answered), free the model."""
        if self.vision is not None:
            self.vision.close(timeout=30.0)
            self.vision = None
        if self.model is not None:
            self.model.close()
            self.model = None


def main(args=None) -> int:
    return run_node(VlmNode, args, num_threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    raise SystemExit(main())
