"""Command schema: loading, the derived JSON schema, validation, and rejection of bad files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from locara_ros.core.command_schema import (
    CLARIFY,
    CommandError,
    SchemaError,
    load_schema,
    parse_schema,
    same_command,
)
from locara_ros.testing.processes import NodeProcess

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "commands.yaml"
DEFAULT_TEXT = SCHEMA_PATH.read_text()


@pytest.fixture(scope="module")
def schema():
    return load_schema(SCHEMA_PATH)


def test_default_schema_has_the_mobile_manipulator_actions(schema):
    assert {"move", "turn", "stop", "go_to", "pick_up", "put_down", "describe_scene", "look",
            "answer", "say"} <= set(schema.actions)
    assert "kitchen" in schema.actions["go_to"].argument("place").enum
    assert schema.actions["describe_scene"].handler == "vision"
    assert schema.stop is not None and schema.stop.action == "stop"
    for spec in schema.actions.values():
        assert spec.description and spec.examples, spec.name


def test_json_schema_couples_each_action_with_its_arguments(schema):
    js = schema.json_schema(reply_max_chars=80)
    alternatives = {alt["properties"]["action"]["enum"][0]: alt for alt in js["anyOf"]}
    assert set(alternatives) == set(schema.actions) | {CLARIFY}
    move = alternatives["move"]
    # Key order: the command is complete before the reply starts streaming.
    assert list(move["properties"]) == ["action", "arguments", "reply"]
    args = move["properties"]["arguments"]
    assert args["additionalProperties"] is False
    assert args["properties"]["distance_m"] == {
        "type": "number", "description": "distance in meters", "minimum": 0.1, "maximum": 5.0}
    assert args["properties"]["direction"]["enum"] == ["forward", "backward"]
    assert move["properties"]["reply"]["maxLength"] == 80
    json.dumps(js)  # serialisable for response_format


@pytest.mark.parametrize("text, action, arguments", [
    ('{"action": "move", "arguments": {"direction": "forward", "distance_m": 2}, "reply": "ok"}',
     "move", {"direction": "forward", "distance_m": 2}),
    ('{"action": "turn", "arguments": {"direction": "left", "angle_deg": 90.0}, "reply": ""}',
     "turn", {"direction": "left", "angle_deg": 90}),
    ('{"action": "stop", "reply": "Stopping."}', "stop", {}),
    ('{"action": "clarify", "arguments": {}, "reply": "Which room?"}', CLARIFY, {}),
])
def test_valid_outputs(schema, text, action, arguments):
    command, _reply = schema.validate_text(text)
    assert command.action == action and command.arguments == arguments


@pytest.mark.parametrize("text, reason", [
    ("", "empty output"),
    ("{not json", "not valid JSON"),
    ('["move"]', "must be a JSON object"),
    ('{"action": "fly", "arguments": {}, "reply": ""}', "'fly' is not in the schema"),
    ('{"action": "move", "arguments": {"direction": "forward", "distance_m": 50}}',
     "above the maximum 5"),
    ('{"action": "move", "arguments": {"direction": "forward", "distance_m": "2"}}',
     "must be a number"),
    ('{"action": "move", "arguments": {"direction": "forward", "distance_m": true}}',
     "must be a number"),
    ('{"action": "move", "arguments": {"direction": "sideways", "distance_m": 1}}',
     "not one of forward, backward"),
    ('{"action": "move", "arguments": {"direction": "forward"}}', "missing argument(s) distance_m"),
    ('{"action": "go_to", "arguments": {"place": "kitchen", "speed": 3}}', "no argument(s) speed"),
    ('{"action": "turn", "arguments": {"direction": "left", "angle_deg": 12.5}}',
     "must be an integer"),
    ('{"action": "say", "arguments": {"text": "' + "x" * 300 + '"}}', "longer than 200"),
    ('{"action": "move", "arguments": {"direction": "forward", "distance_m": 1}, "reply": 3}',
     "'reply' must be a string"),
    ('{"action": "stop", "arguments": {}, "reply": "", "extra": 1}', "unexpected key(s) extra"),
])
def test_invalid_outputs_are_rejected_with_a_reason(schema, text, reason):
    with pytest.raises(CommandError, match=re.escape(reason)):
        schema.validate_text(text)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, needle, reason", [
    ("maximum: 5.0", "maximum: -5.0", "minimum: 0.1", "greater than maximum"),
    ("type: integer", "type: float", "type: float", "type must be one of"),
    ("handler: vision\n    vision_question", "handler: telepathy\n    vision_question",
     "handler: telepathy", "handler must be one of"),
    ("        arguments: {place: kitchen}", "        arguments: {place: attic}",
     "{place: attic}", "'attic' is not one of"),
    ("  turn:\n    description", "  turn:\n    colour: red\n    description", "colour: red",
     "unknown key 'colour'"),
    ("  stop:\n    description: Stop all", "  move:\n    description: Stop all",
     "  move:\n    description: Stop all", "duplicate key 'move'"),
    ("        maxLength: 160\n", "", "      question:\n", "need a maxLength"),
    ("  move:\n", "  Move It:\n", "Move It:", "lower_snake_case"),
    ("  answer:\n", "  clarify:\n", "  clarify:", "reserved"),
    ("    reply: Going to the {place}.", "    reply: Going to the {room}.", "{room}",
     "not an argument"),
    ("enum: [forward, backward]", "enum: [forward, backward", "enum: [forward, backward",
     "YAML syntax error"),
])
def test_invalid_schema_names_file_and_line(tmp_path, old, new, needle, reason):
    assert old in DEFAULT_TEXT
    text = DEFAULT_TEXT.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    message = str(info.value)
    assert reason in message
    m = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
    assert m, message
    line = int(m.group(1))
    if reason != "YAML syntax error":  # syntax errors are reported where the parser noticed
        expected = _line_of(text, needle.splitlines()[0]) if "\n" not in needle else \
            _line_of(text, needle.splitlines()[0]) + 1
        if reason == "duplicate key 'move'":
            expected = [i for i, ln in enumerate(text.splitlines(), 1) if ln == "  move:"][1]
        assert line == expected, message
    else:
        assert line >= _line_of(text, needle)


def test_schema_without_actions_or_file_is_rejected(tmp_path):
    with pytest.raises(SchemaError, match=r"x.yaml:1: schema has no 'actions'"):
        parse_schema("version: 1\nrobot: r\n", "x.yaml")
    with pytest.raises(SchemaError, match=r"nope.yaml: cannot read"):
        load_schema(tmp_path / "nope.yaml")
    with pytest.raises(SchemaError, match="empty"):
        parse_schema("", "e.yaml")


def test_same_command_is_exact_but_tolerant_of_number_and_text_form():
    assert same_command("move", {"direction": "forward", "distance_m": 2.0},
                        "move", {"direction": "forward", "distance_m": 2})
    assert not same_command("move", {"direction": "forward", "distance_m": 2.5},
                            "move", {"direction": "forward", "distance_m": 2})
    assert same_command("say", {"text": "Good morning!"}, "say", {"text": "good morning"})
    assert not same_command("go_to", {"place": "kitchen"}, "go_to", {"place": "office"})
    assert not same_command("stop", {}, "move", {})


def test_node_refuses_an_invalid_schema_at_start_up(procs, tmp_path):
    bad = tmp_path / "bad_commands.yaml"
    bad.write_text(DEFAULT_TEXT.replace("maximum: 360", "maximum: many", 1))
    proc = procs.add(NodeProcess.node("command_parser", log_dir=procs.log_dir,
                                      params={"schema_path": str(bad)}))
    proc.start()
    with pytest.raises(RuntimeError, match="exited with code 1"):
        proc.wait_ready(timeout=60)
    line = _line_of(bad.read_text(), "maximum: many")
    assert f"{bad}:{line}: action 'turn' argument 'angle_deg' maximum must be an integer" in \
        proc.output()
