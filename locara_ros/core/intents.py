"""The command schema's sentence templates, matched with hassil (no rclpy).

Each action's ``sentences:`` become a hassil intent; its arguments become slot lists: an enum
argument lists the words a user says for each value (its ``synonyms``), a number argument is a
number range (digits; spoken numbers are turned into digits first, locara_ros.core.numbers), a
free-text argument is a wildcard. A match is the command, with the group's fixed arguments and
the schema's defaults filled in and every value checked against the schema.

When the words fit a sentence but a value does not ("go to the attic", "turn left 1000
degrees", "turn up"), the match says why (:attr:`TemplateMatch.problem`): the parser turns that
into a clarification, never into a command. The same happens for a value outside the schema's
bounds.

    matcher = TemplateMatcher(load_schema("config/commands.yaml"))
    matcher.match("rotate clockwise by ninety degrees")
    -> TemplateMatch(action='turn', arguments={'direction': 'right', 'angle_deg': 90}, ...)
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from locara_ros.core.command_schema import (
    ActionSpec,
    ArgumentSpec,
    CommandError,
    CommandSchema,
    SentenceGroup,
    normalize_words,
)
from locara_ros.core.numbers import normalize_numbers

log = logging.getLogger(__name__)

# An unmatched value longer than this is not "a place called X": the words just don't fit.
MAX_UNKNOWN_WORDS = 4


@dataclass(frozen=True)
class TemplateMatch:
    """A request that fits a sentence template. `problem` is empty for a valid command."""

    action: str
    arguments: dict[str, Any] = field(default_factory=dict)
    group: SentenceGroup | None = None
    problem: str = ""  # what the robot says when the request cannot be done as said
    detail: str = ""  # the reason for logs ("argument 'place' = 'attic' is not one of ...")

    @property
    def ok(self) -> bool:
        return not self.problem


def _list_name(action: str, arg: str) -> str:
    return f"{action}__{arg}"


def _slot_values(arg: ArgumentSpec) -> dict[str, Any]:
    """hassil list definition for one argument."""
    if arg.enum is not None:
        values = [{"in": _escape(word), "out": value}
                  for value in arg.enum for word in arg.spoken(value)]
        return {"values": values}
    if arg.type in ("integer", "number"):
        lo = math.floor(arg.minimum if arg.minimum is not None else 0)
        hi = math.ceil(arg.maximum if arg.maximum is not None else 1000)
        out: dict[str, Any] = {"from": max(0, lo), "to": max(hi, 0), "digits": True,
                               "words": False}
        if arg.type == "number":
            out["fractions"] = "tenths"
        return {"range": out}
    if arg.type == "boolean":
        return {"values": [{"in": "(yes|true|on)", "out": True},
                           {"in": "(no|false|off)", "out": False}]}
    return {"wildcard": True}


def _escape(word: str) -> str:
    """A synonym as a literal hassil value (no template syntax)."""
    return re.sub(r"[\[\]{}()<>|]", " ", word).strip()


def _rewrite(text: str, spec: ActionSpec) -> str:
    """{arg} -> {action__arg:arg} so arguments of different actions get their own lists."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if spec.argument(name) is not None:
            return "{" + _list_name(spec.name, name) + ":" + name + "}"
        return m.group(0)
    return re.sub(r"\{(\w+)\}", sub, text)


