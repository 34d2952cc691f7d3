"""command_parser node with the real packaged SmolLM2-135M GGUF (llama.cpp, constrained decoding).

One node process for the module (model load + prompt-cache warm-up happen once).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from locara_ros.core.command_schema import CLARIFY, same_command
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript
from locara_ros.nodes.common import RELIABLE_QOS, STREAM_QOS
from locara_ros.srv import ParseCommand
from locara_ros.testing.processes import NodeProcess, ProcessGroup

DATA = Path(__file__).resolve().parent / "data" / "utterances.yaml"
# Measured with this model and the default decoding (two-stage, mean action score, free text
# copied from the request; bench/parser.py, 2026-11-22): 40/49 = 81.6 %. The floor (38/49 passes)
# catches regressions without pretending the 135M model does better than it does.
ACCURACY_FLOOR = 0.77
TIMEOUT = 240.0  # generous: the CI machine may be shared and slow


@pytest.fixture(scope="module")
def parser_node(ros_domain, tmp_path_factory):
    group = ProcessGroup(str(tmp_path_factory.mktemp("parser_logs")))
    proc = group.start(NodeProcess.node(
        "command_parser", log_dir=group.log_dir,
        params={"n_threads": 1, "generation_timeout_s": 120.0, "service_timeout_s": 200.0,
                "vision_timeout_s": 5.0}), ready_timeout=300)
    yield proc, group
    group.stop_all()


@pytest.fixture
def ros_parse(parser_node, ros):
    node = ros.node("parser_node_test")
    client = node.create_client(ParseCommand, "voice/parse")

    def parse(text: str, use_history: bool = False, publish: bool = False):
        return ros.call(client, ParseCommand.Request(text=text, use_history=use_history,
                                                     publish=publish), timeout=TIMEOUT)
    return node, parse


def test_labelled_set_all_outputs_valid_and_accuracy(ros_parse):
    _node, parse = ros_parse
    items = yaml.safe_load(DATA.read_text())["items"]
    assert len(items) >= 40
    exact, rows = 0, []
    for item in items:
        res = parse(item["text"])
        # success=false only for backend errors / garbage: constrained decoding must never
        # produce either, so every output validated against the schema.
        assert res.success, (item["text"], res.message)
        if res.command.action:
            action, args = res.command.action, json.loads(res.command.arguments_json)
        else:
            action, args = (CLARIFY if res.needs_clarification else ""), {}
        ok = same_command(action, args, item["action"], item.get("arguments") or {})
        exact += ok
        rows.append(f"{'OK ' if ok else 'BAD'} {item['text']!r} -> {action} {args}")
        if item.get("fast_path"):
            assert ok and res.command.origin == "fast_path" and res.command.confidence == 1.0
        else:
            assert res.command.origin in ("", "llm:llama_cpp:SmolLM2-135M-Instruct.Q4_1")
        assert res.reply, item["text"]
    accuracy = exact / len(items)
    print("\n" + "\n".join(rows))
    print(f"\nexact-match accuracy: {exact}/{len(items)} = {100 * accuracy:.1f} % "
          f"(100 % schema-valid)")
    assert accuracy >= ACCURACY_FLOOR


def test_transcript_gives_one_command_and_a_streamed_reply(ros, ros_parse):
    node, _parse = ros_parse
    pub = node.create_publisher(Transcript, "voice/transcript", RELIABLE_QOS)
    commands = ros.collect(node, RobotCommand, "voice/command", RELIABLE_QOS)
    replies = ros.collect(node, ReplyChunk, "voice/reply", STREAM_QOS)
    ros.wait_for_subscribers(pub)
    # Partials and empty finals are ignored.
    pub.publish(Transcript(utterance_id="u-partial", text="go to the", is_final=False))
    pub.publish(Transcript(utterance_id="u-empty", text="  ", is_final=True))
    pub.publish(Transcript(utterance_id="u-1", text="go to the bedroom", is_final=True))
    final = replies.wait_for(1, timeout=TIMEOUT, where=lambda c: c.final)[0]
    assert final.utterance_id == "u-1" and not final.cancelled
    [cmd] = commands.wait_for(1, timeout=10)
    assert (cmd.action, json.loads(cmd.arguments_json)) == ("go_to", {"place": "bedroom"})
    assert (cmd.utterance_id, cmd.source_text) == ("u-1", "go to the bedroom")
    chunks = replies.snapshot()
    assert {c.utterance_id for c in chunks} == {"u-1"}
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert len(chunks) > 3  # streamed piece by piece, not as one message
    assert "".join(c.text for c in chunks).strip()


def test_multi_turn_context(ros, ros_parse):
    node, parse = ros_parse
    first = parse("go to the kitchen", use_history=True)
    assert first.command.action == "go_to"
    follow = parse("and now the bathroom", use_history=True)
    assert follow.success
    assert (follow.command.action, json.loads(follow.command.arguments_json)) == \
        ("go_to", {"place": "bathroom"})


def test_vision_question_without_a_vision_service(ros_parse):
    _node, parse = ros_parse
    res = parse("describe what you see")
    assert res.command.action == "describe_scene"
    assert res.reply == "I can't see right now."
    assert "not available" in res.message


def test_vision_question_answered_by_a_service_in_another_process(ros_parse, procs,
                                                                   support_dir):
    # ros_peer.py's vision/ask is a test peer, NOT a vision model: it answers with the
    # question's words reversed, which proves the question crossed the process boundary.
    procs.start(NodeProcess.python(str(support_dir / "ros_peer.py"), log_dir=procs.log_dir,
                                   label="peer"))
    _node, parse = ros_parse
    res = parse("describe what you see")
    assert res.success and res.command.action == "describe_scene"
    question = "Describe what you see in one or two short sentences."
    assert res.reply == " ".join(reversed(question.split()))
