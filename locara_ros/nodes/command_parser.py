"""command_parser node: transcripts -> schema-valid robot commands and a spoken reply.

Subscribes voice/transcript, voice/transcript/partial and voice/events (barge-in); publishes
voice/command, voice/reply and voice/events (STOP, COMMAND_READY, CANCELLED, ERROR); serves
voice/parse; calls vision/ask for questions about what the robot sees. A thin adapter over
:mod:`locara_ros.core.command_lanes` (the stop lane, the model lane, requests): transcripts,
partials and barge-in events are read in a callback group of their own (the stop lane never
waits behind the model, a service call or vision), voice/parse calls in a reentrant one.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from locara_ros.core import contract as C
from locara_ros.core.backends import factory
from locara_ros.core.backends.failover import Failover
from locara_ros.core.command_lanes import CommandLanes, LaneConfig, LaneEvent
from locara_ros.core.command_schema import load_schema
from locara_ros.core.parser import CommandParser, NoVisionService, ParseOutcome
from locara_ros.core.settings.command_parser import CommandParserSettings
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, VoiceEvent
from locara_ros.nodes.common import (
    client,
    declare_settings,
    default_schema_path,
    lower_thread_priority,
    publisher,
    run_node,
    service,
    subscription,
    voice_event,
)
from locara_ros.nodes.failover import with_failover
from locara_ros.nodes.managed import ManagedNode
from locara_ros.srv import AskVision, ParseCommand

EVENT_TYPES = {LaneEvent.STOP: VoiceEvent.STOP, LaneEvent.COMMAND_READY: VoiceEvent.COMMAND_READY,
               LaneEvent.CANCELLED: VoiceEvent.CANCELLED, LaneEvent.ERROR: VoiceEvent.ERROR}


class CommandParserNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("command_parser")
        self.cfg = declare_settings(self, CommandParserSettings)
        self.model: Any = None
        self.lanes: CommandLanes | None = None
        self._ids = itertools.count(1)  # request ids stay unique across configure cycles

    def setup(self) -> tuple[str, float]:
        """configure: load the schema and the model (warmed), subscribe, start the model lane."""
        c = self.cfg
        started = time.monotonic()
        path = c.schema_path or default_schema_path()
        self.schema = load_schema(path)  # SchemaError names file and line
        self.command_pub = publisher(self, C.COMMAND, RobotCommand)
        self.reply_pub = publisher(self, C.REPLY, ReplyChunk)
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        made = factory.command_model(c)
        self.model = made if not isinstance(made, factory.Remote) else with_failover(
            self, self.events_pub, "command_parser", made.backend, made.make_fallback,
            probe=made.probe, retry_interval=float(c.retry_interval))
        parser_cfg = c.parser_config()
        self.parser = CommandParser(self.schema, self.model, parser_cfg)
        if parser_cfg.stop_sounds_like > 0 and self.schema.stop is not None and \
                self.parser.sound_alike is None:
            self.get_logger().warning("stop_sounds_like is off: no espeak-ng phonemizer (the "
                                      "piper-tts package); only exact stop phrases stop")
        if c.warmup and self.model is not None and (c.backend == "llama_cpp" or c.fallback):
            local = self.model.fallback if isinstance(self.model, Failover) else self.model
            CommandParser(self.schema, local, parser_cfg).parse("hello there friend",
                                                                use_history=False)
        load_seconds = time.monotonic() - started

        # The stop lane: transcripts, partials and barge-in events, never behind the model.
        fast = MutuallyExclusiveCallbackGroup()
        subscription(self, C.TRANSCRIPT, Transcript, self._on_transcript, callback_group=fast)
        subscription(self, C.TRANSCRIPT_PARTIAL, Transcript, self._on_partial,
                     callback_group=fast)
        subscription(self, C.VOICE_EVENTS, VoiceEvent, self._on_event, callback_group=fast)
        service(self, C.PARSE, ParseCommand, self._on_parse,
                callback_group=ReentrantCallbackGroup())
        self.vision_client = client(self, C.VISION_ASK, AskVision,
                                    callback_group=ReentrantCallbackGroup())
        self.lanes = CommandLanes(
            self.parser, self, LaneConfig(queue_size=c.queue_size,
                                          request_timeout=float(c.request_timeout),
                                          parse_concurrency=c.parse_concurrency,
                                          speculate=c.speculate),
            vision=self._ask_vision, on_worker_start=lambda: self.get_logger().info(
                f"model worker: {lower_thread_priority(c.worker_nice)}"))
        templates = sum(len(g.sentences) for s in self.schema.actions.values()
                        for g in s.sentences)
        self.get_logger().info(
            f"schema {path}: {len(self.schema.actions)} actions, {templates} sentence "
            f"templates; model {self.model.name if self.model is not None else 'none'}")
        return "command_parser", load_seconds

    # ------------------------------------------------------------------ the stop lane
    def _on_partial(self, msg: Transcript) -> None:
        self.lanes.on_partial(" ".join(msg.text.split()), msg.utterance_id)

    def _on_transcript(self, msg: Transcript) -> None:
        uid = msg.utterance_id or f"transcript-{next(self._ids)}"
        if msg.is_final:
            self.lanes.on_final(" ".join(msg.text.split()), uid)

    def _on_event(self, msg: VoiceEvent) -> None:
        if msg.source != self.get_fully_qualified_name() and msg.type == VoiceEvent.BARGE_IN:
            self.lanes.on_barge_in(msg.utterance_id, msg.text)

    # ------------------------------------------------------------------ voice/parse
    def _on_parse(self, request: ParseCommand.Request, response: ParseCommand.Response
                  ) -> ParseCommand.Response:
        text = " ".join(request.text.split())
        outcome = self.lanes.request(text, f"parse-{os.getpid()}-{next(self._ids)}",
                                     use_history=request.use_history, publish=request.publish)
        response.success, response.message = outcome.success, outcome.message
        response.reply = outcome.reply
        response.needs_clarification = outcome.needs_clarification
        if outcome.command is not None:
            response.command = self._command_msg(outcome, "", text)
        return response

    def _ask_vision(self, question: str, timeout: float) -> tuple[bool, str, str]:
        """Runs on the worker thread: call_async + done callback, waiting on an Event."""
        if not self.cfg.vision_enabled:
            return False, "", "vision disabled by parameter"
        name = self.vision_client.srv_name
        # A service that appeared a moment ago may not be discovered by this process yet
        # (seconds on a loaded machine): it gets vision_wait_s, not a fixed guess
        wait = min(self.cfg.vision_wait_s, timeout)
        if not self.vision_client.wait_for_service(timeout_sec=wait):
            return False, "", NoVisionService(f"no vision service: {name} is not available")
        done = threading.Event()
        future = self.vision_client.call_async(AskVision.Request(question=question))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            self.vision_client.remove_pending_request(future)
            return False, "", f"{name} gave no answer within {timeout:g} s"
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - a failed future carries any exception
            return False, "", f"{name} failed: {e}"
        if result is None or not result.success:
            return False, "", f"{name}: {result.message if result else 'no response'}"
        return True, result.answer, "ok"

    # ------------------------------------------------------------------ LaneOutput
    def command(self, outcome: ParseOutcome, utterance_id: str, text: str) -> None:
        self.command_pub.publish(self._command_msg(outcome, utterance_id, text))

    def event(self, kind: LaneEvent, utterance_id: str, text: str = "", detail: str = "") -> None:
        self.events_pub.publish(voice_event(self, EVENT_TYPES[kind], utterance_id=utterance_id,
                                            text=text, detail=detail))

    def reply(self, utterance_id: str, seq: int, text: str, final: bool,
              cancelled: bool) -> None:
        msg = ReplyChunk(utterance_id=utterance_id, seq=seq, text=text, final=final,
                         cancelled=cancelled)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.reply_pub.publish(msg)

    def _command_msg(self, outcome: ParseOutcome, utterance_id: str, text: str) -> RobotCommand:
        assert outcome.command is not None
        msg = RobotCommand(utterance_id=utterance_id, action=outcome.command.action,
                           arguments_json=json.dumps(outcome.command.arguments),
                           source_text=text, confidence=float(outcome.confidence),
                           confirmed=outcome.confirmed, origin=outcome.origin)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def pause(self) -> None:
        """deactivate: cancel the generation under way and answer what waits (no command
        comes out of an inactive parser)."""
        if self.lanes is not None:
            self.lanes.cancel_all("deactivated")

    def teardown(self) -> None:
        """cleanup / shutdown: cancel the in-flight generation, answer waiting jobs, free the
        model."""
        if self.lanes is not None:
            self.lanes.close(timeout=10.0)
            self.lanes = None
        if self.model is not None:
            self.model.close()
            self.model = None

def main(args: list[str] | None = None) -> int:
    # executor threads: the stop lane, vision responses, events, and the voice/parse calls that
    # may wait for the model (parse_concurrency, default 2) never starve each other
    return run_node(CommandParserNode, args, num_threads=8)


if __name__ == "__main__":
    raise SystemExit(main())
