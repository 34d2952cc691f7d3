"""The command parser: text in, at most one schema-valid command and a spoken reply out.

No ROS here. :class:`CommandParser` owns the conversation history, the rule-based stop fast path,
the confirmation policy and the prompt; it drives a :class:`~locara_ros.core.backends.chat.
CommandModel` and reads its JSON output incrementally (:class:`StreamingJsonReader`), so that the
command is known (and can be published) as soon as ``action`` and ``arguments`` are complete, and
the ``reply`` string streams to the caller character by character while the model writes it.

Nothing the model writes becomes a command before :class:`~locara_ros.core.command_schema.
CommandSchema` has validated it; garbage (invalid JSON, wrong types, out-of-range values, unknown
actions, empty output, timeouts) is logged and answered with a spoken apology.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from locara_ros.core.backends.chat import CommandModel
from locara_ros.core.backends.openai_http import BackendError, Cancelled
from locara_ros.core.command_schema import (
    CLARIFY,
    ActionSpec,
    Command,
    CommandError,
    CommandSchema,
    Example,
    normalize_words,
)

log = logging.getLogger(__name__)

# What the robot says when things go wrong (the reason goes to the log and voice/events).
REPLY_NOT_UNDERSTOOD = "Sorry, I didn't understand that. Could you say it again?"
REPLY_BACKEND_FAILED = "Sorry, I can't think right now. Please try again."
REPLY_CLARIFY = "Sorry, I'm not sure what you want me to do. Could you say it differently?"
REPLY_CANT_SEE = "I can't see right now."
REPLY_NO_ANSWER = "Sorry, I don't know."
REPLY_TOO_LONG = "Sorry, that was too long for me. Please say it in fewer words."
INTERRUPTED_NOTE = " [the user interrupted me here]"

# A vision callable: (question, timeout_s) -> (ok, answer, reason). The node implements it with an
# asynchronous vision/ask call; None means there is no vision.
VisionFn = Callable[[str, float], "tuple[bool, str, str]"]


@dataclass
class ParserConfig:
    history_turns: int = 4  # user/assistant pairs kept for context
    # "follow_up": the history goes into the prompt only for requests that refer back ("and now
    # the bathroom", "put it down", "turn left again"); "always": for every request. Small models
    # copy the last turn: with "always", SmolLM2-135M answered ten different requests after
    # "pick up the cup" with pick_up(cup) (bench/e2e.py); the history is recorded either way.
    history_mode: str = "follow_up"
    few_shot: int = -1  # example pairs in the prompt: -1 all from the schema, 0 none
    few_shot_select: str = "all+similar"  # all | similar | all+similar (few_shot_messages)
    few_shot_similar: int = 3  # examples repeated before the request with "all+similar"
    normalize_numbers: bool = True  # "two meters" -> "2 meters" before the model sees it
    reply_source: str = "model"  # "model": stream the model's reply; "template": the schema's
    reply_max_chars: int = 160
    max_tokens: int = 160
    temperature: float = 0.0
    generation_timeout_s: float = 30.0
    vision_timeout_s: float = 10.0
    confirmation_timeout_s: float = 20.0
    max_text_chars: int = 400
    fast_path: bool = True


# Words by which a request leans on what was said before: "and now the bathroom", "put it down",
# "turn left again", "no, the other one", "do that too".
_REFERS_BACK = re.compile(
    r"^\s*(and|also|then|now|but|no|not|instead|again|same|more|another)\b"
    r"|\b(it|its|that|there|them|this one|that one|again|too|instead|as well|the same|"
    r"the other|more|further|back)\b", re.IGNORECASE)


def refers_back(text: str) -> bool:
    """True when a request seems to need the conversation to be understood."""
    return bool(_REFERS_BACK.search(text))


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
    handler: str = ""
    first_reply_s: float | None = None  # seconds from start to the first reply text
    command_s: float | None = None  # seconds from start to the decided command
    raw_output: str = ""

    @property
    def action(self) -> str:
        return self.command.action if self.command is not None else ""


# ====================================================================== text helpers
_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
          "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
          "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def normalize_numbers(text: str) -> str:
    """Spoken numbers to digits, as a recognizer would not always do: "two meters" -> "2 meters",
    "one and a half" -> "1.5", "half a meter" -> "0.5 meter", "a hundred and eighty" -> "180"."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        value, used = _read_number(words, i)
        if used:
            trail = re.sub(r"^[A-Za-z-]+", "", words[i + used - 1])
            out.append(_fmt(value) + trail)
            i += used
            continue
        out.append(words[i])
        i += 1
    return " ".join(out)


