"""The robot's command schema: what a parsed command may contain, loaded from YAML.

A schema file (config/commands.yaml; format: README, command_parser) declares actions with typed,
bounded arguments, a description and example utterances. From it this module derives

* :meth:`CommandSchema.json_schema` - a JSON schema of the model's whole output
  (``{"action": ..., "arguments": {...}, "reply": "..."}``), used for grammar-constrained decoding
  and for ``response_format`` on OpenAI-compatible servers;
* :meth:`CommandSchema.validate_output` / :meth:`CommandSchema.validate_command` - the check every
  model output goes through before it can become a command, because servers differ.

Invalid schema files raise :class:`SchemaError` whose message names the file and line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

# Pseudo-action the model emits when a request is unclear, impossible or unknown: no command, the
# reply asks a clarifying question. Schema files may not define an action with this name.
CLARIFY = "clarify"

HANDLERS = ("robot", "vision", "say", "answer")
ARG_TYPES = ("string", "integer", "number", "boolean")
_NAME_RX = re.compile(r"^[a-z][a-z0-9_]*$")

DEFAULT_CONFIRM_QUESTION = "Should I {summary}? Please say yes or no."
DEFAULT_YES = ("yes", "yeah", "yep", "sure", "ok", "okay", "confirm", "do it", "go ahead")
DEFAULT_NO = ("no", "nope", "don't", "do not", "cancel", "never mind")


class SchemaError(ValueError):
    """The schema file is invalid; the message is '<file>:<line>: <problem>'."""


class CommandError(ValueError):
    """A model output or command does not validate against the schema; the message says why."""


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    type: str
    description: str = ""
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    default: Any = None
    # enum value -> the words a user says for it (the value itself, "_" as a space, if not set)
    synonyms: Mapping[Any, tuple[str, ...]] = field(default_factory=dict)
    unit: str = ""  # spoken unit of a number ("meters"), for replies
    units: tuple[str, ...] = ()  # words that may follow the number ("meters", "meter", "m")

    def spoken(self, value: Any) -> tuple[str, ...]:
        """The words a user may say for an enum value."""
        if value in self.synonyms:
            return self.synonyms[value]
        return (normalize_words(str(value).replace("_", " ")),)

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.description:
            out["description"] = self.description
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out

    def check(self, value: Any) -> Any:
        """Return the value (numbers normalized) or raise CommandError saying what is wrong."""
        name = self.name
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise CommandError(f"argument '{name}' must be a boolean, got {value!r}")
            return value
        if self.type == "integer":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CommandError(f"argument '{name}' must be an integer, got {value!r}")
        elif self.type == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CommandError(f"argument '{name}' must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CommandError(f"argument '{name}' must be finite, got {value!r}")
        elif self.type == "string":
            if not isinstance(value, str):
                raise CommandError(f"argument '{name}' must be a string, got {value!r}")
            if self.min_length is not None and len(value.strip()) < self.min_length:
                raise CommandError(f"argument '{name}' is shorter than {self.min_length} "
                                   f"characters: {value!r}")
            if self.max_length is not None and len(value) > self.max_length:
                raise CommandError(f"argument '{name}' is longer than {self.max_length} "
                                   f"characters")
        if self.enum is not None and value not in self.enum:
            raise CommandError(f"argument '{name}' = {value!r} is not one of "
                               f"{', '.join(map(str, self.enum))}")
        if self.minimum is not None and value < self.minimum:
            raise CommandError(f"argument '{name}' = {value!r} is below the minimum "
                               f"{self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise CommandError(f"argument '{name}' = {value!r} is above the maximum "
                               f"{self.maximum:g}")
        return value

    def prompt_text(self) -> str:
        """One-line description for the model's system prompt."""
        if self.enum is not None:
            kind = "one of " + "|".join(map(str, self.enum))
        elif self.type in ("integer", "number"):
            kind = f"{self.type} {self.minimum:g} to {self.maximum:g}"
        else:
            kind = self.type
        text = f"{self.name} ({kind}"
        if self.description:
            text += f", {self.description}"
        if self.default is not None:
            text += f", default {self.default}"
        return text + ")"


