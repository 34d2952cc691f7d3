"""The command parser's lanes (no ROS): what happens to a transcript, a partial, a barge-in and a
voice/parse request between the parser (:mod:`locara_ros.core.parser`) and the robot.

Lanes (design.md 6.1, 6.3):

* **the stop lane** - :meth:`CommandLanes.on_partial` / :meth:`~CommandLanes.on_final` run on the
  caller's thread (the node gives them a callback group of their own). A stop phrase, also in a
  partial, publishes ``stop`` at once and cancels everything else; the final of an utterance a
  partial already stopped publishes nothing more. Rules (sentence templates, follow-ups,
  refusals) decide in about a millisecond right there; a partial that is already a complete
  command is prepared (``COMMAND_READY``) and reused when the final says the same.
* **the model lane** - what no rule decides goes to one worker thread through a bounded queue
  (:class:`~locara_ros.core.worker.BoundedWorker`); a newer spoken request supersedes (cancels)
  older ones still waiting or generating; a queue overflow drops the oldest (its caller is told).
* **requests** (voice/parse) - :meth:`CommandLanes.request`: rules answer at once; at most
  ``parse_concurrency`` requests wait for the model, more are answered "busy" at once; every
  request is answered within ``request_timeout``.

Output goes through a :class:`LaneOutput` (the node turns it into ROS messages).
"""
from __future__ import annotations

import collections
import enum
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from locara_ros.core.parser import CommandParser, Decision, ParseOutcome, VisionFn
from locara_ros.core.worker import BoundedWorker, Policy

log = logging.getLogger("locara_ros.lanes")

SPECULATION_KEPT = 16  # utterances whose latest partial decision is remembered
STOPPED_KEPT = 32  # utterances already stopped by a partial


class LaneEvent(enum.Enum):
    """What the lanes announce on voice/events."""

    STOP = "stop"
    COMMAND_READY = "command_ready"
    CANCELLED = "cancelled"
    ERROR = "error"


class LaneOutput(Protocol):
    """Where the lanes' results go (the node: voice/command, voice/events, voice/reply)."""

    def command(self, outcome: ParseOutcome, utterance_id: str, text: str) -> None: ...

    def event(self, kind: LaneEvent, utterance_id: str, text: str = "",
              detail: str = "") -> None: ...

    def reply(self, utterance_id: str, seq: int, text: str, final: bool,
              cancelled: bool) -> None: ...


@dataclass
class LaneConfig:
    queue_size: int = 4  # model-lane jobs waiting
    request_timeout: float = 30.0  # a request is answered within this (s)
    parse_concurrency: int = 2  # requests waiting for the model at once
    speculate: bool = True  # decide on partials (COMMAND_READY)


@dataclass
class Job:
    text: str
    utterance_id: str  # id of the reply stream (and of the command, unless from a request)
    command_utterance_id: str
    use_history: bool = True
    publish: bool = True
    spoken: bool = False  # from a transcript (a newer one supersedes it)
    decision: Decision | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: ParseOutcome | None = None

    def finish(self, outcome: ParseOutcome) -> None:
        self.outcome = outcome
        self.done.set()

    def drop(self, why: str) -> None:
        self.finish(ParseOutcome(success=False, message=why, cancelled=True))


class ReplyStream:
    """The chunks of one reply: seq numbering, one final chunk, nothing after it."""

    def __init__(self, out: LaneOutput, utterance_id: str, enabled: bool) -> None:
        self.out, self.utterance_id, self.enabled = out, utterance_id, enabled
        self.seq = 0
        self.closed = False

    def send(self, text: str, *, final: bool = False, cancelled: bool = False) -> None:
        if not self.enabled or self.closed:
            return
        self.out.reply(self.utterance_id, self.seq, text, final, cancelled)
        self.seq += 1
        self.closed = final