def _word(w: str) -> str:
    return re.sub(r"[^a-z-]", "", w.lower())


def _read_number(words: list[str], i: int) -> tuple[float, int]:
    """(value, words used) for a spoken number starting at words[i]; (0, 0) when none."""
    w = _word(words[i])
    nxt = _word(words[i + 1]) if i + 1 < len(words) else ""
    if w == "half" and nxt in ("a", "an"):  # "half a meter"
        return 0.5, 2
    if w in ("a", "an") and nxt == "half":  # "a half meter"
        return 0.5, 2
    total, current, used, seen = 0, 0, 0, False
    j = i
    while j < len(words):
        t = _word(words[j])
        parts = t.split("-") if "-" in t else [t]
        if all(p in _UNITS or p in _TENS for p in parts) and t:
            for p in parts:
                current += _UNITS.get(p, 0) + _TENS.get(p, 0)
            seen, used = True, j - i + 1
        elif t == "hundred" and (seen or (j > i and _word(words[j - 1]) in ("a", "an"))):
            current = (current or 1) * 100
            seen, used = True, j - i + 1
        elif t in ("a", "an") and j + 1 < len(words) and _word(words[j + 1]) == "hundred" \
                and not seen:
            pass
        elif t == "and" and seen and j + 1 < len(words):
            # "one and a half", "a hundred and eighty"
            rest = [_word(x) for x in words[j + 1:j + 3]]
            if rest[:2] == ["a", "half"]:
                return total + current + 0.5, j - i + 3
            if rest and (rest[0] in _UNITS or rest[0] in _TENS):
                pass
            else:
                break
        else:
            break
        j += 1
    if not seen:
        return 0, 0
    if used and _word(words[i]) in ("a", "an") and used == 1:
        return 0, 0
    return float(total + current), used


def match_phrases(text: str, phrases: Iterable[str], filler: Iterable[str] = ()) -> bool:
    """True when the text, without filler words, is made only of the given phrases."""
    words = [w for w in normalize_words(text).split() if w not in set(filler)]
    if not words:
        return False
    options = [p.split() for p in phrases if p]
    reachable = [False] * (len(words) + 1)
    reachable[0] = True
    for i in range(len(words)):
        if not reachable[i]:
            continue
        for p in options:
            if words[i:i + len(p)] == p:
                reachable[i + len(p)] = True
    return reachable[len(words)]


# ====================================================================== streaming JSON reader
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


