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
    ParserConfig,
)
from locara_ros.core.worker import BoundedWorker, Policy
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, VoiceEvent
from locara_ros.nodes.common import (
    client,
    declare,
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

BACKENDS = ("llama_cpp", "openai", "none")


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


# Parameter ranges (inclusive); a value outside stops the node at start-up with the reason.
_LIMITS = {
    "n_ctx": (256, 131072), "threads": (0, 256), "server_timeout": (0.1, 3600.0),
    "retry_interval": (0.1, 3600.0), "history_turns": (0, 100), "few_shot": (-1, 10000),
    "few_shot_similar": (0, 100), "min_action_prob": (0.0, 1.0), "reply_max_chars": (10, 10000),
    "max_tokens": (1, 8192), "temperature": (0.0, 2.0), "generation_timeout_s": (0.1, 3600.0),
    "vision_timeout_s": (0.1, 600.0), "vision_wait_s": (0.0, 600.0),
    "confirmation_timeout_s": (0.1, 3600.0),
    "max_text_chars": (1, 100000), "queue_size": (1, 1000), "request_timeout": (0.1, 3600.0),
    "parse_concurrency": (1, 64), "worker_nice": (0, 19), "stop_sounds_like": (0.0, 0.5),
}


class CommandParserNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("command_parser")
        def p(name: str, default: Any, description: str) -> Any:
            # read at start-up only: read-only, so `ros2 param set` says so
            return declare(self, name, default, description, limits=_LIMITS.get(name))
        schema_path = p("schema_path", "", "Command schema YAML; empty = the installed "
                        "share/locara_ros/config/commands.yaml")
        backend = p("backend", "llama_cpp", "Model for what no sentence template decides: "
                    "llama_cpp (local GGUF), openai (OpenAI-compatible chat server) or none "
                    "(templates only: anything else is asked back)")
        model_path = p("model_path", "", "GGUF file for llama_cpp; empty = packaged "
                       "SmolLM2-135M-Instruct")
        n_ctx = p("n_ctx", 2048, "llama_cpp context length in tokens")
        n_threads = p("threads", 0, "llama_cpp CPU threads; 0 = llama.cpp's default")
        chat_format = p("chat_format", "", "llama_cpp chat format; empty = the GGUF's template")
        constrained = p("constrained", True, "llama_cpp: grammar-constrained decoding derived "
                        "from the schema")
        decode = p("decode", "two_stage", "llama_cpp: two_stage (score the candidate action "
                   "names, then generate the chosen action's arguments) or grammar (one "
                   "constrained pass)")
        action_score = p("action_score", "first", "llama_cpp two_stage: rank candidate actions "
                         "by the log-likelihood of the name's first token (one evaluation for "
                         "all when first tokens differ), or its mean or sum over the name")
        copy_free_text = p("copy_free_text", True, "llama_cpp: free-text arguments (no enum) "
                           "must be a span of the request's words")
        server_url = p("server_url", "", "openai: base URL, e.g. http://gpu:8080/v1")
        api_key = p("api_key", "", "openai: API key (empty = none)")
        server_model = p("server_model", "", "openai: model name to request")
        response_format = p("response_format", "auto", "openai: json_schema, json_object, none "
                            "or auto (json_schema, falling back on refusal; the accepted format "
                            "is remembered)")
        request_timeout = p("server_timeout", 30.0, "openai: connect/read timeout in seconds "
                            "(a server silent this long is taken as down)")
        fallback = p("fallback", "", "openai: local backend used while the server is "
                     "unreachable ('llama_cpp' with model_path; empty = none)")
        retry_interval = p("retry_interval", 5.0, "seconds between probes of an unreachable "
                           "server")
        cfg = ParserConfig(
            history_turns=p("history_turns", 4, "Conversation turns kept as context (0 = none)"),
            history_mode=p("history_mode", "follow_up", "follow_up: give the model the history "
                           "only for requests that refer back ('and now...', 'put it down', "
                           "'again'); always: for every request"),
            few_shot=p("few_shot", -1, "Schema examples in the prompt: -1 all, 0 none, n first"),
            few_shot_select=p("few_shot_select", "all", "Example choice: all (the same for every "
                              "request: the prompt cache holds them), similar or all+similar"),
            few_shot_similar=p("few_shot_similar", 3, "Most similar examples repeated before "
                               "the request (all+similar)"),
            normalize_numbers=p("normalize_numbers", True, "Rewrite spoken numbers as digits "
                                "before the model sees the text"),
            reply_source=p("reply_source", "template", "template: robot actions say the "
                           "schema's reply; model: the model's reply"),
            answer_source=p("answer_source", "known", "known: answers come from the schema and "
                            "the clock, anything else is 'I don't know'; model: the model answers "
                            "freely (only with a model good enough, e.g. a bigger GGUF or a "
                            "server)"),
            templates=p("templates", True, "Decide by the schema's sentence templates first"),
            model_fallback=p("model_fallback", True, "Ask the model what no template decides "
                             "(false: ask the user back)"),
            min_action_prob=p("min_action_prob", 0.0, "Model path: an action less likely than "
                              "this (among the candidates) is asked back; 0 = off"),
            reply_max_chars=p("reply_max_chars", 160, "Maximum reply length in characters"),
            max_tokens=p("max_tokens", 160, "Maximum generated tokens per request"),
            temperature=p("temperature", 0.0, "Sampling temperature (0 = greedy)"),
            generation_timeout_s=p("generation_timeout_s", 30.0, "Give up on a generation "
                                   "after this many seconds"),
            vision_timeout_s=p("vision_timeout_s", 10.0, "Wait this long for vision/ask"),
            confirmation_timeout_s=p("confirmation_timeout_s", 20.0, "A pending 'are you sure?' "
                                     "expires after this many seconds"),
            max_text_chars=p("max_text_chars", 400, "Longer requests are refused"),
            fast_path=p("stop_fast_path", True, "Recognise the schema's stop phrases without "
                        "the model, in final and partial transcripts"),
            stop_sounds_like=p("stop_sounds_like", 0.25, "A spoken final that no rule makes a "
                               "command of stops the robot when its sounds are this close to a "
                               "stop phrase ('Alt.' for 'halt'; phoneme edit distance / phrase "
                               "length); 0 = off"),
        )
        self.queue_size = max(1, int(p("queue_size", 4, "Requests waiting for the model; the "
                                       "oldest transcript is dropped when full")))
        self.service_timeout = float(p("request_timeout", 60.0, "voice/parse answers "
                                       "success=false after this many seconds"))
        self.parse_concurrency = max(1, int(p("parse_concurrency", 2, "voice/parse calls that "
                                              "may wait for the model at once; more are "
                                              "answered busy")))
        self.speculate = bool(p("speculate", True, "Prepare the command from partial "
                                "transcripts (COMMAND_READY); the final that agrees publishes it "
                                "with no further work"))
        self.vision_enabled = bool(p("vision_enabled", True, "Call vision/ask for vision "
                                     "actions; false = always 'I can't see right now'"))
        self.vision_wait_s = float(p("vision_wait_s", 3.0, "A vision/ask service not (yet) "
                                     "discovered is waited for this long before the reply "
                                     "says no vision model is running"))
        self.worker_nice = int(p("worker_nice", 19, "CPU priority (nice, Linux) of the model "
                                 "worker thread and its compute threads: on a busy CPU the "
                                 "recognizer, the stop lane and the tts come first; 0 = normal"))
        warmup = bool(p("warmup", True, "Run one generation at start-up to fill the prompt "
                        "cache"))
        for name, value, allowed in (
                ("backend", backend, BACKENDS),
                ("few_shot_select", cfg.few_shot_select, ("all", "similar", "all+similar")),
                ("history_mode", cfg.history_mode, ("follow_up", "always")),
                ("reply_source", cfg.reply_source, ("model", "template")),
                ("answer_source", cfg.answer_source, ("known", "model"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got '{value}'")
        if backend == "openai" and fallback not in ("", "llama_cpp"):
            raise ValueError(f"fallback must be '' or 'llama_cpp', got '{fallback}'")
        self._backend, self._fallback, self._retry_interval = backend, fallback, retry_interval
        self._cfg, self._warmup, self._schema_path = cfg, warmup, schema_path
        self._kw = dict(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads,
                        chat_format=chat_format, constrained=constrained, decode=decode,
                        action_score=action_score, copy_free_text=copy_free_text,
                        server_url=server_url, api_key=api_key, server_model=server_model,
                        response_format=response_format, request_timeout=request_timeout)
        self.model: CommandModel | None = None
        self._worker: BoundedWorker[_Job] | None = None

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
        self._ids = itertools.count(1)
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