class TemplateMatcher:
    """Matches requests against the schema's sentence templates (about a millisecond each)."""

    def __init__(self, schema: CommandSchema) -> None:
        from hassil import Intents
        self.schema = schema
        intents: dict[str, Any] = {}
        lists: dict[str, Any] = {}
        self._groups: dict[tuple[str, int], SentenceGroup] = {}
        for spec in schema.actions.values():
            if not spec.sentences:
                continue
            data = []
            for i, group in enumerate(spec.sentences):
                data.append({"sentences": [_rewrite(t, spec) for t in group.sentences],
                             "metadata": {"group": i}})
                self._groups[(spec.name, i)] = group
            intents[spec.name] = {"data": data}
            for arg in spec.arguments:
                lists[_list_name(spec.name, arg.name)] = _slot_values(arg)
        for name, phrases in schema.lists.items():
            lists[name] = ({"wildcard": True} if phrases is None
                           else {"values": [_escape(p) for p in phrases]})
        self.intents = Intents.from_dict({
            "language": "en", "intents": intents, "lists": lists,
            "expansion_rules": dict(schema.expansion_rules),
            "skip_words": list(schema.skip_words)})
        self.enabled = bool(intents)
        # the templates' own words, to read "backing up" as "back up" and "going" as "go"
        values = {w for spec in schema.actions.values() for arg in spec.arguments
                  if arg.enum is not None for v in arg.enum for p in arg.spoken(v)
                  for w in p.split()}
        self.words = frozenset(w for spec in schema.actions.values() for g in spec.sentences
                               for t in g.sentences for w in re.findall(r"[a-z]+", t.lower()))
        self.value_words = frozenset(values)
        self.value_phrases = frozenset(p for spec in schema.actions.values()
                                       for arg in spec.arguments if arg.enum is not None
                                       for v in arg.enum for p in arg.spoken(v))
        if self.enabled:
            self.match("warm up")  # hassil compiles templates on first use

    # ------------------------------------------------------------------ matching
    def match(self, text: str) -> TemplateMatch | None:
        """The command `text` means by the templates, a problem, or None when no template fits."""
        if not self.enabled:
            return None
        from hassil import recognize_all
        said = base_forms(_prepare(text), self.words, self.value_words)
        if not said:
            return None
        best: TemplateMatch | None = None
        for result in recognize_all(said, self.intents):
            found = self._from_result(result, text)
            if found is not None and (best is None or (best.problem and found.ok)):
                best = found
                if found.ok:
                    break
        if best is not None:
            return best
        # The sentence that fits best (most of its words said) with one value outside the schema.
        candidates = []
        for result in recognize_all(said, self.intents, allow_unmatched_entities=True):
            found = self._unknown_value(result)
            if found is not None:
                candidates.append((result.text_chunks_matched, found))
        if candidates:
            return max(candidates, key=lambda c: c[0])[1]
        return None

    def _from_result(self, result: Any, text: str) -> TemplateMatch | None:
        spec = self.schema.actions[result.intent.name]
        group = self._group(spec, result)
        args: dict[str, Any] = dict(group.arguments) if group is not None else {}
        for name, entity in result.entities.items():
            arg = spec.argument(name)
            if arg is None:
                continue  # a helper list ({item}): not part of the command
            value = entity.value
            if arg.type == "integer" and isinstance(value, float) and value.is_integer():
                value = int(value)
            if arg.type == "string" and arg.enum is None:
                value = str(entity.text or value).strip()
            args[name] = value
        if spec.handler == "vision" and spec.argument("question") is not None:
            args["question"] = _question(text)
        for arg in spec.arguments:
            if arg.name not in args and arg.default is not None:
                args[arg.name] = arg.default
        try:
            checked = spec.check_arguments(args)
        except CommandError as e:
            return TemplateMatch(spec.name, args, group, problem=self.explain(spec, args),
                                 detail=str(e))
        return TemplateMatch(spec.name, checked, group)

    def _group(self, spec: ActionSpec, result: Any) -> SentenceGroup | None:
        meta = result.intent_metadata or {}
        return self._groups.get((spec.name, int(meta.get("group", 0))))

    def _unknown_value(self, result: Any) -> TemplateMatch | None:
        """A sentence that fits except for one value outside the schema: why it can't be done."""
        if len(result.unmatched_entities) != 1 or result.text_chunks_matched < 1:
            return None
        spec = self.schema.actions[result.intent.name]
        [(name, entity)] = result.unmatched_entities.items()
        arg = spec.argument(name)
        if arg is None:
            return None
        args = {n: e.value for n, e in result.entities.items() if spec.argument(n) is not None}
        value = getattr(entity, "value", None)
        if arg.type in ("integer", "number"):
            if not isinstance(value, (int, float)):
                return None
            args[name] = value
            problem = self.explain(spec, args)
            return TemplateMatch(spec.name, args, self._group(spec, result), problem=problem,
                                 detail=f"argument '{name}' = {value:g} is out of range")
        words = normalize_words(str(getattr(entity, "text", "") or ""))
        if not words or len(words.split()) > MAX_UNKNOWN_WORDS or arg.enum is None or \
                re.search(r"\d", words):
            return None
        if any(f" {p} " in f" {words} " for p in self.value_phrases):
            return None  # "the kitchen, slow please": a known value and more words
        return TemplateMatch(spec.name, args, self._group(spec, result),
                             problem=unknown_value(spec, arg, words),
                             detail=f"argument '{name}': '{words}' is not in the schema")

    # ------------------------------------------------------------------ explanations
    @staticmethod
    def explain(spec: ActionSpec, args: dict[str, Any]) -> str:
        """What the robot says about arguments that do not validate."""
        for arg in spec.arguments:
            value = args.get(arg.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if arg.maximum is not None and value > arg.maximum:
                    return (f"I can {_verb(spec)} at most {_num(arg.maximum)}"
                            f"{' ' + arg.unit if arg.unit else ''}.")
                if arg.minimum is not None and value < arg.minimum:
                    return (f"I can {_verb(spec)} no less than {_num(arg.minimum)}"
                            f"{' ' + arg.unit if arg.unit else ''}.")
            if arg.enum is not None and value is not None and value not in arg.enum:
                return unknown_value(spec, arg, str(value))
        return "Sorry, I can't do that as you said it."


def unknown_value(spec: ActionSpec, arg: ArgumentSpec, words: str) -> str:
    """'I don't know a place called the attic.' / 'I can only turn left or right.'"""
    assert arg.enum is not None
    if len(arg.enum) <= 3:
        options = " or ".join(arg.spoken(v)[0] for v in arg.enum)
        return f"I can only {_verb(spec)} {options}."
    noun = arg.name.replace("_", " ")
    article = "an" if noun[:1] in "aeiou" else "a"
    return f"I don't know {article} {noun} called {words}."


def _verb(spec: ActionSpec) -> str:
    return spec.name.replace("_", " ")


def _num(v: float) -> str:
    return f"{v:g}"


_LEADING = re.compile(r"^\s*(?:(?:and|then|now|so|ok|okay|alright|well|um|uh|hey)\b[\s,]*)+",
                      re.IGNORECASE)


def _prepare(text: str) -> str:
    """The request as templates see it: spoken numbers as digits, leading fillers ("and now",
    "okay") dropped, punctuation kept for hassil to handle."""
    text = normalize_numbers(" ".join(text.split()))
    return _LEADING.sub("", text).strip()


def base_forms(text: str, words: frozenset[str], keep: frozenset[str] = frozenset()) -> str:
    """-ing forms of the templates' verbs as the verbs: "would you mind backing up one meter"
    -> "would you mind back up one meter", "turning" -> "turn", "putting" -> "put"."""
    def base(m: re.Match) -> str:
        w = m.group(0)
        low = w.lower()
        if low in keep:  # "charging station" is a place, not "charge station"
            return w
        stem = low[:-3]
        for cand in (stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2]
                     else ""):
            if cand and cand in words:
                return cand
        return w
    return re.sub(r"\b[A-Za-z]{2,}ing\b", base, text)


def _question(text: str) -> str:
    return " ".join(text.split()).strip().rstrip("?.!").strip()


def recognizer_prompt(schema: CommandSchema, max_words: int = 60) -> str:
    """The robot's own words for priming a recognizer (Whisper's initial_prompt / hotwords):
    its places, objects and other argument values, the action words of its templates and its
    stop phrases, so "pick the toy up" is not heard as "big nut oil"."""
    phrases: list[str] = []
    count = 0

    def add(phrase: str) -> None:
        nonlocal count
        phrase = phrase.replace("_", " ")
        if phrase not in phrases and count + len(phrase.split()) <= max_words:
            phrases.append(phrase)
            count += len(phrase.split())
    for spec in schema.actions.values():
        if spec.moves:
            for kw in spec.keywords[:4]:
                add(kw)
        for arg in spec.arguments:
            if arg.enum is not None and isinstance(arg.enum[0], str):
                for value in arg.enum:
                    add(arg.spoken(value)[0])
    if schema.stop is not None:
        for phrase in schema.stop.phrases[:4]:
            add(phrase)
    return ", ".join(phrases) + "."
