"""The command parser: text in, at most one schema-valid command and a spoken reply out.

No ROS here. A request is decided by the first of these that applies (design.md 6.1):

1. **stop**: the schema's stop phrases, rule-based (:meth:`CommandParser.fast_path`, also
   used on partial transcripts by the node);
2. **confirmation**: a yes/no answer to a pending "Should I ...?";
3. **rules** (:meth:`CommandParser.decide`, about a millisecond, no model): a request that tries
   to instruct the parser is refused; one with two commands in it gets "one at a time"; the
   schema's sentence templates (locara_ros.core.intents) give the command, or say why it can't
   be done ("I don't know a place called the attic", "I can turn at most 360 degrees"); a
   follow-up that only changes the previous command ("again", "and now the kitchen") reuses it;
4. **model** (only for what no rule decided): a :class:`~locara_ros.core.backends.chat.
   CommandModel` proposes one action of those the request can mean (a robot action only when one
   of its words was said) under the schema's grammar; the proposal becomes a command only when
   it is grounded in the words (locara_ros.core.grounding), else the robot asks back. The prompt
   is static (system prompt + the schema's examples), so a local model evaluates only the
   request's own tokens.

Replies: robot actions say their schema reply ("Going to the kitchen."); questions get the
schema's known answers or the clock, vision questions go to vision/ask, anything else "Sorry, I
don't know" unless ``answer_source`` is "model" (for a model good enough to answer freely).

Confidence: 1.0 for the rule paths; on the model path the probability of the chosen action among
the candidate actions (two-stage decoding), or 0 when the backend cannot tell. Below
``min_action_prob`` the robot asks back, as it does for anything ungrounded.
"""
from __future__ import annotations

import enum
import logging
import re
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from locara_ros.core.answers import REPLY_NO_ANSWER, clock_answer
from locara_ros.core.backends.chat import CommandModel, action_alternatives
from locara_ros.core.backends.failover import FailedOver
from locara_ros.core.backends.openai_http import BackendError, Cancelled
from locara_ros.core.command_schema import (
    CLARIFY,
    ActionSpec,
    Command,
    CommandError,
    CommandSchema,
    SentenceGroup,
    normalize_words,
)
from locara_ros.core.conversation import (
    INTERRUPTED_NOTE,
    Conversation,
    Turn,
    follow_up,
    refers_back,
)
from locara_ros.core.grounding import Grounding, clauses, injection, said
from locara_ros.core.intents import TemplateMatcher
from locara_ros.core.json_stream import StreamingJsonReader
from locara_ros.core.numbers import normalize_numbers, normalize_request, numbers_in
from locara_ros.core.phonetic import Phonemizer, StopSoundAlike, espeak_or_none
from locara_ros.core.prompts import few_shot_messages, system_prompt

__all__ = ["CommandParser", "Decision", "ParseOutcome", "ParserConfig", "INTERRUPTED_NOTE",
           "match_phrases", "REPLY_NO_ANSWER"]

log = logging.getLogger(__name__)

# What the robot says when things go wrong (the reason goes to the log and voice/events).
REPLY_NOT_UNDERSTOOD = "Sorry, I didn't understand that. Could you say it again?"
REPLY_BACKEND_FAILED = "Sorry, I can't think right now. Please try again."
REPLY_CLARIFY = "Sorry, I'm not sure what you want me to do. Could you say it differently?"
REPLY_CANT_SEE = "I can't see right now."
REPLY_NO_VISION = "I can't see: no vision model is running."


class NoVisionService(str):
    """A VisionFn's reason when no vision service exists at all (not: it failed or was slow):
    the reply then says that no vision model is running."""
REPLY_TOO_LONG = "Sorry, that was too long for me. Please say it in fewer words."
REPLY_REFUSED = "Sorry, I only take commands, not instructions like that."
REPLY_ONE_AT_A_TIME = "One thing at a time, please. What should I do first?"

# A vision callable: (question, timeout_s) -> (ok, answer, reason). The node implements it with an
# asynchronous vision/ask call; None means there is no vision.
VisionFn = Callable[[str, float], "tuple[bool, str, str]"]

PATHS = ("stop", "confirmation", "rules", "template", "follow_up", "model")