class CommandLanes:
    """The stop lane, the model lane and requests over one :class:`CommandParser`."""

    def __init__(self, parser: CommandParser, out: LaneOutput, config: LaneConfig, *,
                 vision: VisionFn | None = None,
                 on_worker_start: Callable[[], None] | None = None) -> None:
        self.parser, self.out, self.config = parser, out, config
        self.vision = vision
        self._model_calls = threading.BoundedSemaphore(max(1, config.parse_concurrency))
        # utterance -> what its latest partial decided; utterances already stopped by a partial
        self._speculation: collections.OrderedDict[str, Decision] = collections.OrderedDict()
        self._stopped: collections.deque[str] = collections.deque(maxlen=STOPPED_KEPT)
        self.worker: BoundedWorker[Job] = BoundedWorker(
            "command_parser_worker", config.queue_size, Policy.DROP_OLDEST, self._work,
            on_drop=self._dropped, on_start=on_worker_start)

    # ------------------------------------------------------------------ the stop lane
    def on_partial(self, text: str, uid: str) -> None:
        """A partial transcript of utterance `uid` (text already whitespace-normalised)."""
        if not text or not uid:
            return
        if self.parser.is_stop(text):
            if uid not in self._stopped:
                self._stopped.append(uid)
                self.stop(text, uid, uid, use_history=True, publish=True, partial=True)
            return
        if not self.config.speculate:
            return
        decision = self.parser.decide(text)
        if decision is None or decision.command is None:
            self._speculation.pop(uid, None)
            return
        previous = self._speculation.get(uid)
        self._speculation[uid] = decision
        while len(self._speculation) > SPECULATION_KEPT:
            self._speculation.popitem(last=False)
        if previous is None or previous.command != decision.command:
            self.out.event(LaneEvent.COMMAND_READY, uid, decision.command.action,
                           decision.command.arguments_json)

    def on_final(self, text: str, uid: str) -> None:
        """The final transcript of utterance `uid`: stop, a rule's command at once, or the model
        lane (superseding older spoken requests)."""
        speculated = self._speculation.pop(uid, None)
        if not text:
            return
        if uid in self._stopped and self.parser.is_stop(text):
            return  # its partial already stopped the robot
        if self.stop(text, uid, uid, use_history=True, publish=True) is not None:
            return
        decision = speculated if speculated is not None and speculated.text == text else \
            self.parser.decide(text)
        if self.parser.sounds_like_stop(text, decision) is not None:
            if uid not in self._stopped:  # else its partial already stopped the robot
                self.stop(text, uid, uid, use_history=True, publish=True, sounds_like=True)
            return
        self._supersede(f"superseded by {uid}")
        job = Job(text=text, utterance_id=uid, command_utterance_id=uid, spoken=True,
                  decision=decision)
        if self._cheap(decision):
            job.finish(self._run(job))
            return
        self.worker.submit(job)

    def on_barge_in(self, utterance_id: str, spoken: str) -> None:
        """The robot was interrupted while speaking reply `utterance_id` (`spoken`: what it had
        said): the history keeps only that, and the generation of that reply stops."""
        self.parser.interrupt(utterance_id, spoken)
        job = self.worker.current
        if job is not None and utterance_id and job.utterance_id == utterance_id:
            log.info(f"barge-in on {utterance_id}: cancelling the reply")
            job.cancel.set()

    def stop(self, text: str, reply_id: str, command_id: str, *, use_history: bool,
             publish: bool, partial: bool = False, sounds_like: bool = False
             ) -> ParseOutcome | None:
        """The stop fast path: publish stop, tell everyone, cancel everything. None when
        `text` is not a stop phrase."""
        outcome = self.parser.fast_path(text, utterance_id=command_id or reply_id,
                                        use_history=use_history, sounds_like=sounds_like)
        if outcome is None:
            return None
        if publish:
            self.out.command(outcome, command_id, text)
            self.out.event(LaneEvent.STOP, reply_id, text)
            ReplyStream(self.out, reply_id, True).send(outcome.reply, final=True)
        self.cancel_all("stop")
        how = " (partial)" if partial else " (sounds like a stop phrase)" if sounds_like else ""
        log.info(f"stop fast path{how}: '{text}'")
        return outcome

    def _cheap(self, decision: Decision | None) -> bool:
        """Decided by the rules and answered without waiting for anything (vision, a model)."""
        if decision is None:
            return False
        if decision.command is None:
            return True
        spec = self.parser.schema.action(decision.command.action)
        return spec.handler in ("robot", "say") or (
            spec.handler == "answer" and (self.parser.config.answer_source == "known" or
                                          decision.group is None or
                                          bool(decision.group.reply or decision.group.answer)))

    # ------------------------------------------------------------------ requests
    def request(self, text: str, uid: str, *, use_history: bool, publish: bool) -> ParseOutcome:
        """A voice/parse request (blocks the caller up to request_timeout): the outcome, or
        success=False with "busy: ..." / "timeout: ..."."""
        if not text:
            return ParseOutcome(success=False, message="empty text")
        outcome = self.stop(text, uid, "", use_history=use_history, publish=publish)
        if outcome is not None:
            return outcome
        job = Job(text=text, utterance_id=uid, command_utterance_id="", use_history=use_history,
                  publish=publish, decision=self.parser.decide(text, use_history))
        if self._cheap(job.decision):
            return self._run(job)
        cfg = self.config
        if not self._model_calls.acquire(blocking=False):
            return ParseOutcome(success=False, message=f"busy: {cfg.parse_concurrency} "
                                "requests are waiting for the model; try again")
        try:
            if not self.worker.submit(job, Policy.REFUSE_NEWEST):
                return ParseOutcome(success=False,
                                    message=f"busy: {cfg.queue_size} requests queued")
            if not job.done.wait(cfg.request_timeout):
                job.cancel.set()
                return ParseOutcome(success=False, message="timeout: no result within "
                                    f"{cfg.request_timeout:g} s")
        finally:
            self._model_calls.release()
        assert job.outcome is not None
        return job.outcome

    # ------------------------------------------------------------------ the model lane
    def _dropped(self, job: Job) -> None:
        log.warning(f"queue full: dropping '{job.text[:40]}' ({self.worker.counts})")
        job.drop("dropped: the parser is busy")

    def _supersede(self, reason: str) -> None:
        """A new spoken request: older spoken requests still waiting or generating are stale."""
        for job in self.worker.queue.remove_if(lambda j: j.spoken):
            job.drop(reason)
        job = self.worker.current
        if job is not None and job.spoken:
            job.cancel.set()

    def cancel_all(self, reason: str) -> None:
        """Answer every waiting job (cancelled) and cancel the generation under way."""
        for job in self.worker.queue.remove_if(lambda j: True):
            job.drop(f"cancelled by {reason}")
        job = self.worker.current
        if job is not None:
            job.cancel.set()

    def close(self, timeout: float = 10.0) -> None:
        self.cancel_all("shutdown")
        self.worker.close(timeout=timeout, unserved=lambda j: j.drop("shutting down"))

    def _work(self, job: Job) -> None:
        """The model worker's handler (worker.current is `job` meanwhile, for cancels)."""
        try:
            job.outcome = self._run(job)
        except Exception as e:  # noqa: BLE001 - a failing request is answered, not dropped
            log.error(f"parsing '{job.text[:60]}' failed: {e!r}")
            job.outcome = ParseOutcome(success=False, message=f"internal error: {e}")
        finally:
            job.done.set()

    def _run(self, job: Job) -> ParseOutcome:
        stream = ReplyStream(self.out, job.utterance_id, job.publish)

        def on_command(outcome: ParseOutcome) -> None:
            if job.publish:
                self.out.command(outcome, job.command_utterance_id, job.text)
            log.info(f"command {outcome.action} {outcome.command.arguments_json} "
                     f"[{outcome.origin}] <- '{job.text}'")

        outcome = self.parser.parse(
            job.text, utterance_id=job.utterance_id, use_history=job.use_history,
            cancel=job.cancel, on_command=on_command, on_reply=stream.send,
            vision=self.vision, decision=job.decision)
        if outcome.cancelled:
            stream.send("", final=True, cancelled=True)
            if job.publish:
                self.out.event(LaneEvent.CANCELLED, job.utterance_id,
                               detail="reply generation cancelled")
            return outcome
        stream.send("", final=True)
        if outcome.error:
            self.out.event(LaneEvent.ERROR, job.utterance_id, outcome.reply, outcome.error)
        elif outcome.command is None:
            log.info(f"no command for '{job.text}' [{outcome.path}: {outcome.reason}] "
                     f"(reply: '{outcome.reply[:60]}')")
        return outcome
