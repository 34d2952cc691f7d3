"""When has the user finished? The end of a turn from the words and the silence (no rclpy).

A fixed silence (the VAD's stop_ms, 400 ms by default) is too long after "stop" or "go to the
kitchen" and too short after "go to the ... um". :class:`TurnEnd` judges the words recognized so
far (the asr's speculative transcript of the speech up to the silence):

* a stop phrase, or a complete request by the command schema's sentence templates -> the turn
  ends after `complete_ms` of silence;
* words that trail off mid-phrase ("go to the", "turn left and", "um") -> `incomplete_ms`;
* anything else -> `default_ms`.

No learned model: the templates already know what a complete request is, and the rule costs
about a millisecond.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from locara_ros.core.command_schema import CommandSchema, normalize_words

# Words after which a request is not over.
DANGLING = frozenset({
    "the", "a", "an", "to", "and", "or", "of", "in", "on", "onto", "into", "at", "my", "your",
    "then", "with", "by", "for", "from", "some", "this", "that", "um", "uh", "er", "erm", "so",
    "but", "is", "are", "can", "could", "would", "go", "turn", "move", "pick", "put",
    "drive", "say", "about", "near", "next", "behind", "under", "over", "towards", "toward"})


@dataclass
class TurnDecision:
    stop_ms: float
    why: str  # "a complete request (go_to)", "a stop phrase", "words that trail off", ""


class TurnEnd:
    def __init__(self, schema: CommandSchema | None, complete_ms: float = 200.0,
                 default_ms: float = 400.0, incomplete_ms: float = 800.0) -> None:
        for name, v in (("complete_ms", complete_ms), ("default_ms", default_ms),
                        ("incomplete_ms", incomplete_ms)):
            if not 0.0 <= float(v) <= 5000.0:
                raise ValueError(f"{name} must be in [0, 5000] ms, got {v}")
        self.complete_ms, self.default_ms = float(complete_ms), float(default_ms)
        self.incomplete_ms = float(incomplete_ms)
        self.schema = schema
        self.matcher = None
        if schema is not None and schema.has_templates:
            from locara_ros.core.intents import TemplateMatcher
            self.matcher = TemplateMatcher(schema)

    def judge(self, text: str) -> TurnDecision:
        words = normalize_words(text).split()
        if not words:
            return TurnDecision(self.default_ms, "")
        if self.schema is not None and self.schema.stop is not None:
            from locara_ros.core.parser import match_phrases
            stop = self.schema.stop
            if match_phrases(text, stop.phrases, stop.filler):
                return TurnDecision(self.complete_ms, "a stop phrase")
        if words[-1] in DANGLING or re.search(r"(\.\.\.|…|-)\s*$", text.strip()):
            return TurnDecision(self.incomplete_ms, "words that trail off")
        if self.matcher is not None:
            m = self.matcher.match(text)
            if m is not None and m.ok:
                return TurnDecision(self.complete_ms, f"a complete request ({m.action})")
        return TurnDecision(self.default_ms, "")