class StreamingJsonReader:
    """Reads one top-level JSON object as it is generated.

    Records the raw text of each completed top-level value (so a caller can act as soon as some
    keys are complete) and decodes the string value of `stream_key` incrementally, JSON escapes
    included, returning the decoded characters from :meth:`feed` as they arrive.
    """

    def __init__(self, stream_key: str = "reply") -> None:
        self.stream_key = stream_key
        self.raw: list[str] = []
        self.values: dict[str, str] = {}  # key -> raw JSON text of the completed value
        self.done = False
        self.error = ""
        self._depth = 0
        self._in_string = False
        self._escape: str | None = None  # escape sequence so far, after the backslash
        self._high_surrogate = ""
        self._state = "start"  # start | key | colon | value | after
        self._key: list[str] = []
        self._current_key = ""
        self._value_start = -1
        self._value_kind = ""  # string | nested | scalar
        self._streaming = False

    @property
    def text(self) -> str:
        return "".join(self.raw)

    def has(self, *keys: str) -> bool:
        return all(k in self.values for k in keys)

    def value(self, key: str) -> Any:
        return json.loads(self.values[key])

    def feed(self, delta: str) -> str:
        out: list[str] = []
        for ch in delta:
            self._char(ch, out)
        return "".join(out)

    def _end_value(self, end: int) -> None:
        self.values[self._current_key] = "".join(self.raw[self._value_start:end])
        self._value_start, self._value_kind, self._streaming = -1, "", False
        self._state = "after"

    def _char(self, ch: str, out: list[str]) -> None:
        self.raw.append(ch)
        pos = len(self.raw) - 1
        if self.done or self.error:
            return
        if self._in_string:
            self._string_char(ch, pos, out)
            return
        top = self._depth == 1
        if ch == '"':
            self._in_string = True
            if top and self._state in ("start", "key"):
                self._state, self._key = "key", []
            elif top and self._state == "value":
                self._value_start, self._value_kind = pos, "string"
                self._streaming = self._current_key == self.stream_key
            return
        if ch in "{[":
            self._depth += 1
            if self._depth == 1:
                if ch != "{":
                    self.error = "output is not a JSON object"
                self._state = "start"
            elif self._depth == 2 and self._state == "value":
                self._value_start, self._value_kind = pos, "nested"
            return
        if ch in "}]":
            if top and self._value_kind == "scalar":
                self._end_value(pos)
            self._depth -= 1
            if self._depth == 1 and self._value_kind == "nested":
                self._end_value(pos + 1)
            elif self._depth == 0:
                self.done = True
            elif self._depth < 0:
                self.error = "unbalanced brackets"
            return
        if not top:
            return
        if ch == ":" and self._state == "colon":
            self._state = "value"
        elif ch == ",":
            if self._value_kind == "scalar":
                self._end_value(pos)
            self._state = "key"
        elif ch.isspace():
            if self._value_kind == "scalar":
                self._end_value(pos)
        elif self._state == "value" and self._value_start < 0:
            self._value_start, self._value_kind = pos, "scalar"

    def _string_char(self, ch: str, pos: int, out: list[str]) -> None:
        top_key = self._depth == 1 and self._state == "key"
        if self._escape is not None:  # inside an escape sequence (after the backslash)
            seq = self._escape + ch
            if seq[0] == "u" and len(seq) < 5:
                self._escape = seq
                return
            self._escape = None
            if seq[0] == "u":
                try:
                    decoded = chr(int(seq[1:], 16))
                except ValueError:
                    decoded = ""
            else:
                decoded = _ESCAPES.get(seq, "")
            if decoded and 0xD800 <= ord(decoded) <= 0xDBFF:
                self._high_surrogate = decoded
                return
            if self._high_surrogate:
                pair = self._high_surrogate + decoded
                self._high_surrogate = ""
                decoded = pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le",
                                                                           "replace")
            self._emit(decoded, top_key, out)
            return
        if ch == "\\":
            self._escape = ""
            return
        if ch == '"':
            self._in_string = False
            if top_key:
                self._current_key = "".join(self._key)
                self._state = "colon"
            elif self._depth == 1 and self._value_kind == "string":
                self._end_value(pos + 1)
            return
        self._emit(ch, top_key, out)

    def _emit(self, text: str, top_key: bool, out: list[str]) -> None:
        if top_key:
            self._key.append(text)
        elif self._streaming:
            out.append(text)


# ====================================================================== conversation
@dataclass
class Turn:
    utterance_id: str
    user: str
    action: str  # schema action or CLARIFY; "" for a turn that produced nothing
    arguments: dict[str, Any] = field(default_factory=dict)
    reply: str = ""
    interrupted: bool = False

    def assistant_json(self) -> str:
        return _output_json(self.action or CLARIFY, self.arguments, self.reply)


