"""Is a command grounded in what the user said? (no rclpy)

A model's proposal becomes a command only when it is grounded in the words of the request:

* an action needs one of its words in the request (the ``keywords`` of the action, or the
  words of its sentence templates): "is the kitchen clean?" never becomes go_to(kitchen), and
  "purple monkey dishwasher" is not something to say out loud;
* every enum value was said, as its value or one of its synonyms ("charger" for
  charging_station), unless it is the argument's default and no other value was said;
* every number was said (spoken numbers count, "two and a half" = 2.5), with no unit other than
  the argument's ("a kilometer" is not 1 meter), unless it is the default and no number was
  said;
* every free-text argument is words of the request.

Requests that try to instruct the model ("ignore your instructions", raw JSON, "you are now...")
are refused before any model sees them (:func:`injection`), and a request with two commands in
it is split (:func:`clauses`) so the parser can ask for one at a time.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from locara_ros.core.command_schema import ActionSpec, Command, CommandSchema, normalize_words
from locara_ros.core.numbers import MEASURES, normalize_request

# Words of templates that say nothing about the action.
_FUNCTION_WORDS = {
    "a", "an", "the", "to", "by", "for", "of", "on", "onto", "in", "into", "at", "it", "that",
    "this", "my", "your", "me", "you", "i", "is", "are", "there", "what", "how", "can", "do",
    "please", "and", "or", "with", "from", "some", "bit", "little", "all", "way", "once", "over",
    "out", "so", "then", "now", "just", "here", "them", "him", "her", "know", "let", "about",
}
# Words that carry no request of their own ("please", "ok", "whoa").
_FILLER = {"please", "ok", "okay", "hey", "robot", "locara", "um", "uh", "er", "erm", "well",
           "thanks", "thank", "would", "could", "will", "mind", "kindly", "whoa",
           "oh", "yes", "again", "also", "too", "as", "be", "go", "ahead", "now", "then"}
_NUMBER_UNIT = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?:\s+([a-z]+))?")

# "on the bed", "into my bag": where a default argument (put it down *here*) could be overridden
_PLACE_PHRASE = re.compile(r"\b(?:on|onto|in|into|at|inside|to|under)\s+"
                           r"(?:the |a |an |my |your |this |that |our )?([a-z']+)")

_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules?|prompt|schema|"
    r"programming|guidelines|constraints|restrictions|everything|above)\b"
    r"|\b(system|developer|admin|root|debug|god|jailbreak)\s*(prompt|mode|message|override|:)"
    r"|\byou are now\b|\bact as\b|\bpretend (you are|to be|you're)\b|\bnew instructions?\b"
    r"|\b(respond|reply|output)\s+with\b|\banswer\s+(with|in)\s+(json|the following)\b"
    r"|^\W*system\b|\baction\b.{0,30}\barguments?\b"  # spoken JSON, "System, ..."
    r"|[{}]|\"action\"",
    re.IGNORECASE)

_CLAUSE_SPLIT = re.compile(r"\s*(?:,\s*|\s+)(?:and then|and after that|after that|and also|"
                           r"then|and)\s+|\s*[;.]\s+", re.IGNORECASE)


def injection(text: str) -> bool:
    """True when the request tries to instruct the parser instead of asking the robot."""
    return bool(_INJECTION.search(text))


def clauses(text: str) -> list[str]:
    """The parts of a request joined by "and", "then", ";" ("go to the kitchen and pick up the
    cup" -> two parts). One part when there is no such joint."""
    parts = [p.strip(" ,.") for p in _CLAUSE_SPLIT.split(text)]
    return [p for p in parts if p]


def _template_words(text: str, rules: dict[str, str]) -> set[str]:
    for _ in range(3):  # expansion rules may use other rules
        text = re.sub(r"<([^<>]+)>", lambda m: rules.get(m.group(1), " "), text)
    text = re.sub(r"\{[^{}]*\}", " ", text).lower()
    # "colo[u]r": both spellings; "(a|b)" and "[c]": every word
    variants = (re.sub(r"(?<=[a-z])\[([a-z]+)\](?=[a-z])", r"\1", text),
                re.sub(r"(?<=[a-z])\[[a-z]+\](?=[a-z])", "", text))
    return {w for v in variants for w in re.findall(r"[a-z]+(?:'[a-z]+)?", v) if len(w) > 1}


def action_keywords(spec: ActionSpec, schema: CommandSchema) -> frozenset[str]:
    """The words one of which must be in a request for a model to propose `spec`: the action's
    `keywords`, or the non-function words of its sentence templates (units and argument values
    excluded: "two meters" or "the kitchen" alone name no action)."""
    if spec.keywords:
        return frozenset(spec.keywords)
    words: set[str] = set()
    for group in spec.sentences:
        for text in group.sentences:
            words |= _template_words(text, dict(schema.expansion_rules))
    for rule in schema.expansion_rules.values():
        words -= _template_words(rule, {})
    for arg in spec.arguments:
        if arg.enum is not None:
            for value in arg.enum:
                for phrase in arg.spoken(value):
                    words -= set(phrase.split())
    words -= _FUNCTION_WORDS
    if not words:
        words = set(spec.name.split("_")) - _FUNCTION_WORDS
    return frozenset(words)


def said(phrase: str, text_words: str) -> bool:
    """Is `phrase` (normalized words) in the normalized request, as whole words?"""
    return f" {phrase} " in f" {text_words} "


def numbers_with_units(text: str) -> list[tuple[float, str]]:
    """(number, the word after it when it is a measure word, else "") for every number said."""
    out = []
    for m in _NUMBER_UNIT.finditer(normalize_request(text)):
        unit = m.group(2) or ""
        out.append((float(m.group(1)), unit if unit in MEASURES else ""))
    return out


class Grounding:
    """Checks model proposals against the request (built once per schema)."""

    def __init__(self, schema: CommandSchema) -> None:
        from locara_ros.core.intents import base_forms
        self.schema = schema
        self.keywords = {name: action_keywords(spec, schema)
                         for name, spec in schema.actions.items()}
        verbs = frozenset(w for ws in self.keywords.values() for w in ws)
        values = frozenset(w for spec in schema.actions.values() for arg in spec.arguments
                           if arg.enum is not None for v in arg.enum for p in arg.spoken(v)
                           for w in p.split())
        self._words = lambda text: base_forms(normalize_request(text), verbs, values)
        self._known: dict[str, tuple[frozenset[str], list[str]]] = {}

    def unexplained(self, spec: ActionSpec, words: str) -> list[str]:
        """Words of the request that are none of: the action's argument values (whole
        phrases: "right here" explains "right" only together), its words (keywords and its
        templates'), numbers and units, function and skip words."""
        known = self._known.get(spec.name)
        if known is None:
            single = set(self.keywords[spec.name]) | _FUNCTION_WORDS | _FILLER
            for group in spec.sentences:
                for t in group.sentences:
                    single |= _template_words(t, dict(self.schema.expansion_rules))
            phrases: set[str] = set(self.schema.skip_words)
            for arg in spec.arguments:
                single |= set(arg.units)
                phrases |= {p for v in (arg.enum or ()) for p in arg.spoken(v)}
            for items in self.schema.lists.values():
                phrases |= set(items or ())
            known = self._known[spec.name] = (frozenset(single), sorted(phrases, key=len,
                                                                         reverse=True))
        single, phrases = known
        rest = f" {words} "
        for p in phrases:
            rest = rest.replace(f" {p} ", " ")
        return [w for w in rest.split() if w not in single and w not in MEASURES
                and not re.fullmatch(r"\d+(?:\.\d+)?", w)]

    def mentions(self, spec: ActionSpec, text: str) -> bool:
        """One of the action's words is in the request."""
        words = self._words(text)
        return any(said(k, words) for k in self.keywords[spec.name])

    def feasible(self, spec: ActionSpec, text: str) -> bool:
        """Could a command of `spec` be grounded in `text` at all: every enum argument without
        a default has one of its values said, every number without a default has a number?"""
        words = self._words(text)
        numbers = numbers_with_units(text)
        for arg in spec.arguments:
            if arg.default is not None:
                continue
            if arg.enum is not None and not any(said(p, words) for v in arg.enum
                                                for p in arg.spoken(v)):
                return False
            if arg.type in ("integer", "number") and arg.enum is None and not numbers:
                return False
        return True

    def candidates(self, text: str) -> list[str]:
        """Actions a model may propose for this request: those whose words were said (a model
        asked to pick among all of them makes nonsense into "say purple monkey") and whose
        arguments the words can give."""
        return [name for name, spec in self.schema.actions.items()
                if self.mentions(spec, text) and self.feasible(spec, text)]

    def check(self, command: Command, text: str) -> str:
        """'' when the command is grounded in `text`, else why not (for logs)."""
        spec = self.schema.action(command.action)
        stop = self.schema.stop.action if self.schema.stop else ""
        if command.action != stop and not self.mentions(spec, text):
            return f"no word for '{command.action}' was said"
        words = self._words(text)
        numbers = numbers_with_units(text)
        defaulted = [a for a in spec.arguments if a.default is not None
                     and command.arguments.get(a.name) == a.default]
        if spec.moves and defaulted:
            extra = self.unexplained(spec, words)
            if extra:  # "go forward, we're not going to arm it out": more than a default move
                return (f"'{' '.join(extra[:4])}' is not part of a {command.action} request, "
                        f"and {defaulted[0].name} was left to its default")
        for arg in spec.arguments:
            value = command.arguments.get(arg.name)
            reason = ""
            if arg.enum is not None:
                reason = self._enum(arg, value, words)
            elif arg.type in ("integer", "number"):
                reason = self._number(arg, value, numbers)
                if not reason and not numbers and self._measure_without_number(words):
                    reason = (f"'{self._measure_without_number(words)}' was said without a "
                              "number that could be understood")
            elif arg.type == "string" and spec.handler != "vision":
                if value is not None and not said(normalize_words(str(value)), words):
                    reason = f"'{value}' is not words of the request"
            if reason:
                return f"argument '{arg.name}': {reason}"
        return ""

    def extract(self, spec: ActionSpec, text: str) -> dict[str, Any] | None:
        """The arguments of `spec` as the request says them, when the words leave no choice:
        each enum argument has exactly one value said (or none and a default), each number
        exactly one number said in its unit (or none and a default); a vision question is the
        request. None when a model has to choose (free text, two values said, ...)."""
        words = self._words(text)
        numbers = numbers_with_units(text)
        args: dict[str, Any] = {}
        for arg in spec.arguments:
            if arg.enum is not None:
                hits = [v for v in arg.enum if any(said(p, words) for p in arg.spoken(v))]
                if len(hits) > 1:  # "front door" also says "door": keep the longest reading
                    longest = {v: max(len(p) for p in arg.spoken(v) if said(p, words))
                               for v in hits}
                    best = max(longest.values())
                    hits = [v for v in hits if longest[v] == best]
                if len(hits) == 1:
                    args[arg.name] = hits[0]
                elif not hits and arg.default is not None:
                    args[arg.name] = arg.default
                else:
                    return None
            elif arg.type in ("integer", "number"):
                mine = [n for n, unit in numbers if not unit or unit in arg.units]
                if len(numbers) == 1 and len(mine) == 1:
                    value = mine[0]
                    args[arg.name] = int(value) if arg.type == "integer" and \
                        float(value).is_integer() else value
                elif not numbers and arg.default is not None and \
                        not self._measure_without_number(words):
                    args[arg.name] = arg.default
                else:
                    return None
            elif spec.handler == "vision" and arg.name == "question":
                args[arg.name] = " ".join(text.split()).rstrip("?.!")
            else:
                return None
        return args

    @staticmethod
    def _enum(arg: Any, value: Any, words: str) -> str:
        others = [v for v in arg.enum if v != value and any(said(p, words) for p in arg.spoken(v))
                  and not any(said(p, words) and q != p and p in q
                              for p in arg.spoken(v) for q in arg.spoken(value))]
        if any(said(p, words) for p in arg.spoken(value)):
            if others:  # "the kitchen or the bedroom": which one is a guess
                return f"'{value}' and '{others[0]}' were both said"
            return ""
        if value == arg.default and not others:
            # "put it on the bed": the default does not stand in for a value that was said
            known = {w for v in arg.enum for p in arg.spoken(v) for w in p.split()}
            for m in _PLACE_PHRASE.finditer(words):
                if m.group(1) not in known:
                    return f"'{m.group(1)}' is not a known {arg.name.replace('_', ' ')}"
            return ""
        return f"'{value}' was not said"

    @staticmethod
    def _number(arg: Any, value: Any, numbers: Iterable[tuple[float, str]]) -> str:
        numbers = list(numbers)
        for n, unit in numbers:
            if abs(n - float(value)) < 1e-6:
                if unit and arg.units and unit not in arg.units:
                    return f"{n:g} was said in {unit}, not {arg.unit or arg.units[0]}"
                return ""
        if value == arg.default and not numbers:
            return ""
        return f"{value} was not said"

    @staticmethod
    def _measure_without_number(words: str) -> str:
        """A measure word said with no number before it ("move forward to meters", "a
        kilometer" misheard): a default must not stand in for the amount that was said."""
        for m in re.finditer(r"(?:^| )([a-z]+) ([a-z]+)(?= |$)", words):
            if m.group(2) in MEASURES and not re.fullmatch(r"\d+(?:\.\d+)?", m.group(1)):
                return m.group(2)
        if words.split() and words.split()[0] in MEASURES:
            return words.split()[0]
        return ""