@dataclass(frozen=True)
class Example:
    text: str
    arguments: Mapping[str, Any]
    reply: str = ""


@dataclass(frozen=True)
class SentenceGroup:
    """Sentence templates (hassil syntax) that mean this action, with fixed arguments, and for
    answers the reply (or `answer`: "time" / "date", read from the clock)."""

    sentences: tuple[str, ...]
    arguments: Mapping[str, Any] = field(default_factory=dict)
    reply: str = ""
    answer: str = ""
    line: int = 0


ANSWER_SOURCES = ("time", "date")


@dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str
    arguments: tuple[ArgumentSpec, ...] = ()
    handler: str = "robot"  # robot | vision | say | answer
    confirm: bool = False
    reply: str = ""  # template with {argument} fields
    vision_question: str = ""
    examples: tuple[Example, ...] = ()
    sentences: tuple[SentenceGroup, ...] = ()
    # Words one of which must be in a request before a model may propose this action (the
    # verbs of its sentence templates when not given).
    keywords: tuple[str, ...] = ()

    @property
    def moves(self) -> bool:
        """A robot action (motion or manipulation) rather than talk or vision."""
        return self.handler == "robot"

    @property
    def argument_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arguments)

    def argument(self, name: str) -> ArgumentSpec | None:
        return next((a for a in self.arguments if a.name == name), None)

    def check_arguments(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise CommandError(f"arguments of '{self.name}' must be an object, got {args!r}")
        unknown = sorted(set(args) - set(self.argument_names))
        if unknown:
            raise CommandError(f"action '{self.name}' has no argument(s) {', '.join(unknown)}")
        missing = [n for n in self.argument_names if n not in args]
        if missing:
            raise CommandError(f"action '{self.name}' is missing argument(s) "
                               f"{', '.join(missing)}")
        return {a.name: a.check(args[a.name]) for a in self.arguments}

    def render_reply(self, arguments: Mapping[str, Any]) -> str:
        if not self.reply:
            return ""
        values = {k: (str(v).replace("_", " ") if isinstance(v, str) else _fmt_number(v))
                  for k, v in arguments.items()}
        try:
            return self.reply.format(**values)
        except (KeyError, IndexError, ValueError):
            return self.reply

    def summary(self, arguments: Mapping[str, Any]) -> str:
        """Short human phrase for confirmations: 'go to (place: kitchen)'."""
        words = self.name.replace("_", " ")
        if not arguments:
            return words
        inner = ", ".join(f"{k.replace('_', ' ')}: {_fmt_number(v)}" for k, v in arguments.items())
        return f"{words} ({inner})"


@dataclass(frozen=True)
class StopPolicy:
    action: str
    phrases: tuple[str, ...]
    filler: tuple[str, ...] = ()
    reply: str = "Stopping."


@dataclass(frozen=True)
class ConfirmationPolicy:
    question: str = DEFAULT_CONFIRM_QUESTION
    yes: tuple[str, ...] = DEFAULT_YES
    no: tuple[str, ...] = DEFAULT_NO
    confirmed_reply: str = "Okay, doing it."
    declined_reply: str = "Okay, I won't."


@dataclass(frozen=True)
class Command:
    """A validated command: an action of the schema (or CLARIFY) with checked arguments."""

    action: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, sort_keys=False)