class Conversation:
    """Bounded history of turns, safe to use from the worker and from callbacks.

    A barge-in (:meth:`interrupt`) rewrites the assistant turn of that utterance to what was
    actually spoken plus a note that the user interrupted; when it arrives before the turn is
    recorded (generation still running), it is applied when the turn is added.
    """

    def __init__(self, max_turns: int = 4) -> None:
        self.max_turns = max(0, int(max_turns))
        self._turns: deque[Turn] = deque(maxlen=self.max_turns or 1)
        self._interruptions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, turn: Turn) -> None:
        if self.max_turns == 0:
            return
        with self._lock:
            spoken = self._interruptions.pop(turn.utterance_id, None) \
                if turn.utterance_id else None
            if spoken is not None:
                _mark_interrupted(turn, spoken)
            self._turns.append(turn)

    def interrupt(self, utterance_id: str, spoken: str) -> bool:
        """Apply a barge-in; returns True when a recorded turn was rewritten."""
        if not utterance_id:
            return False
        with self._lock:
            for turn in reversed(self._turns):
                if turn.utterance_id == utterance_id:
                    _mark_interrupted(turn, spoken)
                    return True
            self._interruptions[utterance_id] = spoken
            while len(self._interruptions) > 16:
                self._interruptions.popitem(last=False)
            return False

    def turns(self) -> list[Turn]:
        with self._lock:
            return list(self._turns) if self.max_turns else []

    def clear(self) -> None:
        with self._lock:
            self._turns.clear()
            self._interruptions.clear()

    def messages(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for turn in self.turns():
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.assistant_json()})
        return out


def _mark_interrupted(turn: Turn, spoken: str) -> None:
    turn.reply = spoken.strip() + INTERRUPTED_NOTE
    turn.interrupted = True


def _output_json(action: str, arguments: dict[str, Any], reply: str) -> str:
    return json.dumps({"action": action, "arguments": arguments, "reply": reply},
                      ensure_ascii=False)


# ====================================================================== prompt
def system_prompt(schema: CommandSchema) -> str:
    lines = [f"You are the command parser of {schema.robot}. For each user request, answer with "
             "exactly one JSON object: "
             '{"action": ..., "arguments": {...}, "reply": "..."}. '
             "Use only these actions:"]
    for spec in schema.actions.values():
        args = ", ".join(a.prompt_text() for a in spec.arguments) or "none"
        lines.append(f"- {spec.name}: {spec.description} Arguments: {args}.")
    lines.append(f"- {CLARIFY}: the request is unclear, impossible or not covered above. "
                 "Arguments: none. The reply asks a short question.")
    lines.append("The reply is one short spoken sentence. Earlier turns give context: "
                 '"again" or "and now ..." refer to the previous command.')
    return "\n".join(lines)


def example_reply(spec: ActionSpec, ex: Example) -> str:
    if ex.reply:
        return ex.reply
    if spec.handler == "say":
        return str(ex.arguments.get("text", ""))
    if spec.handler == "vision":
        return "Let me look."
    return spec.render_reply(ex.arguments) or "Okay."


def _overlap(a: str, b: str) -> float:
    wa, wb = set(normalize_words(a).split()), set(normalize_words(b).split())
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def few_shot_messages(schema: CommandSchema, text: str, count: int = -1,
                      select: str = "all", similar: int = 3) -> list[dict[str, str]]:
    """Example turns for the prompt, built from the schema's example utterances.

    select: "all" - the first `count` examples (-1: all) in schema order (a fixed prefix, so the
    model's prompt cache makes it cheap); "similar" - the `count` examples sharing the most words
    with the request, most similar last (small models copy what they saw last; the prefix changes
    every request); "all+similar" - the fixed prefix, then the `similar` most similar examples
    repeated just before the request (cache-friendly and nearly as sharp).
    """
    pairs = [(spec, ex) for spec in schema.actions.values() for ex in spec.examples]
    ranked = sorted(pairs, key=lambda p: _overlap(p[1].text, text))
    if select == "similar":
        chosen = ranked[len(ranked) - count:] if count > 0 else (ranked if count < 0 else [])
    else:
        chosen = pairs if count < 0 else pairs[:count]
        if select == "all+similar" and similar > 0:
            chosen = chosen + [p for p in ranked[-similar:] if _overlap(p[1].text, text) > 0]
    out: list[dict[str, str]] = []
    for spec, ex in chosen:
        out.append({"role": "user", "content": ex.text})
        out.append({"role": "assistant",
                    "content": _output_json(spec.name, dict(ex.arguments),
                                            example_reply(spec, ex))})
    return out