@dataclass
class ParserConfig:
    history_turns: int = 4  # user/assistant pairs kept for context
    # "follow_up": the history goes into the model's prompt only for requests that refer back
    # ("and now the bathroom", "put it down", "turn left again"); "always": for every request.
    history_mode: str = "follow_up"
    few_shot: int = -1  # example pairs in the prompt: -1 all from the schema, 0 none
    # "all": the same examples for every request (the model's prompt cache holds them);
    # "similar"/"all+similar": examples chosen per request (a longer prompt to evaluate)
    few_shot_select: str = "all"
    few_shot_similar: int = 3
    normalize_numbers: bool = True  # "two meters" -> "2 meters" before the model sees it
    reply_source: str = "template"  # "template": the schema's reply; "model": the model's
    answer_source: str = "known"  # "known": schema answers + clock; "model": free answers
    templates: bool = True  # decide by the schema's sentence templates first
    model_fallback: bool = True  # ask the model what no rule decided (else: ask back)
    min_action_prob: float = 0.0  # model path: a less likely action asks back instead
    reply_max_chars: int = 160
    max_tokens: int = 160
    temperature: float = 0.0
    generation_timeout_s: float = 30.0
    vision_timeout_s: float = 10.0
    confirmation_timeout_s: float = 20.0
    max_text_chars: int = 400
    fast_path: bool = True
    # Spoken transcripts no rule made a command of stop the robot when they sound like a stop
    # phrase ("Alt." for "halt"): the largest phoneme distance / phrase length; 0 = off.
    stop_sounds_like: float = 0.25


class ErrorKind(str, enum.Enum):
    """What went wrong on the model path (ParseOutcome.error_kind; `error` says it in words)."""

    BACKEND = "backend"  # the model or its server failed: "I can't think right now"
    OUTPUT = "output"  # it answered, but nothing usable: "Sorry, I didn't understand"


@dataclass
class ParseOutcome:
    """Result of one request. `command` is None when the request maps to no command."""

    success: bool
    message: str = "ok"
    command: Command | None = None
    reply: str = ""
    needs_clarification: bool = False
    origin: str = ""
    confirmed: bool = False
    confidence: float = 0.0
    published: bool = False  # on_command was called (the node published voice/command)
    cancelled: bool = False
    error: str = ""  # reason for voice/events ERROR (backend failure, garbage)
    error_kind: ErrorKind | None = None  # set with `error`
    handler: str = ""
    path: str = ""  # which of PATHS decided it
    reason: str = ""  # why the robot asks back (for logs): ungrounded, out of range, ...
    first_reply_s: float | None = None  # seconds from start to the first reply text
    command_s: float | None = None  # seconds from start to the decided command
    raw_output: str = ""

    @property
    def action(self) -> str:
        return self.command.action if self.command is not None else ""


@dataclass(frozen=True)
class Decision:
    """What the rules decided, without a model: a command, or a clarification (command None)."""

    path: str  # "stop", "rules", "template", "follow_up"
    command: Command | None
    reply: str = ""
    reason: str = ""
    group: SentenceGroup | None = None
    text: str = field(default="", compare=False)

    @property
    def origin(self) -> str:
        return "fast_path" if self.path == "stop" else self.path


def match_phrases(text: str, phrases: Iterable[str], filler: Iterable[str] = ()) -> bool:
    """True when the text is made of the given phrases and filler words, with at least one
    phrase. A word may be both ("wait" stops the robot, and "wait, stop" is a stop): a text of
    fillers alone counts only where its words are also a phrase."""
    words = normalize_words(text).split()
    options = [p.split() for p in phrases if p]
    fills = [f.split() for f in filler if f]
    # state[i]: 0 = words[:i] cannot be read so, 1 = read as fillers only, 2 = with a phrase
    state = [0] * (len(words) + 1)
    state[0] = 1
    for i in range(len(words)):
        if not state[i]:
            continue
        for f in fills:
            if words[i:i + len(f)] == f:
                state[i + len(f)] = max(state[i + len(f)], state[i])
        for p in options:
            if words[i:i + len(p)] == p:
                state[i + len(p)] = 2
    return bool(words) and state[len(words)] == 2


LEADING_STOP_WORDS = 8  # "okay robot please stop right now": a stop prefix is never longer


