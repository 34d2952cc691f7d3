"""Parser core without ROS: streaming JSON reading, number words, the stop and confirmation rules,
the bounded history with barge-in rewrite, and the confirmation policy with the real SmolLM2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from locara_ros.core.backends.chat import (
    LlamaCppCommandModel,
    action_alternatives,
    bounded_numbers,
    copy_spans,
)
from locara_ros.core.command_schema import load_schema, parse_schema
from locara_ros.core.parser import (
    INTERRUPTED_NOTE,
    CommandParser,
    Conversation,
    ParserConfig,
    StreamingJsonReader,
    Turn,
    match_phrases,
    normalize_numbers,
    refers_back,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "commands.yaml"


@pytest.mark.parametrize("obj", [
    {"action": "say", "arguments": {"text": 'he said "hi" {x}'},
     "reply": "Line\n\u00e9 \U0001F600 \\ ok"},
    {"action": "move", "arguments": {"direction": "forward", "distance_m": 2}, "reply": "Moving."},
])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_reader_streams_the_reply_char_by_char(obj, ascii_only):
    text = json.dumps(obj, ensure_ascii=ascii_only, indent=None if ascii_only else 1)
    reader, out, head_at = StreamingJsonReader("reply"), [], None
    for i, ch in enumerate(text):
        out.append(reader.feed(ch))
        if head_at is None and reader.has("action", "arguments"):
            head_at = i
    assert "".join(out) == obj["reply"]
    assert reader.done and not reader.error
    assert reader.value("arguments") == obj["arguments"]
    assert head_at < text.index('"reply"')  # command known before the reply starts


def test_number_words_become_digits():
    assert normalize_numbers("drive forward three meters") == "drive forward 3 meters"
    assert normalize_numbers("turn left forty five degrees") == "turn left 45 degrees"
    assert normalize_numbers("back up half a meter") == "back up 0.5 meter"
    assert normalize_numbers("go one and a half meters") == "go 1.5 meters"
    assert normalize_numbers("turn a hundred and eighty degrees") == "turn 180 degrees"
    assert normalize_numbers("pick up a cup") == "pick up a cup"


def test_stop_phrases_match_whole_requests_only():
    schema = load_schema(SCHEMA_PATH)
    stop = schema.stop
    for text in ("stop", "Stop!", "please stop now", "halt, halt!", "emergency stop",
                 "Don't move!"):
        assert match_phrases(text, stop.phrases, stop.filler), text
    for text in ("stop at the kitchen", "don't stop", "go to the bus stop", ""):
        assert not match_phrases(text, stop.phrases, stop.filler), text


def test_history_is_bounded_and_barge_in_rewrites_the_turn():
    conv = Conversation(max_turns=2)
    for i in range(3):
        conv.add(Turn(f"u{i}", f"request {i}", "go_to", {"place": "kitchen"}, f"reply {i}"))
    assert [t.utterance_id for t in conv.turns()] == ["u1", "u2"]
    assert conv.interrupt("u2", "rep")
    msgs = conv.messages()
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 2
    assert json.loads(msgs[-1]["content"])["reply"] == "rep" + INTERRUPTED_NOTE
    # A barge-in that arrives while the turn is still being generated applies when it is added.
    assert not conv.interrupt("u3", "Going")
    conv.add(Turn("u3", "go to the office", "go_to", {"place": "office"}, "Going to the off"))
    assert conv.turns()[-1].reply == "Going" + INTERRUPTED_NOTE


def test_history_reaches_the_prompt_only_for_requests_that_refer_back():
    follow_ups = ["and now the bathroom", "put it on the table", "turn left again",
                  "no, the other one", "do that too", "go back there"]
    fresh = ["go to the kitchen", "pick up the red ball", "turn right 90 degrees",
             "say hello to everyone", "what do you see"]
    assert all(refers_back(t) for t in follow_ups)
    assert not any(refers_back(t) for t in fresh)
    schema = load_schema(str(SCHEMA_PATH))
    # messages() only builds the prompt: no model is needed to check what goes into it.
    fresh_parser = CommandParser(schema, None, ParserConfig())
    parser = CommandParser(schema, None, ParserConfig())
    turn = Turn("u1", "pick up the cup", "pick_up", {"object": "cup"}, "OK.")
    parser.conversation.add(turn)
    assert parser.messages("go to the kitchen") == fresh_parser.messages("go to the kitchen")
    with_history = parser.messages("and now the bathroom")
    assert with_history[-3:] == [{"role": "user", "content": "pick up the cup"},
                                 {"role": "assistant", "content": turn.assistant_json()},
                                 {"role": "user", "content": "and now the bathroom"}]
    always = CommandParser(schema, None, ParserConfig(history_mode="always"))
    always.conversation.add(turn)
    assert always.messages("go to the kitchen")[-3:-1] == with_history[-3:-1]


def test_grammar_schema_bounds_numbers_by_construction():
    schema = load_schema(SCHEMA_PATH)
    js = bounded_numbers(schema.json_schema())
    move = next(a for a in js["anyOf"] if a["properties"]["action"]["enum"] == ["move"])
    values = move["properties"]["arguments"]["properties"]["distance_m"]["enum"]
    assert min(values) == 0.1 and max(values) == 5 and 1.5 in values and 2 in values
    assert all(0.1 <= v <= 5 for v in values)


def test_free_text_arguments_are_limited_to_spans_of_the_request():
    schema = load_schema(SCHEMA_PATH)
    js = copy_spans(schema.json_schema(), "Say good morning, everyone!")
    alts = action_alternatives(js)
    spans = alts["say"]["properties"]["arguments"]["properties"]["text"]["enum"]
    # Contiguous runs of the request's words, punctuation at word ends dropped; no rewrites.
    assert {"good morning everyone", "everyone", "Say good morning everyone"} <= set(spans)
    assert "good everyone" not in spans and "good morning to everyone" not in spans
    assert len(spans) == 10
    assert alts["look"]["properties"]["arguments"]["properties"]["question"]["enum"] == spans
    # Enums and numbers are untouched; a request too long to enumerate leaves the schema as is.
    assert alts["go_to"] == action_alternatives(schema.json_schema())["go_to"]
    assert copy_spans(schema.json_schema(), "word " * 100) == schema.json_schema()


@pytest.fixture(scope="module")
def model():
    m = LlamaCppCommandModel(n_threads=1)
    yield m
    m.close()


def test_confirmation_policy_with_the_real_model(model):
    text = SCHEMA_PATH.read_text().replace(
        "  go_to:\n    description: Drive to a named place.",
        "  go_to:\n    description: Drive to a named place.\n    confirm: true", 1)
    schema = parse_schema(text, "confirm.yaml")
    parser = CommandParser(schema, model, ParserConfig(generation_timeout_s=120.0))
    published = []
    ask = parser.parse("go to the kitchen", on_command=published.append)
    assert ask.success and ask.needs_clarification and not published
    assert ask.reply == "Should I go to (place: kitchen)? Please say yes or no."
    yes = parser.parse("yes please", on_command=published.append)
    assert [p.command.action for p in published] == ["go_to"]
    assert yes.confirmed and yes.origin == "confirmation" and yes.command.arguments == {
        "place": "kitchen"}
    # Declining publishes nothing.
    parser.parse("go to the kitchen", on_command=published.append)
    no = parser.parse("no", on_command=published.append)
    assert no.command is None and no.reply == "Okay, I won't." and len(published) == 1


def test_two_stage_decoding_scores_actions_and_reports_the_probability(model):
    schema = load_schema(SCHEMA_PATH)
    parser = CommandParser(schema, model, ParserConfig(history_turns=0,
                                                       generation_timeout_s=120.0))
    model.decode, model.copy_free_text = "two_stage", True
    try:
        scores = model.action_scores(parser.messages("go to the kitchen", use_history=False),
                                     list(action_alternatives(parser.json_schema)))
        assert set(scores) == set(schema.actions) | {"clarify"}
        assert max(scores, key=scores.get) == "go_to"
        out = parser.parse("go to the kitchen", use_history=False)
        assert out.success and out.command.action == "go_to"
        assert out.command.arguments == {"place": "kitchen"}
        assert 0.0 < out.confidence <= 1.0 and out.confidence == model.last_confidence
        # Every action below the threshold: the request becomes a clarifying question.
        model.min_action_prob = 1.01
        unsure = parser.parse("go to the kitchen", use_history=False)
        assert unsure.success and unsure.command is None and unsure.needs_clarification
        assert unsure.reply
    finally:
        model.decode, model.copy_free_text, model.min_action_prob = "grammar", False, 0.0
