"""command_parser node with the shipped schema (sentence templates) and the real packaged
SmolLM2-135M GGUF behind them (llama.cpp, constrained decoding, grounded proposals).

One node process for the module (model load + prompt-cache warm-up happen once).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from locara_ros.core import contract as C
from locara_ros.core.command_schema import CLARIFY, same_command
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, VoiceEvent
from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS, SERVICE_QOS, STREAM_QOS
from locara_ros.srv import ParseCommand
from locara_ros.testing.processes import NodeProcess, ProcessGroup

DATA = Path(__file__).resolve().parent / "data" / "utterances.yaml"
# Measured with the shipped schema and this model (bench/parser.py, 2026-11-30): 172/173 exact,
# 0 dangerous. The floor catches regressions; the dangerous count must stay 0.
ACCURACY_FLOOR = 0.95
TIMEOUT = 240.0  # generous: the CI machine may be shared and slow


@pytest.fixture(scope="module")
def parser_node(ros_domain, tmp_path_factory):
    group = ProcessGroup(str(tmp_path_factory.mktemp("parser_logs")))
    proc = group.start(NodeProcess.node(
        "command_parser", log_dir=group.log_dir,
        params={"threads": 1, "generation_timeout_s": 120.0, "request_timeout": 200.0,
                "vision_timeout_s": 5.0}), ready_timeout=300)
    yield proc, group
    group.stop_all()


@pytest.fixture
def ros_parse(parser_node, ros):
    node = ros.node("parser_node_test")
    client = node.create_client(ParseCommand, C.PARSE.name, qos_profile=SERVICE_QOS)

    def parse(text: str, use_history: bool = False, publish: bool = False):
        try:
            return ros.call(client, ParseCommand.Request(text=text, use_history=use_history,
                                                         publish=publish), timeout=TIMEOUT)
        except TimeoutError as e:  # did the request arrive, and was it answered? (CI, once)
            raise TimeoutError(f"{e} (request {text!r}); command_parser log, last lines:\n"
                               f"{parser_node[0].output()[-4000:]}") from None
    return node, parse


def test_labelled_set_all_outputs_valid_accurate_and_never_dangerous(ros_parse):
    _node, parse = ros_parse
    items = yaml.safe_load(DATA.read_text())["items"]
    assert len(items) >= 150
    exact, rows, dangerous = 0, [], []
    robot_actions = {"move", "turn", "go_to", "pick_up", "put_down"}
    for item in items:
        for ctx in item.get("context") or []:
            parse(ctx, use_history=True)
        res = parse(item["text"], use_history=bool(item.get("context")))
        # success=false only for backend errors / garbage: constrained decoding must never
        # produce either, so every output validated against the schema.
        assert res.success, (item["text"], res.message)
        if res.command.action:
            action, args = res.command.action, json.loads(res.command.arguments_json)
        else:
            action, args = (CLARIFY if res.needs_clarification else ""), {}
        ok = same_command(action, args, item["action"], item.get("arguments") or {})
        exact += ok
        if action in robot_actions and not ok:
            dangerous.append(item["text"])
        rows.append(f"{'OK ' if ok else 'BAD'} {item['text']!r} -> {action} {args} "
                    f"[{res.command.origin}]")
        if item.get("fast_path"):
            assert ok and res.command.origin == "fast_path" and res.command.confidence == 1.0
        elif res.command.action:
            assert res.command.origin in ("template", "follow_up",
                                          "llm:llama_cpp:SmolLM2-135M-Instruct.Q4_1")
        assert res.reply, item["text"]
    accuracy = exact / len(items)
    print("\n" + "\n".join(rows))
    print(f"\nexact-match accuracy: {exact}/{len(items)} = {100 * accuracy:.1f} % "
          f"(100 % schema-valid), dangerous: {dangerous}")
    assert dangerous == []
    assert accuracy >= ACCURACY_FLOOR


def test_transcript_gives_one_command_and_its_reply(ros, ros_parse):
    node, _parse = ros_parse
    pub = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    partial = node.create_publisher(Transcript, C.TRANSCRIPT_PARTIAL.name, RELIABLE_QOS)
    commands = ros.collect(node, RobotCommand, C.COMMAND.name, RELIABLE_QOS)
    replies = ros.collect(node, ReplyChunk, C.REPLY.name, STREAM_QOS)
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    ros.wait_for_subscribers(pub)
    ros.wait_for_subscribers(partial)
    # An incomplete partial and an empty final are ignored; a partial that is already a
    # complete command is prepared (COMMAND_READY) but not published before the final.
    partial.publish(Transcript(utterance_id="u-1", text="go to the", is_final=False))
    pub.publish(Transcript(utterance_id="u-empty", text="  ", is_final=True))
    partial.publish(Transcript(utterance_id="u-1", text="go to the bedroom", is_final=False))
    ready = events.wait_for(1, timeout=10, where=lambda e: e.type == VoiceEvent.COMMAND_READY)
    assert (ready[0].utterance_id, ready[0].text) == ("u-1", "go_to")
    assert json.loads(ready[0].detail) == {"place": "bedroom"}
    assert commands.snapshot() == []
    pub.publish(Transcript(utterance_id="u-1", text="go to the bedroom", is_final=True))
    final = replies.wait_for(1, timeout=TIMEOUT, where=lambda c: c.final)[0]
    assert final.utterance_id == "u-1" and not final.cancelled
    [cmd] = commands.wait_for(1, timeout=10)
    assert (cmd.action, json.loads(cmd.arguments_json)) == ("go_to", {"place": "bedroom"})
    assert (cmd.utterance_id, cmd.source_text, cmd.origin) == ("u-1", "go to the bedroom",
                                                              "template")
    chunks = replies.snapshot()
    assert {c.utterance_id for c in chunks} == {"u-1"}
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == "Going to the bedroom."


def test_a_misheard_stop_word_said_alone_stops_the_robot(ros, ros_parse):
    """Whisper hears an isolated "abort" as "aboard.": a final no rule makes a command of, that
    sounds like a stop phrase, publishes stop (origin fast_path) and the stop reply; typed text
    on voice/parse is taken as written."""
    node, parse = ros_parse
    pub = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    commands = ros.collect(node, RobotCommand, C.COMMAND.name, RELIABLE_QOS)
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    ros.wait_for_subscribers(pub)
    pub.publish(Transcript(utterance_id="u-aboard", text="aboard.", is_final=True))
    [cmd] = commands.wait_for(1, timeout=10)
    assert (cmd.action, cmd.origin, cmd.utterance_id) == ("stop", "fast_path", "u-aboard")
    events.wait_for(1, timeout=5, where=lambda e: e.type == VoiceEvent.STOP
                    and e.utterance_id == "u-aboard")
    res = parse("aboard")
    assert res.command.action != "stop", res


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
    assert res.reply == "I can't see: no vision model is running."
    assert "not available" in res.message


def test_vision_question_answered_by_a_service_in_another_process(ros_parse, procs,
                                                                   support_dir):
    # ros_peer.py's vision/ask is a test peer, NOT a vision model: it answers with the
    # question's words reversed, which proves the question crossed the process boundary.
    procs.start(NodeProcess.python(str(support_dir / "ros_peer.py"), log_dir=procs.log_dir,
                                   label="peer"))
    node, parse = ros_parse
    from locara_ros.srv import AskVision
    assert node.create_client(AskVision, C.VISION_ASK.name).wait_for_service(timeout_sec=30)
    res = parse("describe what you see")
    assert res.success and res.command.action == "describe_scene"
    question = "Describe what you see in one or two short sentences."
    assert res.reply == " ".join(reversed(question.split()))


def test_a_spoken_stop_is_not_delayed_by_a_busy_parser(ros, ros_parse):
    """20 voice/parse calls that need the model are in flight; a partial transcript that says
    "stop" still gives `stop` on voice/command at once, from the stop lane. Every call is
    answered: a result, or busy."""
    import threading
    import time
    node, parse = ros_parse
    commands = ros.collect(node, RobotCommand, C.COMMAND.name, RELIABLE_QOS)
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    partial = node.create_publisher(Transcript, C.TRANSCRIPT_PARTIAL.name, RELIABLE_QOS)
    final = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    ros.wait_for_subscribers(partial)
    ros.wait_for_subscribers(final)
    answers: list = []

    def load(i: int) -> None:  # no template decides these: each needs the model
        answers.append(parse(f"kindly get yourself over into the kitchen area number {i}"))
    threads = [threading.Thread(target=load, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the parser is busy now
    t0 = time.monotonic()
    partial.publish(Transcript(utterance_id="u-stop", text="Stop", is_final=False))
    [stop] = commands.wait_for(1, timeout=10, where=lambda c: c.action == "stop")
    took = time.monotonic() - t0
    assert (stop.origin, stop.utterance_id) == ("fast_path", "u-stop")
    assert took < 1.0, f"stop took {took:.2f} s under load"
    events.wait_for(1, timeout=5, where=lambda e: e.type == VoiceEvent.STOP)
    # The final that agrees does not publish the stop twice.
    final.publish(Transcript(utterance_id="u-stop", text="Stop.", is_final=True))
    for t in threads:
        t.join(120)
    time.sleep(0.5)
    assert len([c for c in commands.snapshot() if c.action == "stop"]) == 1
    assert len(answers) == 20
    busy = [a for a in answers if not a.success and a.message.startswith("busy")]
    assert all(a.success or a.message.startswith(("busy", "cancelled")) for a in answers), [
        a.message for a in answers]
    assert busy, "more calls than parse_concurrency must be answered busy at once"
    print(f"\nstop under load: {took * 1000:.0f} ms; {len(busy)} busy answers")


def test_the_model_runs_below_the_voice_pipeline(parser_node):
    """The model worker (and the llama.cpp threads it starts) runs at nice 19: on a busy CPU the
    recognizer and the stop lane come first (a stop under parser load: p50 1.9 s at nice 5,
    1.2 s at nice 19, bench/stop.py). The executor threads keep normal priority."""
    proc, _group = parser_node
    assert "model worker: nice 19" in proc.output()
    nice = {}
    for stat in Path(f"/proc/{proc.proc.pid}/task").glob("*/stat"):
        text = stat.read_text()
        nice[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[16])
    assert nice[proc.proc.pid] == 0
    assert 19 in nice.values()