# ====================================================================== the parser
@dataclass
class _Pending:
    command: Command
    spec: ActionSpec
    source_text: str
    expires: float


class CommandParser:
    """Turns text into at most one validated command plus a reply. Call :meth:`parse` from one
    worker thread at a time; :meth:`fast_path`, :meth:`interrupt` are safe from any thread."""

    def __init__(self, schema: CommandSchema, model: CommandModel,
                 config: ParserConfig | None = None) -> None:
        self.schema = schema
        self.model = model
        self.config = config or ParserConfig()
        self.conversation = Conversation(self.config.history_turns)
        self.json_schema = schema.json_schema(self.config.reply_max_chars)
        self._system = system_prompt(schema)
        self._pending: _Pending | None = None
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
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
        stop = self.schema.stop
        return bool(self.config.fast_path and stop is not None and
                    match_phrases(text, stop.phrases, stop.filler))

    def fast_path(self, text: str, *, utterance_id: str = "", use_history: bool = True
                  ) -> ParseOutcome | None:
        """The stop fast path (no model): an outcome for stop phrases, else None."""
        if not self.is_stop(text):
            return None
        stop = self.schema.stop
        assert stop is not None
        with self._lock:
            self._pending = None
        if use_history:
            self.conversation.add(Turn(utterance_id, text, stop.action, {}, stop.reply))
        return ParseOutcome(success=True, command=Command(stop.action, {}), reply=stop.reply,
                            origin="fast_path", confidence=1.0, handler="robot",
                            first_reply_s=0.0, command_s=0.0)

    def interrupt(self, utterance_id: str, spoken: str) -> None:
        """A barge-in on the reply to `utterance_id`: record what was actually spoken."""
        self.conversation.interrupt(utterance_id, spoken)

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
                                first_reply_s=0.0, command_s=0.0)
        if match_phrases(text, policy.no, ("please", "robot", "thanks")):
            self.conversation.add(Turn(utterance_id, text, "", {}, policy.declined_reply))
            return ParseOutcome(success=True, reply=policy.declined_reply, origin="confirmation",
                                confidence=1.0, first_reply_s=0.0)
        log.info("no yes/no answer; dropping the pending '%s'", pending.command.action)
        return None

    # ------------------------------------------------------------------ the main path
    def parse(self, text: str, *, utterance_id: str = "", use_history: bool = True,
              cancel: threading.Event | None = None,
              on_command: Callable[[ParseOutcome], None] | None = None,
              on_reply: Callable[[str], None] | None = None,
              vision: VisionFn | None = None) -> ParseOutcome:
        """Parse one request. `on_command(outcome)` is called once, as soon as a command that
        should be executed is decided (before the reply is complete); `on_reply(text)` receives
        the spoken reply piece by piece. Both run on the calling thread."""
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

        outcome = ParseOutcome(success=True, origin=self.origin)
        messages = self.messages(text, use_history)
        reader = StreamingJsonReader("reply")
        held: list[str] = []  # reply text that arrived before the command was validated
        stream_reply = False  # the model's reply is what we say
        stop_generation = False
        cfg = self.config
        try:
            with closing(self.model.stream(
                    messages, self.json_schema, cancel=cancel, max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature, timeout_s=cfg.generation_timeout_s)) as deltas:
                for delta in deltas:
                    piece = reader.feed(delta)
                    if outcome.command is None and not outcome.error:
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
                            stream_reply, stop_generation = self._decide(
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
            log.info("generation for %r cancelled", utterance_id or text[:40])
        except BackendError as e:
            outcome.error = f"backend failed: {e}"
        outcome.raw_output = reader.text

        if outcome.cancelled:
            self._remember(utterance_id, text, outcome, reply_parts, use_history)
            outcome.reply = "".join(reply_parts)
            return outcome
        if outcome.command is None and not outcome.error and reader.error:
            outcome.error = f"unusable model output: {reader.error}"
        if outcome.command is None and not outcome.error:
            # The head was never complete while streaming (other key order, missing arguments
            # of an argument-less action, truncated output): validate the whole text.
            try:
                command, model_reply = self.schema.validate_text(reader.text)
            except CommandError as e:
                outcome.error = f"unusable model output: {e}"
            else:
                stream_reply, stop_generation = self._decide(
                    command, outcome, text, started, on_command, use_history)
                if stream_reply:
                    say(model_reply, outcome)
        elif outcome.command is not None and not stop_generation and reader.done:
            try:
                self.schema.validate_text(reader.text)
            except CommandError as e:  # the command was valid; only the reply part is broken
                log.warning("model output after the command is malformed: %s", e)

        if outcome.error:
            backend = outcome.error.startswith("backend failed")
            log.error("%s (raw output: %r)", outcome.error, reader.text[:300])
            return finish(ParseOutcome(
                success=False, message=outcome.error, error=outcome.error,
                reply=REPLY_BACKEND_FAILED if backend else REPLY_NOT_UNDERSTOOD,
                origin=self.origin, raw_output=reader.text, first_reply_s=outcome.first_reply_s,
                command_s=None))

        if outcome.command is None:  # clarify: the model's question, or ours
            if not reply_parts:
                say(REPLY_CLARIFY, outcome)
        else:
            self._reply_for(outcome, reply_parts, vision, say)
        self._remember(utterance_id, text, outcome, reply_parts, use_history)
        return finish(outcome)

    def _decide(self, command: Command, outcome: ParseOutcome, text: str, started: float,
                on_command: Callable[[ParseOutcome], None] | None,
                use_history: bool) -> tuple[bool, bool]:
        """Record a validated command; returns (stream the model's reply, stop generating)."""
        outcome.command = command
        outcome.command_s = time.monotonic() - started
        confidence = getattr(self.model, "last_confidence", None)
        if isinstance(confidence, float):  # two-stage decoding: P(action) among the actions
            outcome.confidence = confidence
        if command.action == CLARIFY:
            outcome.command = None
            outcome.needs_clarification = True
            outcome.handler = CLARIFY
            return True, False
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
            return True, False
        return False, True  # vision and say: the reply does not come from the model

    def _reply_for(self, outcome: ParseOutcome, reply_parts: list[str],
                   vision: VisionFn | None, say: Callable[[str, ParseOutcome], None]) -> None:
        command = outcome.command
        assert command is not None
        spec = self.schema.action(command.action)
        if reply_parts or outcome.reply:
            return
        if spec.handler == "vision":
            question = str(command.arguments.get("question") or spec.vision_question)
            if vision is None:
                ok, answer, reason = False, "", "no vision service configured"
            else:
                ok, answer, reason = vision(question, self.config.vision_timeout_s)
            if ok and answer.strip():
                say(answer.strip(), outcome)
            else:
                reason = reason if not ok else "empty answer"
                log.warning("vision question %r failed: %s", question, reason)
                outcome.message = f"vision unavailable: {reason}"
                say(REPLY_CANT_SEE, outcome)
        elif spec.handler == "say":
            say(str(command.arguments.get("text", "")), outcome)
        elif spec.handler == "answer":
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