@dataclass(frozen=True)
class CommandSchema:
    actions: Mapping[str, ActionSpec]
    robot: str = "a robot"
    stop: StopPolicy | None = None
    confirmation: ConfirmationPolicy = ConfirmationPolicy()
    source: str = "<schema>"
    skip_words: tuple[str, ...] = ()
    expansion_rules: Mapping[str, str] = field(default_factory=dict)
    # word lists for templates that are not arguments: name -> phrases, or None = any words
    lists: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)

    @property
    def has_templates(self) -> bool:
        return any(spec.sentences for spec in self.actions.values())

    def action(self, name: str) -> ActionSpec:
        try:
            return self.actions[name]
        except KeyError:
            raise CommandError(f"action '{name}' is not in the schema") from None

    # ------------------------------------------------------------------ derived JSON schema
    def json_schema(self, reply_max_chars: int = 160) -> dict[str, Any]:
        """JSON schema of one model output. Key order action, arguments, reply: the command is
        complete before the reply starts, so it can be published while the reply streams."""
        reply = {"type": "string", "maxLength": int(reply_max_chars)}
        alternatives = []
        for spec in self.actions.values():
            alternatives.append(_alternative(spec.name, {
                a.name: a.json_schema() for a in spec.arguments}, reply))
        alternatives.append(_alternative(CLARIFY, {}, reply))
        return {"title": "robot_command", "anyOf": alternatives}

    # ------------------------------------------------------------------ validation
    def validate_command(self, action: Any, arguments: Any) -> Command:
        if not isinstance(action, str) or not action:
            raise CommandError(f"'action' must be a non-empty string, got {action!r}")
        if action == CLARIFY:
            if arguments not in (None, {}):
                raise CommandError(f"'{CLARIFY}' takes no arguments, got {arguments!r}")
            return Command(CLARIFY, {})
        spec = self.action(action)
        return Command(action, spec.check_arguments({} if arguments is None and
                                                    not spec.arguments else arguments))

    def validate_output(self, obj: Any) -> tuple[Command, str]:
        """Validate a whole model output object; returns (command, reply)."""
        if not isinstance(obj, dict):
            raise CommandError(f"output must be a JSON object, got {type(obj).__name__}")
        extra = sorted(set(obj) - {"action", "arguments", "reply"})
        if extra:
            raise CommandError(f"output has unexpected key(s) {', '.join(extra)}")
        if "action" not in obj:
            raise CommandError("output has no 'action'")
        command = self.validate_command(obj["action"], obj.get("arguments"))
        reply = obj.get("reply", "")
        if not isinstance(reply, str):
            raise CommandError(f"'reply' must be a string, got {reply!r}")
        return command, reply

    def validate_text(self, text: str) -> tuple[Command, str]:
        """Validate raw model output text (must be exactly one JSON object)."""
        if not text or not text.strip():
            raise CommandError("empty output")
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise CommandError(f"output is not valid JSON ({e}): {text[:120]!r}") from None
        return self.validate_output(obj)


def _alternative(action: str, properties: dict[str, Any], reply: dict[str, Any]) -> dict:
    return {
        "type": "object",
        "properties": {
            # A one-value enum rather than "const": more servers' grammar converters accept it.
            "action": {"type": "string", "enum": [action]},
            "arguments": {"type": "object", "properties": properties,
                          "required": list(properties), "additionalProperties": False},
            "reply": reply,
        },
        "required": ["action", "arguments", "reply"],
        "additionalProperties": False,
    }