def leading_stop(text: str, phrases: Iterable[str], filler: Iterable[str],
                 names_something: Callable[[str], bool]) -> bool:
    """The request begins with stop phrases (and filler) and the rest does not say what to do
    instead: it is a gerund ("stop driving to the kitchen", "stop turning left") or it names
    nothing the robot could act on ("stop the motors", "abort mission", "cancel that", "stay
    where you are"). A rest that names something (`names_something`: a place, an object, a
    number: "stop at the kitchen", "wait 5 seconds") is a request of its own, not a stop."""
    words = normalize_words(text).split()
    # the longest stop prefix first, of at most LEADING_STOP_WORDS words (this runs on every
    # partial transcript and on typed requests of any length)
    for i in range(min(len(words) - 1, LEADING_STOP_WORDS), 0, -1):
        if match_phrases(" ".join(words[:i]), phrases, filler):
            rest = words[i:]
            if len(rest[0]) > 4 and rest[0].endswith("ing"):
                return True
            return not names_something(" ".join(rest))
    return False


@dataclass
class _Pending:
    command: Command
    spec: ActionSpec
    source_text: str
    expires: float


class CommandParser:
    """Turns text into at most one validated command plus a reply. Call :meth:`parse` from one
    worker thread at a time; :meth:`fast_path`, :meth:`decide` and :meth:`interrupt` are safe
    from any thread. `model` may be None: then only the rules decide."""

    def __init__(self, schema: CommandSchema, model: CommandModel | None,
                 config: ParserConfig | None = None,
                 phonemizer: Phonemizer | None = None) -> None:
        self.schema = schema
        self.model = model
        self.config = config or ParserConfig()
        self.conversation = Conversation(self.config.history_turns)
        self.json_schema = schema.json_schema(self.config.reply_max_chars)
        self.matcher = TemplateMatcher(schema)
        self.grounding = Grounding(schema)
        self._system = system_prompt(schema)
        self._pending: _Pending | None = None
        self._lock = threading.Lock()
        # what a user says for any enum value of the schema (places, objects, directions), less
        # the words that point rather than name ("wait here", "stay right there": stops)
        pointing = {"here", "there", "on"} | set(schema.stop.filler if schema.stop else ())
        self._values = sorted({w for spec in schema.actions.values() for arg in spec.arguments
                               if arg.enum is not None for v in arg.enum for w in arg.spoken(v)
                               if w and w not in pointing})
        self.sound_alike: StopSoundAlike | None = None
        if schema.stop is not None and self.config.fast_path and self.config.stop_sounds_like > 0:
            phonemizer = phonemizer or espeak_or_none()
            if phonemizer is not None:
                self.sound_alike = StopSoundAlike(schema.stop.phrases, schema.stop.filler,
                                                  self.config.stop_sounds_like, phonemizer)

    @property
    def origin(self) -> str:
        if self.model is None:
            return "rules"
        # Behind a Failover, the backend that is actually answering this request.
        served_by = getattr(self.model, "served_by", None)
        return f"llm:{served_by() if callable(served_by) else self.model.name}"

    # ------------------------------------------------------------------ prompt
    def messages(self, text: str, use_history: bool = True) -> list[dict[str, str]]:
        cfg = self.config
        prompt_text = normalize_numbers(text) if cfg.normalize_numbers else text
        msgs = [{"role": "system", "content": self._system}]
        msgs += few_shot_messages(self.schema, prompt_text, cfg.few_shot, cfg.few_shot_select,
                                  cfg.few_shot_similar)
        if use_history and (cfg.history_mode == "always" or refers_back(text)):
            msgs += self.conversation.messages()
        msgs.append({"role": "user", "content": prompt_text})
        return msgs

    # ------------------------------------------------------------------ rule-based paths
    def is_stop(self, text: str) -> bool:
        """The request is a stop: made only of stop phrases (and filler), or its last part
        after a pause is ("no no, stop!", "turn left, wait, stop"), or it begins with one and
        says nothing else to do (:func:`leading_stop`: "stop driving", "abort mission")."""
        stop = self.schema.stop
        if not self.config.fast_path or stop is None:
            return False
        if match_phrases(text, stop.phrases, stop.filler):
            return True
        parts = [p for p in re.split(r"[,.!?;]+|\s+(?:and then|and|then)\s+", text) if p.strip()]
        if len(parts) > 1 and match_phrases(parts[-1], stop.phrases, stop.filler):
            return True
        return leading_stop(text, stop.phrases, stop.filler, self._names_something)

    def _names_something(self, text: str) -> bool:
        """Does `text` say a number or a value of the schema (a place, an object)?"""
        words = normalize_words(normalize_request(text))
        return bool(numbers_in(text)) or any(said(v, words) for v in self._values)

    def sounds_like_stop(self, text: str, decision: Decision | None) -> str | None:
        """For a spoken final transcript: the stop phrase it sounds like, when no rule made a
        command of it (`decision`: :meth:`decide`'s) and no yes/no answer is awaited."""
        if self.sound_alike is None or (decision is not None and decision.command is not None):
            return None
        with self._lock:
            if self._pending is not None:
                return None
        m = self.sound_alike.match(text)
        if m is None:
            return None
        log.info("'%s' sounds like the stop phrase '%s' (%.2f)", text, m[0], m[1])
        return m[0]

    def fast_path(self, text: str, *, utterance_id: str = "", use_history: bool = True,
                  sounds_like: bool = False) -> ParseOutcome | None:
        """The stop fast path (no model): an outcome for stop phrases, else None.
        `sounds_like`: the caller found (:meth:`sounds_like_stop`) that the text sounds like
        one."""
        if not sounds_like and not self.is_stop(text):
            return None
        return self._stop_outcome(text, utterance_id, use_history)

    def _stop_outcome(self, text: str, utterance_id: str, use_history: bool) -> ParseOutcome:
        stop = self.schema.stop
        assert stop is not None
        with self._lock:
            self._pending = None
        if use_history:
            self.conversation.add(Turn(utterance_id, text, stop.action, {}, stop.reply))
        return ParseOutcome(success=True, command=Command(stop.action, {}), reply=stop.reply,
                            origin="fast_path", confidence=1.0, handler="robot", path="stop",
                            first_reply_s=0.0, command_s=0.0)

    def interrupt(self, utterance_id: str, spoken: str) -> None:
        """A barge-in on the reply to `utterance_id`: record what was actually spoken."""
        self.conversation.interrupt(utterance_id, spoken)

    def decide(self, text: str, use_history: bool = True) -> Decision | None:
        """What the rules make of `text` (no model, no side effects), or None for the model.

        Used for final transcripts and, by the node, for partial ones (speculation)."""
        text = " ".join((text or "").split())
        if not text:
            return None
        stop = self.schema.stop
        if self.is_stop(text):
            assert stop is not None
            return Decision("stop", Command(stop.action, {}), stop.reply, text=text)
        if injection(text):
            return Decision("rules", None, REPLY_REFUSED, "refused: the request tries to instruct "
                            "the parser", text=text)
        templates = self.config.templates and self.matcher.enabled
        m = self.matcher.match(text) if templates else None
        if m is not None and m.ok:
            return Decision("template", Command(m.action, m.arguments), "", group=m.group,
                            text=text)
        parts = clauses(text)
        if len(parts) > 1:
            if stop is not None and any(self.is_stop(p) for p in parts):
                return Decision("stop", Command(stop.action, {}), stop.reply, text=text)
            requests = [p for p in parts
                        if (templates and self.matcher.match(p) is not None)
                        or self.grounding.candidates(p)]
            if len(requests) > 1:
                return Decision("rules", None, REPLY_ONE_AT_A_TIME,
                                f"two requests in one sentence: {' | '.join(requests)}", text=text)
        if not templates:
            return None
        if m is not None:
            return Decision("template", None, m.problem, m.detail, m.group, text=text)
        if use_history:
            last = self.conversation.last_action()
            args = follow_up(text, last, self.schema)
            if last is not None and args is not None:
                spec = self.schema.action(last.action)
                try:
                    checked = spec.check_arguments(args)
                except CommandError as e:
                    return Decision("follow_up", None, self.matcher.explain(spec, args), str(e),
                                    text=text)
                return Decision("follow_up", Command(spec.name, checked), text=text)
        return None

    def _confirmation(self, text: str, utterance_id: str, use_history: bool
                      ) -> ParseOutcome | None:
        if not use_history:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        if time.monotonic() > pending.expires:
            log.info("confirmation for '%s' expired", pending.command.action)
            return None
        policy = self.schema.confirmation
        if match_phrases(text, policy.yes, ("please", "robot", "thanks")):
            self.conversation.add(Turn(utterance_id, text, pending.command.action,
                                       dict(pending.command.arguments), policy.confirmed_reply))
            return ParseOutcome(success=True, command=pending.command,
                                reply=policy.confirmed_reply, origin="confirmation",
                                confirmed=True, confidence=1.0, handler=pending.spec.handler,
                                path="confirmation", first_reply_s=0.0, command_s=0.0)
        if match_phrases(text, policy.no, ("please", "robot", "thanks")):
            self.conversation.add(Turn(utterance_id, text, "", {}, policy.declined_reply))
            return ParseOutcome(success=True, reply=policy.declined_reply, origin="confirmation",
                                confidence=1.0, path="confirmation", first_reply_s=0.0)
        log.info("no yes/no answer; dropping the pending '%s'", pending.command.action)
        return None

    # ------------------------------------------------------------------ the main path
    def parse(self, text: str, *, utterance_id: str = "", use_history: bool = True,
              cancel: threading.Event | None = None,
              on_command: Callable[[ParseOutcome], None] | None = None,
              on_reply: Callable[[str], None] | None = None,
              vision: VisionFn | None = None,
              decision: Decision | None = None) -> ParseOutcome:
        """Parse one request. `on_command(outcome)` is called once, as soon as a command that
        should be executed is decided (before the reply is complete); `on_reply(text)` receives
        the spoken reply piece by piece. Both run on the calling thread. `decision`: what
        :meth:`decide` already made of this very text (speculation on a partial transcript)."""
        started = time.monotonic()
        text = " ".join((text or "").split())
        reply_parts: list[str] = []

        def say(piece: str, outcome: ParseOutcome) -> None:
            if not piece:
                return
            if outcome.first_reply_s is None:
                outcome.first_reply_s = time.monotonic() - started
            reply_parts.append(piece)
            if on_reply is not None:
                on_reply(piece)

        def finish(outcome: ParseOutcome) -> ParseOutcome:
            if not reply_parts and outcome.reply:
                say(outcome.reply, outcome)
            outcome.reply = "".join(reply_parts)
            return outcome

        if not text:
            return ParseOutcome(success=False, message="empty text")
        if len(text) > self.config.max_text_chars:
            out = ParseOutcome(success=False, message=f"text too long ({len(text)} characters, "
                               f"max {self.config.max_text_chars})", reply=REPLY_TOO_LONG)
            log.warning("%s", out.message)
            return finish(out)

        rule = self.fast_path(text, utterance_id=utterance_id, use_history=use_history) or \
            self._confirmation(text, utterance_id, use_history)
        if rule is not None:
            if rule.command is not None and on_command is not None:
                rule.published = True
                on_command(rule)
            return finish(rule)

        if decision is None or decision.text != text:
            decision = self.decide(text, use_history)
        if decision is not None:
            outcome = ParseOutcome(success=True, origin=decision.origin, path=decision.path,
                                   confidence=1.0)
            if decision.command is None:
                outcome.needs_clarification, outcome.handler = True, CLARIFY
                outcome.reason = decision.reason
                log.info("asking back on %r: %s", text, decision.reason)
                say(decision.reply, outcome)
            else:
                self._accept(decision.command, outcome, text, started, on_command, use_history)
                self._reply_for(outcome, reply_parts, vision, say, decision.group, text,
                                cancel)
            self._remember(utterance_id, text, outcome, reply_parts, use_history)
            return finish(outcome)

        if self.model is None or not self.config.model_fallback:
            outcome = ParseOutcome(success=True, needs_clarification=True, handler=CLARIFY,
                                   origin="rules", path="rules",
                                   reason="no sentence template matched")
            say(REPLY_CLARIFY, outcome)
            return finish(outcome)
        return finish(self._model_path(text, utterance_id, use_history, cancel, on_command,
                                       vision, started, reply_parts, say))

    # ------------------------------------------------------------------ the model path
    def _model_path(self, text: str, utterance_id: str, use_history: bool,
                    cancel: threading.Event | None,
                    on_command: Callable[[ParseOutcome], None] | None,
                    vision: VisionFn | None, started: float, reply_parts: list[str],
                    say: Callable[[str, ParseOutcome], None],
                    only: list[str] | None = None) -> ParseOutcome:
        candidates = only or self.grounding.candidates(text)
        if not candidates:
            # no word of any action: nothing for a model to choose from
            outcome = ParseOutcome(success=True, needs_clarification=True, handler=CLARIFY,
                                   origin="rules", path="rules",
                                   reason="no word of any action was said")
            say(REPLY_CLARIFY, outcome)
            return outcome
        json_schema = _restrict(self.json_schema, candidates + [CLARIFY])
        messages = self.messages(text, use_history)
        quick = self._choose_and_extract(messages, candidates, text, cancel, on_command,
                                         use_history, started, say)
        if quick is not None:
            if quick.command is not None:
                self._reply_for(quick, reply_parts, vision, say, None, text, cancel)
            self._remember(utterance_id, text, quick, reply_parts, use_history)
            return quick
        for attempt in (1, 2):
            outcome = ParseOutcome(success=True, origin=self.origin, path="model")
            try:
                stop_generation, raw = self._generate(messages, json_schema, text, cancel,
                                                      on_command, use_history, outcome,
                                                      started, reply_parts, say)
            except FailedOver as e:
                if attempt == 1 and outcome.command is None and not reply_parts:
                    log.warning("retrying %r on the fallback: %s", text, e)
                    continue
                outcome.error, outcome.error_kind = f"backend failed: {e}", ErrorKind.BACKEND
                raw = ""
            break
        outcome.raw_output = raw

        if outcome.cancelled:
            self._remember(utterance_id, text, outcome, reply_parts, use_history)
            outcome.reply = "".join(reply_parts)
            return outcome
        if outcome.error:
            kind = outcome.error_kind or ErrorKind.OUTPUT
            log.error("%s (raw output: %r)", outcome.error, raw[:300])
            return ParseOutcome(
                success=False, message=outcome.error, error=outcome.error, error_kind=kind,
                reply=REPLY_BACKEND_FAILED if kind is ErrorKind.BACKEND else REPLY_NOT_UNDERSTOOD,
                origin=self.origin, path="model", raw_output=raw,
                first_reply_s=outcome.first_reply_s, command_s=None)
        if outcome.command is None:  # ask back: the model's question, or ours
            if not reply_parts:
                say(REPLY_CLARIFY, outcome)
        else:
            self._reply_for(outcome, reply_parts, vision, say, None, text, cancel)
        self._remember(utterance_id, text, outcome, reply_parts, use_history)
        return outcome

    def _choose_and_extract(self, messages: list[dict[str, str]], candidates: list[str],
                            text: str, cancel: threading.Event | None,
                            on_command: Callable[[ParseOutcome], None] | None,
                            use_history: bool, started: float,
                            say: Callable[[str, ParseOutcome], None]) -> ParseOutcome | None:
        """A local model that can score actions picks the action (one evaluation); when the
        words determine its arguments (Grounding.extract), that is the command, with no
        generation at all. None: the model has to write the arguments."""
        choose = getattr(self.model, "choose_action", None)
        if not callable(choose) or getattr(self.model, "decode", "") != "two_stage" or \
                getattr(self.model, "_formatter", None) is None:
            return None
        outcome = ParseOutcome(success=True, origin=self.origin, path="model")
        deadline = time.monotonic() + self.config.generation_timeout_s
        try:
            action, confidence = choose(messages, candidates + [CLARIFY], cancel, deadline,
                                        self.config.generation_timeout_s)
        except Cancelled:
            outcome.cancelled, outcome.success, outcome.message = True, False, "cancelled"
            return outcome
        except BackendError as e:
            log.warning("action scoring failed (%s): generating instead", e)
            return None
        if action == CLARIFY:
            outcome.needs_clarification, outcome.handler = True, CLARIFY
            outcome.reason, outcome.confidence = "the model asked back", confidence
            outcome.command_s = time.monotonic() - started
            say(REPLY_CLARIFY, outcome)
            return outcome
        spec = self.schema.action(action)
        args = self.grounding.extract(spec, text)
        if args is None:
            return None
        try:
            command = Command(action, spec.check_arguments(args))
        except CommandError as e:
            outcome.needs_clarification, outcome.handler = True, CLARIFY
            outcome.reason = f"{action}: {e}"
            say(self.matcher.explain(spec, args), outcome)
            return outcome
        self._proposal(command, outcome, text, started, on_command, use_history, confidence)
        if outcome.needs_clarification and outcome.reply:
            say(outcome.reply, outcome)
            outcome.reply = ""
        return outcome

    def _generate(self, messages: list[dict[str, str]], json_schema: dict[str, Any], text: str,
                  cancel: threading.Event | None,
                  on_command: Callable[[ParseOutcome], None] | None, use_history: bool,
                  outcome: ParseOutcome, started: float, reply_parts: list[str],
                  say: Callable[[str, ParseOutcome], None]) -> tuple[bool, str]:
        """Stream one model answer; returns (generation stopped early, raw text)."""
        assert self.model is not None
        cfg = self.config
        reader = StreamingJsonReader("reply")
        held: list[str] = []  # reply text that arrived before the command was validated
        stream_reply = stop_generation = False
        try:
            with closing(self.model.stream(
                    messages, json_schema, cancel=cancel, max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature, timeout_s=cfg.generation_timeout_s)) as deltas:
                for delta in deltas:
                    piece = reader.feed(delta)
                    if outcome.command is None and not outcome.error and \
                            not outcome.needs_clarification:
                        if piece:
                            held.append(piece)
                        if reader.has("action", "arguments"):
                            try:
                                command = self.schema.validate_command(
                                    reader.value("action"), reader.value("arguments"))
                            except CommandError as e:
                                outcome.error = f"invalid command from the model: {e}"
                                break
                            except ValueError as e:  # broken JSON inside action/arguments
                                outcome.error = f"unusable model output: not valid JSON ({e})"
                                break
                            outcome.origin = self.origin  # known once tokens flow
                            stream_reply, stop_generation = self._proposal(
                                command, outcome, text, started, on_command, use_history)
                            if stream_reply:
                                for p in held:
                                    say(p, outcome)
                            if stop_generation:
                                break
                    elif stream_reply and piece:
                        say(piece, outcome)
                    if reader.done or reader.error:
                        break
        except Cancelled:
            outcome.cancelled, outcome.success, outcome.message = True, False, "cancelled"
            log.info("generation for %r cancelled", text[:40])
            return stop_generation, reader.text
        except FailedOver:
            raise
        except BackendError as e:
            outcome.error, outcome.error_kind = f"backend failed: {e}", ErrorKind.BACKEND
            return stop_generation, reader.text
        if outcome.command is None and not outcome.needs_clarification and not outcome.error:
            if reader.error:
                outcome.error = f"unusable model output: {reader.error}"
            else:
                # The head was never complete while streaming (other key order, missing
                # arguments of an argument-less action, truncated output): the whole text.
                try:
                    command, model_reply = self.schema.validate_text(reader.text)
                except CommandError as e:
                    outcome.error = f"unusable model output: {e}"
                else:
                    stream_reply, stop_generation = self._proposal(
                        command, outcome, text, started, on_command, use_history)
                    if stream_reply:
                        say(model_reply, outcome)
        return stop_generation, reader.text

    def _proposal(self, command: Command, outcome: ParseOutcome, text: str, started: float,
                  on_command: Callable[[ParseOutcome], None] | None,
                  use_history: bool, confidence: float | None = None) -> tuple[bool, bool]:
        """A validated model proposal: ground it, then accept it. Returns (stream the model's
        reply, stop generating)."""
        outcome.command_s = time.monotonic() - started
        if confidence is None:
            confidence = getattr(self.model, "last_confidence", None)
        outcome.confidence = confidence if isinstance(confidence, float) else 0.0
        if command.action == CLARIFY:
            outcome.needs_clarification, outcome.handler = True, CLARIFY
            outcome.reason = "the model asked back"
            return True, False
        spec = self.schema.action(command.action)
        if spec.handler == "vision" and spec.argument("question") is not None:
            command = Command(command.action, {**command.arguments,
                                               "question": text.strip().rstrip("?.!")})
        reason = self.grounding.check(command, text)
        if not reason and isinstance(confidence, float) and \
                confidence < self.config.min_action_prob:
            reason = (f"'{command.action}' has p={confidence:.2f} < min_action_prob "
                      f"{self.config.min_action_prob:.2f}")
        if reason:
            log.info("not grounded: %s %s <- %r: %s", command.action,
                     command.arguments_json, text, reason)
            outcome.needs_clarification, outcome.handler = True, CLARIFY
            outcome.reason = f"model proposed {command.action} {command.arguments_json}: {reason}"
            outcome.reply = REPLY_CLARIFY
            return False, True
        return self._accept(command, outcome, text, started, on_command, use_history)

    # ------------------------------------------------------------------ accepting a command
    def _accept(self, command: Command, outcome: ParseOutcome, text: str, started: float,
                on_command: Callable[[ParseOutcome], None] | None,
                use_history: bool) -> tuple[bool, bool]:
        """Record a command; returns (stream the model's reply, stop generating)."""
        outcome.command = command
        if outcome.command_s is None:
            outcome.command_s = time.monotonic() - started
        spec = self.schema.action(command.action)
        outcome.handler = spec.handler
        if spec.handler == "robot":
            if spec.confirm:
                question = self.schema.confirmation.question.format(
                    summary=spec.summary(command.arguments))
                outcome.needs_clarification = True
                outcome.message = "needs confirmation"
                outcome.reply = question
                if use_history:
                    with self._lock:
                        self._pending = _Pending(command, spec, text, time.monotonic() +
                                                 self.config.confirmation_timeout_s)
                return False, True
            if on_command is not None:
                outcome.published = True
                on_command(outcome)
            if self.config.reply_source == "template" and spec.reply:
                outcome.reply = spec.render_reply(command.arguments)
                return False, True
            return True, False
        if spec.handler == "answer":
            return self.config.answer_source == "model", self.config.answer_source != "model"
        return False, True  # vision and say: the reply does not come from the model

    def _reply_for(self, outcome: ParseOutcome, reply_parts: list[str],
                   vision: VisionFn | None, say: Callable[[str, ParseOutcome], None],
                   group: SentenceGroup | None, text: str,
                   cancel: threading.Event | None) -> None:
        command = outcome.command
        if command is None or reply_parts or outcome.reply:
            return
        spec = self.schema.action(command.action)
        if spec.handler == "vision":
            question = str(command.arguments.get("question") or spec.vision_question)
            if vision is None:
                ok, answer, reason = False, "", NoVisionService("no vision service configured")
            else:
                ok, answer, reason = vision(question, self.config.vision_timeout_s)
            if ok and answer.strip():
                say(answer.strip(), outcome)
            else:
                reason = reason if not ok else "empty answer"
                log.warning("vision question %r failed: %s", question, reason)
                outcome.message = f"vision unavailable: {reason}"
                say(REPLY_NO_VISION if isinstance(reason, NoVisionService) else REPLY_CANT_SEE,
                    outcome)
        elif spec.handler == "say":
            say(str(command.arguments.get("text", "")), outcome)
        elif spec.handler == "answer":
            if group is not None and group.answer:
                say(clock_answer(group.answer), outcome)
            elif group is not None and group.reply:
                say(group.reply, outcome)
            elif self.config.answer_source == "model" and self.model is not None and \
                    group is not None:
                # a known question without a known answer: the configured model answers
                free = self._model_path(text, "", False, cancel, None, None, time.monotonic(),
                                        reply_parts, say, only=[spec.name])
                if not reply_parts:
                    say(free.reply or REPLY_NO_ANSWER, outcome)
            else:
                say(REPLY_NO_ANSWER, outcome)
        else:
            say(spec.render_reply(command.arguments) or "Okay.", outcome)

    def _remember(self, utterance_id: str, text: str, outcome: ParseOutcome,
                  reply_parts: list[str], use_history: bool) -> None:
        if not use_history or (outcome.command is None and not outcome.needs_clarification):
            return
        action = outcome.command.action if outcome.command is not None else CLARIFY
        args = dict(outcome.command.arguments) if outcome.command is not None else {}
        self.conversation.add(Turn(utterance_id, text, action, args,
                                   "".join(reply_parts) or outcome.reply))


def _restrict(json_schema: dict[str, Any], actions: list[str]) -> dict[str, Any]:
    """The output schema with only these actions (the model cannot propose the others)."""
    alternatives = action_alternatives(json_schema)
    if not alternatives:
        return json_schema
    keep = [alt for name, alt in alternatives.items() if name in actions]
    return {**json_schema, "anyOf": keep}
