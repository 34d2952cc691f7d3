"""command_parser node: transcripts -> schema-valid robot commands and a spoken reply.

Subscribes voice/transcript, voice/transcript/partial and voice/events (barge-in); publishes
voice/command, voice/reply and voice/events (STOP, COMMAND_READY, CANCELLED, ERROR); serves
voice/parse; calls vision/ask for questions about what the robot sees.

Lanes (design.md 6.1, 6.3):
* the stop lane: transcripts and partials are read in a callback group of their own; a stop
  phrase (also in a partial) publishes `stop` at once and cancels everything else. Rules
  (sentence templates, follow-ups, refusals) decide in about a millisecond right there; a
  partial that is already a complete command is prepared (COMMAND_READY) and published the
  moment the final agrees;
* the model lane: what no rule decides goes to one worker thread through a bounded queue; a newer
  spoken request supersedes (cancels) older ones still waiting or generating;
* voice/parse: rules answer at once; at most `parse_concurrency` calls wait for the model, more
  are answered "busy" at once, and every call is answered within request_timeout.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from locara_ros.core import contract as C
from locara_ros.core.backends.chat import (
    RESPONSE_FORMATS,
    CommandModel,
    LlamaCppCommandModel,
    OpenAICommandModel,
)
from locara_ros.core.backends.failover import Failover
from locara_ros.core.command_schema import load_schema
from locara_ros.core.parser import (
    CommandParser,
    Decision,
    NoVisionService,
    ParseOutcome,
)
from locara_ros.core.worker import BoundedWorker, Policy
from locara_ros.core.settings.command_parser import CommandParserSettings
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, VoiceEvent
from locara_ros.nodes.common import (
    client,
    declare_settings,
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


def default_schema_path() -> str:
    """share/locara_ros/config/commands.yaml of the installed package."""
    from ament_index_python.packages import get_package_share_directory
    return str(Path(get_package_share_directory("locara_ros")) / "config" / "commands.yaml")


@dataclass
class _Job:
    text: str
    utterance_id: str  # id of the reply stream (and of the command, unless from the service)
    command_utterance_id: str
    use_history: bool = True
    publish: bool = True
    spoken: bool = False  # from a transcript (a newer one supersedes it)
    decision: Decision | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: ParseOutcome | None = None


class _ReplyStream:
    """ReplyChunks of one reply: seq numbering, a final chunk, cancellation."""

    def __init__(self, node: CommandParserNode, utterance_id: str, enabled: bool) -> None:
        self.node, self.utterance_id, self.enabled = node, utterance_id, enabled
        self.seq = 0
        self.closed = False

    def send(self, text: str, *, final: bool = False, cancelled: bool = False) -> None:
        if not self.enabled or self.closed:
            return
        msg = ReplyChunk(utterance_id=self.utterance_id, seq=self.seq, text=text, final=final,
                         cancelled=cancelled)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.node.reply_pub.publish(msg)
        self.seq += 1
        self.closed = final


class CommandParserNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("command_parser")
        c = self.cfg = declare_settings(self, CommandParserSettings)
        cfg = c.parser_config()
        self.queue_size = c.queue_size
        self.service_timeout = float(c.request_timeout)
        self.parse_concurrency = c.parse_concurrency
        self.speculate = c.speculate
        self.vision_enabled = c.vision_enabled
        self.vision_wait_s = float(c.vision_wait_s)
        self.worker_nice = c.worker_nice
        self._backend, self._fallback, self._retry_interval = c.backend, c.fallback, \
            c.retry_interval
        self._cfg, self._warmup, self._schema_path = cfg, c.warmup, c.schema_path
        self._kw = dict(model_path=c.model_path, n_ctx=c.n_ctx, n_threads=c.threads,
                        chat_format=c.chat_format, constrained=c.constrained, decode=c.decode,
                        action_score=c.action_score, copy_free_text=c.copy_free_text,
                        server_url=c.server_url, api_key=c.api_key, server_model=c.server_model,
                        response_format=c.response_format, request_timeout=c.server_timeout)
        self.model: CommandModel | None = None
        self._worker: BoundedWorker[_Job] | None = None
        self._ids = itertools.count(1)  # request ids stay unique across configure cycles

    def setup(self) -> tuple[str, float]:
        """configure: load the schema and the model (warmed), subscribe, start the model lane."""
        backend, fallback, cfg, kw = self._backend, self._fallback, self._cfg, self._kw
        started = time.monotonic()
        path = self._schema_path or default_schema_path()
        self.schema = load_schema(path)  # SchemaError names file and line
        self.command_pub = publisher(self, C.COMMAND, RobotCommand)
        self.reply_pub = publisher(self, C.REPLY, ReplyChunk)
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        self.model = self._make_model(backend, **kw)
        if backend == "openai" and fallback:
            self.model = with_failover(self, self.events_pub, "command_parser", self.model,
                                       lambda: self._make_model("llama_cpp", **kw),
                                       probe=self.model.client.health,
                                       retry_interval=float(self._retry_interval))
        self.parser = CommandParser(self.schema, self.model, cfg)
        if cfg.stop_sounds_like > 0 and self.schema.stop is not None and \
                self.parser.sound_alike is None:
            self.get_logger().warning("stop_sounds_like is off: no espeak-ng phonemizer (the "
                                      "piper-tts package); only exact stop phrases stop")
        if self._warmup and self.model is not None and (backend == "llama_cpp" or fallback):
            local = self.model.fallback if isinstance(self.model, Failover) else self.model
            CommandParser(self.schema, local, cfg).parse("hello there friend",
                                                         use_history=False)
        load_seconds = time.monotonic() - started

        # The stop lane: transcripts, partials and barge-in events, never behind the model.
        self._fast_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._vision_group = ReentrantCallbackGroup()
        subscription(self, C.TRANSCRIPT, Transcript, self._on_transcript,
                     callback_group=self._fast_group)
        subscription(self, C.TRANSCRIPT_PARTIAL, Transcript, self._on_partial,
                     callback_group=self._fast_group)
        subscription(self, C.VOICE_EVENTS, VoiceEvent, self._on_event,
                     callback_group=self._fast_group)
        service(self, C.PARSE, ParseCommand, self._on_parse, callback_group=self._service_group)
        self.vision_client = client(self, C.VISION_ASK, AskVision,
                                    callback_group=self._vision_group)

        self._model_calls = threading.BoundedSemaphore(self.parse_concurrency)
        # utterance -> what its latest partial decided; utterances already stopped by a partial
        self._speculation: collections.OrderedDict[str, Decision] = collections.OrderedDict()
        self._stopped: collections.deque[str] = collections.deque(maxlen=32)
        # The model lane: spoken requests drop the oldest waiting one (its caller is told),
        # voice/parse calls are refused as busy (core.worker).
        self._worker = BoundedWorker(
            "command_parser_worker", self.queue_size, Policy.DROP_OLDEST, self._work,
            on_drop=self._on_dropped, on_start=lambda: self.get_logger().info(
                f"model worker: {lower_thread_priority(self.worker_nice)}"))
        templates = sum(len(g.sentences) for s in self.schema.actions.values()
                        for g in s.sentences)
        self.get_logger().info(
            f"schema {path}: {len(self.schema.actions)} actions, {templates} sentence "
            f"templates; model {self.model.name if self.model is not None else 'none'}")
        return "command_parser", load_seconds

    # ------------------------------------------------------------------ set-up
    def _make_model(self, backend: str, **kw: Any) -> CommandModel | None:
        if backend == "none":
            return None
        if backend == "llama_cpp":
            return LlamaCppCommandModel(kw["model_path"], n_ctx=int(kw["n_ctx"]),
                                        n_threads=int(kw["n_threads"]),
                                        chat_format=kw["chat_format"],
                                        constrained=bool(kw["constrained"]),
                                        decode=kw["decode"],
                                        action_score=kw["action_score"],
                                        copy_free_text=bool(kw["copy_free_text"]))
        if not kw["server_url"]:
            raise ValueError("backend 'openai' needs the server_url parameter")
        if kw["response_format"] not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        return OpenAICommandModel(kw["server_url"], api_key=kw["api_key"],
                                  model=kw["server_model"],
                                  timeout_s=float(kw["request_timeout"]),
                                  response_format=kw["response_format"])

    # ------------------------------------------------------------------ the stop lane
    def _on_partial(self, msg: Transcript) -> None:
        text = " ".join(msg.text.split())
        uid = msg.utterance_id
        if not text or not uid:
            return
        if self.parser.is_stop(text):
            if uid not in self._stopped:
                self._stopped.append(uid)
                self._stop(text, uid, uid, use_history=True, publish=True, partial=True)
            return
        if not self.speculate:
            return
        decision = self.parser.decide(text)
        if decision is None or decision.command is None:
            self._speculation.pop(uid, None)
            return
        previous = self._speculation.get(uid)
        self._speculation[uid] = decision
        while len(self._speculation) > 16:
            self._speculation.popitem(last=False)
        if previous is None or previous.command != decision.command:
            self.events_pub.publish(voice_event(
                self, VoiceEvent.COMMAND_READY, utterance_id=uid, text=decision.command.action,
                detail=decision.command.arguments_json))

    def _on_transcript(self, msg: Transcript) -> None:
        text = " ".join(msg.text.split())
        uid = msg.utterance_id or f"transcript-{next(self._ids)}"
        speculated = self._speculation.pop(uid, None)
        if not msg.is_final or not text:
            return
        if uid in self._stopped and self.parser.is_stop(text):
            return  # its partial already stopped the robot
        if self._stop(text, uid, uid, use_history=True, publish=True) is not None:
            return
        decision = speculated if speculated is not None and speculated.text == text else \
            self.parser.decide(text)
        if self.parser.sounds_like_stop(text, decision) is not None:
            if uid not in self._stopped:  # else its partial already stopped the robot
                self._stop(text, uid, uid, use_history=True, publish=True, sounds_like=True)
            return
        self._supersede(f"superseded by {uid}")
        job = _Job(text=text, utterance_id=uid, command_utterance_id=uid, spoken=True,
                   decision=decision)
        if self._cheap(decision):
            self._finish(job, self._run(job))
            return
        self._worker.submit(job)

    def _on_event(self, msg: VoiceEvent) -> None:
        if msg.source == self.get_fully_qualified_name() or msg.type != VoiceEvent.BARGE_IN:
            return
        self.parser.interrupt(msg.utterance_id, msg.text)
        job = self._worker.current
        if job is not None and msg.utterance_id and job.utterance_id == msg.utterance_id:
            self.get_logger().info(f"barge-in on {msg.utterance_id}: cancelling the reply")
            job.cancel.set()

    def _stop(self, text: str, reply_id: str, command_id: str, *, use_history: bool,
              publish: bool, partial: bool = False, sounds_like: bool = False
              ) -> ParseOutcome | None:
        """The stop fast path: publish stop, tell everyone, cancel everything."""
        outcome = self.parser.fast_path(text, utterance_id=command_id or reply_id,
                                        use_history=use_history, sounds_like=sounds_like)
        if outcome is None:
            return None
        if publish:
            self.command_pub.publish(self._command_msg(outcome, command_id, text))
            self.events_pub.publish(voice_event(self, VoiceEvent.STOP, utterance_id=reply_id,
                                                text=text))
            _ReplyStream(self, reply_id, True).send(outcome.reply, final=True)
        self._cancel_all("stop")
        how = " (partial)" if partial else " (sounds like a stop phrase)" if sounds_like else ""
        self.get_logger().info(f"stop fast path{how}: '{text}'")
        return outcome

    def _cheap(self, decision: Decision | None) -> bool:
        """Decided by the rules and answered without waiting for anything (vision, a model)."""
        if decision is None:
            return False
        if decision.command is None:
            return True
        spec = self.schema.action(decision.command.action)
        return spec.handler in ("robot", "say") or (
            spec.handler == "answer" and (self.parser.config.answer_source == "known" or
                                          decision.group is None or
                                          bool(decision.group.reply or decision.group.answer)))

    # ------------------------------------------------------------------ voice/parse
    def _on_parse(self, request: ParseCommand.Request, response: ParseCommand.Response
                  ) -> ParseCommand.Response:
        text = " ".join(request.text.split())
        if not text:
            response.success, response.message = False, "empty text"
            return response
        uid = f"parse-{os.getpid()}-{next(self._ids)}"
        outcome = self._stop(text, uid, "", use_history=request.use_history,
                             publish=request.publish)
        if outcome is None:
            job = _Job(text=text, utterance_id=uid, command_utterance_id="",
                       use_history=request.use_history, publish=request.publish,
                       decision=self.parser.decide(text, request.use_history))
            if self._cheap(job.decision):
                outcome = self._run(job)
            elif not self._model_calls.acquire(blocking=False):
                response.success = False
                response.message = (f"busy: {self.parse_concurrency} requests are waiting for "
                                    "the model; try again")
                return response
            else:
                try:
                    if not self._worker.submit(job, Policy.REFUSE_NEWEST):
                        response.success = False
                        response.message = f"busy: {self.queue_size} requests queued"
                        return response
                    if not job.done.wait(self.service_timeout):
                        job.cancel.set()
                        response.success = False
                        response.message = f"timeout: no result within {self.service_timeout:g} s"
                        return response
                finally:
                    self._model_calls.release()
                outcome = job.outcome
                assert outcome is not None
        response.success, response.message = outcome.success, outcome.message
        response.reply = outcome.reply
        response.needs_clarification = outcome.needs_clarification
        if outcome.command is not None:
            response.command = self._command_msg(outcome, "", text)
        return response

    # ------------------------------------------------------------------ the model lane
    def _on_dropped(self, job: _Job) -> None:
        self.get_logger().warning(f"queue full: dropping '{job.text[:40]}' "
                                  f"({self._worker.counts})")
        self._finish_dropped(job, "dropped: the parser is busy")

    def _supersede(self, reason: str) -> None:
        """A new spoken request: older spoken requests still waiting or generating are stale."""
        for job in self._worker.queue.remove_if(lambda j: j.spoken):
            self._finish_dropped(job, reason)
        job = self._worker.current
        if job is not None and job.spoken:
            job.cancel.set()

    def _cancel_all(self, reason: str) -> None:
        for job in self._worker.queue.remove_if(lambda j: True):
            self._finish_dropped(job, f"cancelled by {reason}")
        job = self._worker.current
        if job is not None:
            job.cancel.set()

    def _finish_dropped(self, job: _Job, why: str) -> None:
        job.outcome = ParseOutcome(success=False, message=why, cancelled=True)
        job.done.set()

    def _finish(self, job: _Job, outcome: ParseOutcome) -> None:
        job.outcome = outcome
        job.done.set()

    def _work(self, job: _Job) -> None:
        """The model worker's handler (self._worker.current is `job` meanwhile, for cancels)."""
        try:
            job.outcome = self._run(job)
        except Exception as e:  # noqa: BLE001 - a failing request is answered, not dropped
            self.get_logger().error(f"parsing '{job.text[:60]}' failed: {e!r}")
            job.outcome = ParseOutcome(success=False, message=f"internal error: {e}")
        finally:
            job.done.set()

    def _run(self, job: _Job) -> ParseOutcome:
        stream = _ReplyStream(self, job.utterance_id, job.publish)
        log = self.get_logger()

        def on_command(outcome: ParseOutcome) -> None:
            if job.publish:
                self.command_pub.publish(self._command_msg(outcome, job.command_utterance_id,
                                                           job.text))
            log.info(f"command {outcome.action} {outcome.command.arguments_json} "
                     f"[{outcome.origin}] <- '{job.text}'")

        outcome = self.parser.parse(
            job.text, utterance_id=job.utterance_id, use_history=job.use_history,
            cancel=job.cancel, on_command=on_command, on_reply=stream.send,
            vision=self._ask_vision, decision=job.decision)
        if outcome.cancelled:
            stream.send("", final=True, cancelled=True)
            if job.publish:
                self.events_pub.publish(voice_event(self, VoiceEvent.CANCELLED,
                                                    utterance_id=job.utterance_id,
                                                    detail="reply generation cancelled"))
            return outcome
        stream.send("", final=True)
        if outcome.error:
            self.events_pub.publish(voice_event(self, VoiceEvent.ERROR,
                                                utterance_id=job.utterance_id,
                                                text=outcome.reply, detail=outcome.error))
        elif outcome.command is None:
            log.info(f"no command for '{job.text}' [{outcome.path}: {outcome.reason}] "
                     f"(reply: '{outcome.reply[:60]}')")
        return outcome

    def _ask_vision(self, question: str, timeout: float) -> tuple[bool, str, str]:
        """Runs on the worker thread: call_async + done callback, waiting on an Event."""
        if not self.vision_enabled:
            return False, "", "vision disabled by parameter"
        name = self.vision_client.srv_name
        # A service that appeared a moment ago may not be discovered by this process yet
        # (seconds on a loaded machine): it gets vision_wait_s, not a fixed guess
        if not self.vision_client.wait_for_service(timeout_sec=min(self.vision_wait_s, timeout)):
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

    # ------------------------------------------------------------------ messages
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
        if self._worker is not None:
            self._cancel_all("deactivated")

    def teardown(self) -> None:
        """cleanup / shutdown: cancel the in-flight generation, answer waiting jobs, free the
        model."""
        if self._worker is not None:
            self._cancel_all("shutdown")
            self._worker.close(timeout=10.0,
                               unserved=lambda j: self._finish_dropped(j, "shutting down"))
            self._worker = None
        if self.model is not None:
            self.model.close()
            self.model = None


def main(args: list[str] | None = None) -> int:
    # executor threads: the stop lane, vision responses, events, and the voice/parse calls that
    # may wait for the model (parse_concurrency, default 2) never starve each other
    return run_node(CommandParserNode, args, num_threads=8)


if __name__ == "__main__":
    raise SystemExit(main())