def _fmt_number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ====================================================================== loading
def load_schema(path: str | Path) -> CommandSchema:
    """Load and check a schema file; SchemaError names the file and line of any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SchemaError(f"{p}: cannot read command schema: {e.strerror or e}") from e
    return parse_schema(text, str(p))


def parse_schema(text: str, source: str = "<schema>") -> CommandSchema:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SchemaError(f"{source}:{line}: YAML syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise SchemaError(f"{source}: YAML error: {e}") from None
    if node is None:
        raise SchemaError(f"{source}:1: the command schema is empty")
    return _Builder(source).schema(node)


class _Builder:
    """Walks the composed YAML node tree, so every error can name its line."""

    def __init__(self, source: str) -> None:
        self.source = source

    # ------------------------------------------------------------------ helpers
    def fail(self, node: yaml.Node, message: str) -> SchemaError:
        return SchemaError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str,
                allowed: tuple[str, ...] | None = None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, f"{what}: keys must be plain names")
            name = str(key.value)
            if name in out:
                raise self.fail(key, f"{what}: duplicate key '{name}'")
            if allowed is not None and name not in allowed:
                raise self.fail(key, f"{what}: unknown key '{name}' (allowed: "
                                     f"{', '.join(allowed)})")
            out[name] = (key, value)
        return out

    def value(self, node: yaml.Node) -> Any:
        return yaml.SafeLoader("").construct_object(node, deep=True)

    def scalar(self, node: yaml.Node, what: str, types: tuple[type, ...]) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        v = self.value(node)
        if isinstance(v, bool) and bool not in types:
            raise self.fail(node, f"{what} must be {_names(types)}, got {v!r}")
        if not isinstance(v, types):
            raise self.fail(node, f"{what} must be {_names(types)}, got {v!r}")
        return v

    def text(self, node: yaml.Node, what: str, *, allow_empty: bool = False) -> str:
        v = self.scalar(node, what, (str,))
        if not allow_empty and not v.strip():
            raise self.fail(node, f"{what} must not be empty")
        return v.strip()

    def texts(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.fail(node, f"{what} must be a non-empty list")
        out = []
        for n in node.value:  # raw scalars: in YAML 1.1 yes/no/on/off would become booleans
            if not isinstance(n, yaml.ScalarNode) or not str(n.value).strip():
                raise self.fail(n, f"{what} items must be non-empty words or phrases")
            out.append(str(n.value).strip())
        return tuple(out)

    # ------------------------------------------------------------------ structure
    def schema(self, root: yaml.Node) -> CommandSchema:
        top = self.mapping(root, "schema",
                           ("version", "robot", "stop", "confirmation", "actions", "skip_words",
                            "expansion_rules", "lists"))
        if "version" in top:
            knode, vnode = top["version"]
            if self.scalar(vnode, "version", (int,)) != 1:
                raise self.fail(vnode, "unsupported schema version (this parser reads version 1)")
        robot = self.text(top["robot"][1], "robot") if "robot" in top else "a robot"
        if "actions" not in top:
            raise self.fail(root, "schema has no 'actions'")
        anode = top["actions"][1]
        items = self.mapping(anode, "actions")
        if not items:
            raise self.fail(anode, "'actions' must declare at least one action")
        actions: dict[str, ActionSpec] = {}
        for name, (knode, vnode) in items.items():
            if not _NAME_RX.match(name):
                raise self.fail(knode, f"action name '{name}' must be lower_snake_case")
            if name == CLARIFY:
                raise self.fail(knode, f"'{CLARIFY}' is reserved for unclear requests")
            actions[name] = self.action(name, vnode)
        stop = self.stop(top["stop"][1], actions) if "stop" in top else None
        confirmation = (self.confirmation(top["confirmation"][1]) if "confirmation" in top
                        else ConfirmationPolicy())
        skip = (tuple(normalize_words(w) for w in self.texts(top["skip_words"][1], "skip_words"))
                if "skip_words" in top else ())
        rules: dict[str, str] = {}
        if "expansion_rules" in top:
            for name, (_, vnode) in self.mapping(top["expansion_rules"][1],
                                                     "expansion_rules").items():
                rules[name] = self.text(vnode, f"expansion rule '{name}'")
                self.template(vnode, rules[name], f"expansion rule '{name}'")
        lists: dict[str, tuple[str, ...] | None] = {}
        if "lists" in top:
            for name, (knode, vnode) in self.mapping(top["lists"][1], "lists").items():
                if not _NAME_RX.match(name):
                    raise self.fail(knode, f"list name '{name}' must be lower_snake_case")
                if isinstance(vnode, yaml.MappingNode):
                    m = self.mapping(vnode, f"list '{name}'", ("wildcard",))
                    if not self.scalar(m["wildcard"][1], f"list '{name}' wildcard", (bool,)):
                        raise self.fail(vnode, f"list '{name}': wildcard must be true (or give "
                                               "the list's phrases)")
                    lists[name] = None
                else:
                    lists[name] = tuple(normalize_words(w)
                                        for w in self.texts(vnode, f"list '{name}'"))
        schema = CommandSchema(actions=actions, robot=robot, stop=stop,
                               confirmation=confirmation, source=self.source, skip_words=skip,
                               expansion_rules=rules, lists=lists)
        self.check_templates(schema)
        return schema

    def action(self, name: str, node: yaml.Node) -> ActionSpec:
        where = f"action '{name}'"
        m = self.mapping(node, where, ("description", "handler", "confirm", "arguments", "reply",
                                       "vision_question", "examples", "sentences", "keywords"))
        if "description" not in m:
            raise self.fail(node, f"{where} needs a description")
        description = self.text(m["description"][1], f"{where} description")
        handler = "robot"
        if "handler" in m:
            hnode = m["handler"][1]
            handler = self.text(hnode, f"{where} handler")
            if handler not in HANDLERS:
                raise self.fail(hnode, f"{where}: handler must be one of {', '.join(HANDLERS)}, "
                                       f"got '{handler}'")
        confirm = bool(self.scalar(m["confirm"][1], f"{where} confirm", (bool,))) \
            if "confirm" in m else False
        arguments: list[ArgumentSpec] = []
        if "arguments" in m:
            for aname, (aknode, avnode) in self.mapping(m["arguments"][1],
                                                       f"{where} arguments").items():
                if not _NAME_RX.match(aname):
                    raise self.fail(aknode, f"{where}: argument name '{aname}' must be "
                                            "lower_snake_case")
                arguments.append(self.argument(f"{where} argument '{aname}'", aname, avnode))
        reply = self.text(m["reply"][1], f"{where} reply") if "reply" in m else ""
        vision_question = (self.text(m["vision_question"][1], f"{where} vision_question")
                           if "vision_question" in m else "")
        spec = ActionSpec(name=name, description=description, arguments=tuple(arguments),
                          handler=handler, confirm=confirm, reply=reply,
                          vision_question=vision_question)
        if reply:
            for fname in re.findall(r"{([^{}]*)}", reply):
                if fname not in spec.argument_names:
                    raise self.fail(m["reply"][1], f"{where}: reply template uses "
                                                   f"{{{fname}}}, which is not an argument")
        if handler == "vision":
            q = spec.argument("question")
            if not vision_question and (q is None or q.type != "string"):
                raise self.fail(node, f"{where}: a vision action needs a string argument "
                                      "'question' or a vision_question")
        if handler == "say":
            t = spec.argument("text")
            if t is None or t.type != "string":
                raise self.fail(node, f"{where}: a say action needs a string argument 'text'")
        if "examples" not in m:
            raise self.fail(node, f"{where} needs at least one example utterance")
        examples = self.examples(spec, m["examples"][1])
        sentences = self.sentences(spec, m["sentences"][1]) if "sentences" in m else ()
        keywords = (tuple(normalize_words(w) for w in self.texts(m["keywords"][1],
                                                                  f"{where} keywords"))
                    if "keywords" in m else ())
        return ActionSpec(name=name, description=description, arguments=tuple(arguments),
                          handler=handler, confirm=confirm, reply=reply,
                          vision_question=vision_question, examples=examples,
                          sentences=sentences, keywords=keywords)

    def argument(self, where: str, name: str, node: yaml.Node) -> ArgumentSpec:
        m = self.mapping(node, where, ("type", "description", "enum", "minimum", "maximum",
                                       "minLength", "maxLength", "default", "synonyms", "unit",
                                       "units"))
        if "type" not in m:
            raise self.fail(node, f"{where} needs a type ({', '.join(ARG_TYPES)})")
        tnode = m["type"][1]
        atype = self.text(tnode, f"{where} type")
        if atype not in ARG_TYPES:
            raise self.fail(tnode, f"{where}: type must be one of {', '.join(ARG_TYPES)}, "
                                   f"got '{atype}'")
        description = (self.text(m["description"][1], f"{where} description")
                       if "description" in m else "")
        py_type: tuple[type, ...] = {"string": (str,), "integer": (int,),
                                     "number": (int, float), "boolean": (bool,)}[atype]
        enum = None
        if "enum" in m:
            enode = m["enum"][1]
            if atype not in ("string", "integer"):
                raise self.fail(enode, f"{where}: enum is only for string and integer arguments")
            if not isinstance(enode, yaml.SequenceNode) or not enode.value:
                raise self.fail(enode, f"{where}: enum must be a non-empty list")
            enum = tuple(self.scalar(n, f"{where} enum value", py_type) for n in enode.value)
            if len(set(enum)) != len(enum):
                raise self.fail(enode, f"{where}: enum values must be unique")
        bounds: dict[str, Any] = {}
        for key in ("minimum", "maximum"):
            if key in m:
                if atype not in ("integer", "number"):
                    raise self.fail(m[key][1], f"{where}: {key} is only for numbers")
                bounds[key] = self.scalar(m[key][1], f"{where} {key}", py_type)
        for key in ("minLength", "maxLength"):
            if key in m:
                if atype != "string":
                    raise self.fail(m[key][1], f"{where}: {key} is only for strings")
                n = self.scalar(m[key][1], f"{where} {key}", (int,))
                if n < 0:
                    raise self.fail(m[key][1], f"{where}: {key} must be >= 0")
                bounds[key] = n
        # Bounded by design: a small model must not be able to ask for 10 km or a novel.
        if atype in ("integer", "number") and enum is None and \
                ("minimum" not in bounds or "maximum" not in bounds):
            raise self.fail(node, f"{where}: numeric arguments need both minimum and maximum")
        if atype == "string" and enum is None and "maxLength" not in bounds:
            raise self.fail(node, f"{where}: free-text string arguments need a maxLength "
                                  "(or an enum)")
        if "minimum" in bounds and "maximum" in bounds and bounds["minimum"] > bounds["maximum"]:
            raise self.fail(m["minimum"][1], f"{where}: minimum {bounds['minimum']} is greater "
                                             f"than maximum {bounds['maximum']}")
        if bounds.get("minLength", 0) > bounds.get("maxLength", math.inf):
            raise self.fail(m["minLength"][1], f"{where}: minLength is greater than maxLength")
        synonyms: dict[Any, tuple[str, ...]] = {}
        if "synonyms" in m:
            snode = m["synonyms"][1]
            if enum is None:
                raise self.fail(snode, f"{where}: synonyms are only for enum arguments")
            by_text = {str(v): v for v in enum}
            seen: dict[str, Any] = {}
            for value, (vk, vv) in self.mapping(snode, f"{where} synonyms").items():
                if value not in by_text:
                    raise self.fail(vk, f"{where}: synonyms for '{value}', which is not one of "
                                        f"{', '.join(map(str, enum))}")
                words = tuple(normalize_words(w) for w in self.texts(vv, f"{where} synonyms"))
                for w in words:
                    if w in seen and seen[w] != by_text[value]:
                        raise self.fail(vv, f"{where}: '{w}' is a synonym of both "
                                            f"'{seen[w]}' and '{value}'")
                    seen[w] = by_text[value]
                synonyms[by_text[value]] = words
        unit = units = None
        for key in ("unit", "units"):
            if key in m and atype not in ("integer", "number"):
                raise self.fail(m[key][1], f"{where}: {key} is only for numbers")
        if "unit" in m:
            unit = self.text(m["unit"][1], f"{where} unit")
        if "units" in m:
            units = tuple(normalize_words(w) for w in self.texts(m["units"][1], f"{where} units"))
        spec = ArgumentSpec(name=name, type=atype, description=description, enum=enum,
                            minimum=bounds.get("minimum"), maximum=bounds.get("maximum"),
                            min_length=bounds.get("minLength"),
                            max_length=bounds.get("maxLength"), synonyms=synonyms,
                            unit=unit or "", units=units or ())
        if "default" in m:
            dnode = m["default"][1]
            try:
                default = spec.check(self.value(dnode))
            except CommandError as e:
                raise self.fail(dnode, f"{where}: invalid default: {e}") from None
            spec = ArgumentSpec(**{**spec.__dict__, "default": default})
        return spec

    def template(self, node: yaml.Node, text: str, where: str) -> None:
        """Check one hassil template's syntax (the error names the line)."""
        from hassil.parse_expression import parse_sentence
        try:
            parse_sentence(text)
        except Exception as e:  # noqa: BLE001 - hassil raises several unrelated types
            raise self.fail(node, f"{where}: template {text!r} is not valid: {e}") from None

    def sentences(self, spec: ActionSpec, node: yaml.Node) -> tuple[SentenceGroup, ...]:
        where = f"action '{spec.name}' sentences"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.fail(node, f"{where} must be a non-empty list")
        plain: list[tuple[yaml.Node, str]] = []
        groups: list[SentenceGroup] = []
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                plain.append((item, self.text(item, f"{where} item")))
                continue
            m = self.mapping(item, f"{where} group", ("sentences", "arguments", "reply",
                                                      "answer"))
            if "sentences" not in m:
                raise self.fail(item, f"{where}: a group needs 'sentences'")
            snode = m["sentences"][1]
            if not isinstance(snode, yaml.SequenceNode) or not snode.value:
                raise self.fail(snode, f"{where}: a group's sentences must be a non-empty list")
            texts = []
            for n in snode.value:
                texts.append(self.text(n, f"{where} item"))
                self.template(n, texts[-1], where)
            args: dict[str, Any] = {}
            if "arguments" in m:
                anode = m["arguments"][1]
                for aname, (ak, av) in self.mapping(anode, f"{where} arguments").items():
                    arg = spec.argument(aname)
                    if arg is None:
                        raise self.fail(ak, f"{where}: '{spec.name}' has no argument '{aname}'")
                    try:
                        args[aname] = arg.check(self.value(av))
                    except CommandError as e:
                        raise self.fail(av, f"{where}: {e}") from None
            reply = self.text(m["reply"][1], f"{where} reply") if "reply" in m else ""
            answer = ""
            if "answer" in m:
                answer = self.text(m["answer"][1], f"{where} answer")
                if answer not in ANSWER_SOURCES:
                    raise self.fail(m["answer"][1], f"{where}: answer must be one of "
                                                    f"{', '.join(ANSWER_SOURCES)}")
            if (reply or answer) and spec.handler != "answer":
                raise self.fail(item, f"{where}: reply/answer in a sentence group is for "
                                      "answer actions (handler: answer)")
            groups.append(SentenceGroup(tuple(texts), args, reply, answer,
                                        item.start_mark.line + 1))
        for n, text in plain:
            self.template(n, text, where)
        if plain:
            groups.insert(0, SentenceGroup(tuple(t for _, t in plain),
                                           line=plain[0][0].start_mark.line + 1))
        return tuple(groups)

    def check_templates(self, schema: CommandSchema) -> None:
        """Every {slot} is an argument of its action or a list, every <rule> exists, and every
        argument without a default is either captured or fixed by the group."""
        from hassil.parse_expression import parse_sentence
        for spec in schema.actions.values():
            for group in spec.sentences:
                for text in group.sentences:
                    where = f"{schema.source}:{group.line}: action '{spec.name}'"
                    for rule in re.findall(r"<([^<>]+)>", text):
                        if rule not in schema.expansion_rules:
                            raise SchemaError(f"{where}: template {text!r} uses <{rule}>, which "
                                              "is not under expansion_rules")
                    names = {_slot_name(n) for n in
                             parse_sentence(text).list_names(None)}
                    for slot in names:
                        if spec.argument(slot) is None and slot not in schema.lists:
                            raise SchemaError(f"{where}: template {text!r} uses {{{slot}}}, "
                                              f"which is not an argument of '{spec.name}' nor "
                                              "a list under lists")
                    for arg in spec.arguments:
                        if arg.default is None and arg.name not in group.arguments and \
                                arg.name not in names and spec.handler != "vision":
                            raise SchemaError(f"{where}: template {text!r} does not say "
                                              f"{{{arg.name}}}, which has no default")

    def examples(self, spec: ActionSpec, node: yaml.Node) -> tuple[Example, ...]:
        where = f"action '{spec.name}' examples"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.fail(node, f"{where} must be a non-empty list")
        out = []
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):  # shorthand: just the utterance
                text, args, reply, args_node = self.text(item, f"{where} item"), {}, "", item
            else:
                m = self.mapping(item, f"{where} item", ("text", "arguments", "reply"))
                if "text" not in m:
                    raise self.fail(item, f"{where}: each example needs a text")
                text = self.text(m["text"][1], f"{where} text")
                args_node = m["arguments"][1] if "arguments" in m else item
                args = self.value(m["arguments"][1]) if "arguments" in m else {}
                reply = self.text(m["reply"][1], f"{where} reply") if "reply" in m else ""
            try:
                checked = spec.check_arguments(args if args is not None else {})
            except CommandError as e:
                raise self.fail(args_node, f"{where}: example '{text}': {e}") from None
            out.append(Example(text=text, arguments=checked, reply=reply))
        return tuple(out)

    def stop(self, node: yaml.Node, actions: Mapping[str, ActionSpec]) -> StopPolicy:
        m = self.mapping(node, "stop", ("action", "phrases", "filler", "reply"))
        for key in ("action", "phrases"):
            if key not in m:
                raise self.fail(node, f"stop needs '{key}'")
        anode = m["action"][1]
        action = self.text(anode, "stop action")
        if action not in actions:
            raise self.fail(anode, f"stop action '{action}' is not declared under actions")
        if actions[action].arguments:
            raise self.fail(anode, f"stop action '{action}' must take no arguments")
        phrases = tuple(normalize_words(p) for p in self.texts(m["phrases"][1], "stop phrases"))
        filler = (tuple(normalize_words(p) for p in self.texts(m["filler"][1], "stop filler"))
                  if "filler" in m else ())
        reply = self.text(m["reply"][1], "stop reply") if "reply" in m else "Stopping."
        return StopPolicy(action=action, phrases=phrases, filler=filler, reply=reply)

    def confirmation(self, node: yaml.Node) -> ConfirmationPolicy:
        m = self.mapping(node, "confirmation",
                         ("question", "yes", "no", "confirmed_reply", "declined_reply"))
        d = ConfirmationPolicy()
        question = self.text(m["question"][1], "confirmation question") if "question" in m \
            else d.question
        for fname in re.findall(r"{([^{}]*)}", question):
            if fname != "summary":
                raise self.fail(m["question"][1], "confirmation question may only use {summary}")
        return ConfirmationPolicy(
            question=question,
            yes=tuple(normalize_words(p) for p in self.texts(m["yes"][1], "confirmation yes"))
            if "yes" in m else d.yes,
            no=tuple(normalize_words(p) for p in self.texts(m["no"][1], "confirmation no"))
            if "no" in m else d.no,
            confirmed_reply=self.text(m["confirmed_reply"][1], "confirmed_reply")
            if "confirmed_reply" in m else d.confirmed_reply,
            declined_reply=self.text(m["declined_reply"][1], "declined_reply")
            if "declined_reply" in m else d.declined_reply)


def _slot_name(list_name: str) -> str:
    return list_name.split(":", 1)[-1]


def _names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def normalize_words(text: str) -> str:
    """Lower case, apostrophes kept, other punctuation to spaces, single spaces."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


def same_command(action: str, arguments: Mapping[str, Any], expected_action: str,
                 expected_arguments: Mapping[str, Any]) -> bool:
    """Exact match for evaluation: same action, same argument names, numbers equal by value,
    strings equal after lower-casing and removing punctuation (free text such as say.text)."""
    if action != expected_action or set(arguments) != set(expected_arguments):
        return False
    for key, want in expected_arguments.items():
        got = arguments[key]
        if isinstance(want, bool) or isinstance(got, bool):
            if got is not want:
                return False
        elif isinstance(want, (int, float)):
            if not isinstance(got, (int, float)) or abs(float(got) - float(want)) > 1e-6:
                return False
        elif isinstance(want, str):
            if not isinstance(got, str) or normalize_words(got) != normalize_words(want):
                return False
        elif got != want:
            return False
    return True
