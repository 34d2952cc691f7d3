"""Conversation history for the command parser (no rclpy).

A bounded list of turns (request, the action taken, the reply actually spoken). A barge-in rewrites
the reply of its turn to what was really said, with a note, so the model knows it was cut off.
:func:`refers_back` tells requests that lean on the previous turn ("and now the bathroom",
"again", "put it down") from those that stand alone: only those get the history.
"""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from locara_ros.core.command_schema import CLARIFY

INTERRUPTED_NOTE = " [the user interrupted me here]"

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
class Turn:
    utterance_id: str
    user: str
    action: str  # schema action or CLARIFY; "" for a turn that produced nothing
    arguments: dict[str, Any] = field(default_factory=dict)
    reply: str = ""
    interrupted: bool = False

    def assistant_json(self) -> str:
        return output_json(self.action or CLARIFY, self.arguments, self.reply)


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

    def last_action(self, actions: set[str] | None = None) -> Turn | None:
        """The latest turn that produced one of `actions` (any action when None)."""
        for turn in reversed(self.turns()):
            if turn.action and turn.action != CLARIFY and (actions is None or
                                                           turn.action in actions):
                return turn
        return None

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


def output_json(action: str, arguments: dict[str, Any], reply: str) -> str:
    return json.dumps({"action": action, "arguments": arguments, "reply": reply},
                      ensure_ascii=False)


# ====================================================================== follow-ups without a model
_AGAIN = re.compile(r"^(?:(?:do|say|repeat) )?(?:(?:it|that|this|the same|same) )?"
                    r"(?:again|once more|one more time|the same|same again|too)$"
                    r"|^repeat(?: (?:it|that|the last (?:one|command)))?$")
_FILLER = {"and", "now", "then", "also", "ok", "okay", "so", "instead", "too", "as", "well",
           "please", "the", "to", "into", "by", "for", "a", "an", "actually", "rather", "but",
           "no", "not", "this", "time", "go", "more", "another", "same"}


def follow_up(text: str, last: Turn | None, schema: Any) -> dict[str, Any] | None:
    """Arguments for a request that only changes the previous command ("again", "and now the
    kitchen", "now three meters", "the bathroom instead"), or None when `text` is more than
    that. The previous turn's action applies; every word must be accounted for by a filler
    word, a value of one of its arguments or a number with its unit, so nothing is guessed."""
    from locara_ros.core.numbers import normalize_request
    if last is None or not last.action or last.action == CLARIFY:
        return None
    try:
        spec = schema.action(last.action)
    except Exception:  # noqa: BLE001 - an action no longer in the schema
        return None
    words = normalize_request(text)
    words = re.sub(r"^(?:(?:and|now|then|also|ok|okay|so) )+", "", words)
    if _AGAIN.match(words):
        return dict(last.arguments)
    args = dict(last.arguments)
    rest = f" {words} "
    changed = False
    for arg in spec.arguments:
        if arg.enum is not None:
            hits = [(v, p) for v in arg.enum for p in arg.spoken(v) if f" {p} " in rest]
            if len({v for v, _ in hits}) == 1:
                value, phrase = max(hits, key=lambda h: len(h[1]))
                args[arg.name] = value
                rest = rest.replace(f" {phrase} ", " ", 1)
                changed = True
        elif arg.type in ("integer", "number"):
            nums = re.findall(r" (\d+(?:\.\d+)?)(?: ([a-z]+))? ", rest)
            mine = [(n, u) for n, u in nums if not u or u in arg.units]
            if len(nums) == 1 and mine:
                n, unit = mine[0]
                value = float(n)
                args[arg.name] = int(value) if arg.type == "integer" and value.is_integer() \
                    else value
                rest = rest.replace(f" {n} {unit} " if unit else f" {n} ", " ", 1)
                changed = True
    if not changed or any(w not in _FILLER for w in rest.split()):
        return None
    return args
