"""command_parser with the remote (OpenAI-compatible) backend.

* Against a contract-checking stand-in server (NOT a model: it checks that each request is a
  valid OpenAI chat-completions request and answers with scripted output): garbage never
  becomes a command, a slow generation is cancelled by barge-in and by the stop fast path.
* Against a real OpenAI-compatible server: llama-cpp-python's server with the packaged SmolLM2.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from locara_ros.core import contract as C
from locara_ros.core.models import resolve_llm
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, VoiceEvent
from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS, STREAM_QOS
from locara_ros.srv import ParseCommand
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import NodeProcess

GOOD = {"action": "go_to", "arguments": {"place": "kitchen"}, "reply": "Going to the kitchen."}
SCRIPTS = {  # keyword in the user's request -> what the stand-in streams back
    "invalid json": '{"action": "move", "arguments": {"direction": ]]] nonsense',
    "wrong types": json.dumps({"action": "move", "arguments": {"direction": "forward",
                                                               "distance_m": "two"},
                               "reply": "Moving."}),
    "out of range": json.dumps({"action": "move", "arguments": {"direction": "forward",
                                                                "distance_m": 40},
                                "reply": "Moving forty meters."}),
    "unknown action": json.dumps({"action": "self_destruct", "arguments": {}, "reply": "Bye."}),
    "not an object": '["go_to", "kitchen"]',
    "empty": "",
}


class StandIn:
    """Contract-checking stand-in for an OpenAI-compatible chat server (not a model)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.disconnects = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    req = json.loads(body)
                except ValueError:
                    outer.violations.append(f"body is not JSON: {body[:80]!r}")
                    return self._status(400)
                outer.requests.append(req)
                outer.check(self.path, self.headers.get("Content-Type", ""), req)
                text = next((m.get("content", "") for m in reversed(req.get("messages", []))
                             if m.get("role") == "user"), "")
                if "server error" in text:
                    return self._status(500)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if "hang" in text:
                        time.sleep(8)
                        return
                    script = next((v for k, v in SCRIPTS.items() if k in text), None)
                    if script is None:
                        script = json.dumps(GOOD if "slow" not in text else {
                            **GOOD, "reply": "Going to the kitchen. " + "La " * 200})
                    delay = 0.05 if "slow" in text else 0.0
                    for i in range(0, len(script), 4):
                        self._event({"choices": [{"index": 0,
                                                  "delta": {"content": script[i:i + 4]}}]})
                        time.sleep(delay)
                    self._event({"choices": [{"index": 0, "delta": {},
                                              "finish_reason": "stop"}]})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    outer.disconnects += 1

            def _event(self, obj: dict) -> None:
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def _status(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, name="stand-in")
        self.thread.start()

    def check(self, path: str, content_type: str, req: dict) -> None:
        v = self.violations
        if path != "/v1/chat/completions":
            v.append(f"path {path}")
        if "application/json" not in content_type:
            v.append(f"content type {content_type}")
        if not isinstance(req.get("model"), str) or not req["model"]:
            v.append("model missing")
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "user":
            v.append("messages must be a list ending with the user turn")
        for m in msgs or []:
            if m.get("role") not in ("system", "user", "assistant") or \
                    not isinstance(m.get("content"), str):
                v.append(f"bad message {m}")
        if req.get("stream") is not True:
            v.append("stream must be true")
        if not isinstance(req.get("max_tokens"), int) or req["max_tokens"] <= 0:
            v.append("max_tokens must be a positive integer")
        if not isinstance(req.get("temperature"), (int, float)):
            v.append("temperature must be a number")
        rf = req.get("response_format")
        if not (isinstance(rf, dict) and rf.get("type") == "json_schema"
                and isinstance(rf.get("json_schema"), dict)
                and rf["json_schema"].get("name")
                and isinstance(rf["json_schema"].get("schema"), dict)
                and rf["json_schema"]["schema"].get("anyOf")):
            v.append(f"response_format is not a json_schema format: {rf}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def stand_in():
    server = StandIn()
    yield server
    server.close()


@pytest.fixture
def remote_parser(procs, stand_in):
    proc = procs.start(NodeProcess.node(
        "command_parser", log_dir=procs.log_dir,
        params={"backend": "openai", "server_url": stand_in.url, "server_model": "stand-in",
                "response_format": "json_schema", "server_timeout": 2.0,
                "generation_timeout_s": 3.0,
                # the model's own reply streams (so a barge-in can cut it)
                "reply_source": "model"}), ready_timeout=60)
    return proc


def _wire(ros):
    node = ros.node("remote_parser_test")
    client = node.create_client(ParseCommand, C.PARSE.name)
    commands = ros.collect(node, RobotCommand, C.COMMAND.name, RELIABLE_QOS)
    replies = ros.collect(node, ReplyChunk, C.REPLY.name, STREAM_QOS)
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    return node, client, commands, replies, events


@pytest.mark.parametrize("case, reason", [
    ("invalid json", "unusable model output"),
    ("wrong types", "must be a number"),
    ("out of range", "above the maximum 5"),
    ("unknown action", "'self_destruct' is not in the schema"),
    ("not an object", "not a JSON object"),
    ("empty", "empty output"),
    ("hang", "backend failed"),
    ("server error", "HTTP 500"),
])
def test_garbage_from_the_server_never_becomes_a_command(ros, stand_in, remote_parser, case,
                                                         reason):
    node, client, commands, replies, events = _wire(ros)
    ros.wait_for_publishers(node, C.COMMAND.name)
    # Words that go_to could mean, so the server is asked (a request that names no action, or
    # none whose values were said, is asked back without any model).
    res = ros.call(client, ParseCommand.Request(text=f"go to the kitchen for the {case} thing",
                                                use_history=True, publish=True), timeout=30)
    assert not res.success
    assert reason in res.message, res.message
    assert res.command.action == ""
    assert res.reply  # answered, not silent
    error = events.wait_for(1, timeout=10, where=lambda e: e.type == VoiceEvent.ERROR)[0]
    assert reason in error.detail
    final = replies.wait_for(1, timeout=10, where=lambda c: c.final)[0]
    spoken = "".join(c.text for c in replies.snapshot() if c.utterance_id == final.utterance_id)
    assert spoken == res.reply
    time.sleep(0.5)
    assert commands.snapshot() == []
    assert stand_in.violations == []
    # The node keeps working: a good answer right after is a command.
    # (no sentence template matches this: the server decides, and "get" grounds go_to)
    ok = ros.call(client, ParseCommand.Request(text="get yourself into the kitchen area",
                                               publish=True), timeout=30)
    assert ok.success and ok.command.action == "go_to"
    assert json.loads(ok.command.arguments_json) == {"place": "kitchen"}
    assert ok.command.origin == f"llm:openai:{stand_in.url}"
    [cmd] = commands.wait_for(1, timeout=10)
    assert cmd.action == "go_to" and cmd.utterance_id == ""
    assert remote_parser.alive


def _slow_turn(ros, stand_in, node, uid: str):
    pub = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    ros.wait_for_subscribers(pub)
    pub.publish(Transcript(utterance_id=uid, text="go to the kitchen, slow please",
                           is_final=True))
    return pub


def test_barge_in_cancels_the_reply_in_flight(ros, stand_in, remote_parser):
    node, _client, commands, replies, events = _wire(ros)
    ev_pub = node.create_publisher(VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    _slow_turn(ros, stand_in, node, "utt-slow-1")
    # The command is complete before the reply: it is published while the reply still streams.
    [cmd] = commands.wait_for(1, timeout=20)
    assert (cmd.action, cmd.utterance_id) == ("go_to", "utt-slow-1")
    replies.wait_for(3, timeout=20, where=lambda c: c.utterance_id == "utt-slow-1")
    ros.wait_for_subscribers(ev_pub)
    ev_pub.publish(VoiceEvent(type=VoiceEvent.BARGE_IN, source="/tts", utterance_id="utt-slow-1",
                              text="Going to the", detail="user speech"))
    last = replies.wait_for(1, timeout=10, where=lambda c: c.final)[0]
    assert last.cancelled and last.utterance_id == "utt-slow-1"
    chunks = [c for c in replies.snapshot() if c.utterance_id == "utt-slow-1"]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert len("".join(c.text for c in chunks)) < len(GOOD["reply"]) + 600  # stopped early
    cancelled = events.wait_for(1, timeout=10, where=lambda e: e.type == VoiceEvent.CANCELLED)
    assert cancelled[0].utterance_id == "utt-slow-1"
    wait_until(lambda: stand_in.disconnects >= 1, 15, what="the server seeing the cancel")
    # The next request refers back, so it is answered with the interrupted turn in its history.
    ok = ros.call(node.create_client(ParseCommand, C.PARSE.name),
                  ParseCommand.Request(text="and now get yourself into the kitchen area",
                                       use_history=True), timeout=30)
    assert ok.success
    history = stand_in.requests[-1]["messages"]
    assistant = [m["content"] for m in history if m["role"] == "assistant"]
    assert any("Going to the [the user interrupted me here]" in a for a in assistant), assistant


def test_stop_fast_path_is_published_while_the_model_is_busy(ros, stand_in, remote_parser):
    node, _client, commands, replies, _events = _wire(ros)
    pub = _slow_turn(ros, stand_in, node, "utt-slow-2")
    commands.wait_for(1, timeout=20)
    replies.wait_for(2, timeout=20, where=lambda c: c.utterance_id == "utt-slow-2")
    requests_before = len(stand_in.requests)
    pub.publish(Transcript(utterance_id="utt-stop", text="Stop!", is_final=True))
    stop = commands.wait_for(1, timeout=5, where=lambda c: c.action == "stop")[0]
    assert (stop.origin, stop.confidence, stop.utterance_id) == ("fast_path", 1.0, "utt-stop")
    assert stop.arguments_json == "{}"
    # The running generation is cancelled, the model was never asked about "stop".
    last = replies.wait_for(1, timeout=10, where=lambda c: c.final and
                            c.utterance_id == "utt-slow-2")[0]
    assert last.cancelled
    said = replies.wait_for(1, timeout=5, where=lambda c: c.utterance_id == "utt-stop")[0]
    assert said.text == "Stopping." and said.final
    assert len(stand_in.requests) == requests_before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_openai_compatible_server_with_smollm2(ros, procs):
    """llama-cpp-python's OpenAI-compatible server with the packaged SmolLM2 (a real model)."""
    import sys
    port = _free_port()
    procs.start(NodeProcess([sys.executable, "-m", "llama_cpp.server", "--model",
                             str(resolve_llm()), "--host", "127.0.0.1", "--port", str(port),
                             "--n_threads", "1", "--n_ctx", "2048"],
                            label="llama_server", log_dir=procs.log_dir,
                            ready_pattern="Uvicorn running"), ready_timeout=120)
    # auto: json_schema first; this server only takes json_object+schema, so it falls back.
    procs.start(NodeProcess.node(
        "command_parser", log_dir=procs.log_dir,
        params={"backend": "openai", "server_url": f"http://127.0.0.1:{port}/v1",
                "templates": False,  # every request goes to the server
                "response_format": "auto", "generation_timeout_s": 170.0,
                "request_timeout": 200.0,
                "server_timeout": 170.0}), ready_timeout=60)
    node = ros.node("real_server_test")
    client = node.create_client(ParseCommand, C.PARSE.name)
    res = ros.call(client, ParseCommand.Request(text="go to the kitchen"), timeout=180)
    assert res.success, res.message
    assert res.command.action == "go_to"
    assert json.loads(res.command.arguments_json) == {"place": "kitchen"}
    assert res.command.origin.startswith("llm:openai:http://127.0.0.1")
    assert res.reply


def test_a_streamed_reply_is_spoken_while_written_and_a_barge_in_cancels_it(ros, stand_in,
                                                                            remote_parser, procs):
    """command_parser and tts as real processes: the model's reply (streamed by the stand-in,
    slowly) is spoken from its first sentence while the rest is still being written; the
    user talking (SPEECH_STARTED, as the asr publishes it) makes the tts node barge in, and its
    BARGE_IN cancels the generation in the parser."""
    procs.start(NodeProcess.node("tts", log_dir=procs.log_dir,
                                 params={"play_on_device": False, "barge_in_min_speech": 0.2}))
    node, _client, commands, replies, events = _wire(ros)
    ev_pub = node.create_publisher(VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    ros.wait_for_subscribers(ev_pub)
    wait_until(lambda: node.count_subscribers(C.REPLY.name) >= 2, 30,
               what="the tts node's voice/reply subscription")

    def of(kind, source, uid="utt-speak"):
        return [e for e in events.snapshot()
                if e.type == kind and e.source == source and e.utterance_id == uid]
    # The parser and the tts must have matched on voice/reply before the slow turn, or its first
    # sentence goes out before they have (discovery is per pair of processes: our node seeing
    # the tts subscription proves nothing about the parser; CI once lost chunks 0-8 that way).
    # A first turn the tts speaks proves it.
    warm = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    ros.wait_for_subscribers(warm)

    def warm_turn():
        if not of(VoiceEvent.SPEAKING_STARTED, "/tts", "utt-warm"):
            warm.publish(Transcript(utterance_id="utt-warm", text="go to the kitchen",
                                    is_final=True))
        return of(VoiceEvent.SPEAKING_STOPPED, "/tts", "utt-warm")
    wait_until(warm_turn, 60, interval=3.0, what="a first reply spoken by the tts node")
    _slow_turn(ros, stand_in, node, "utt-speak")

    started = wait_until(lambda: of(VoiceEvent.SPEAKING_STARTED, "/tts"), 30,
                         what="the robot to start speaking")[0]
    assert started.utterance_id == "utt-speak" and started.text == "Going to the kitchen."
    assert not [c for c in replies.snapshot() if c.final and c.utterance_id == "utt-speak"], \
        "spoken only after the reply ended"
    # The user talks over the robot: the tts node decides the barge-in, the parser cancels.
    now = node.get_clock().now().nanoseconds
    user = VoiceEvent(type=VoiceEvent.SPEECH_STARTED, source="/asr", utterance_id="user-1",
                      value=0.1)
    user.header.stamp.sec, user.header.stamp.nanosec = divmod(now, 1_000_000_000)
    ev_pub.publish(user)
    barge = wait_until(lambda: of(VoiceEvent.BARGE_IN, "/tts"), 10, what="BARGE_IN")[0]
    assert barge.utterance_id == "utt-speak"
    last = replies.wait_for(1, timeout=10,
                            where=lambda c: c.final and c.utterance_id == "utt-speak")[0]
    assert last.cancelled and last.utterance_id == "utt-speak"
    wait_until(lambda: of(VoiceEvent.CANCELLED, "/command_parser"), 10, what="CANCELLED")
    written = "".join(c.text for c in replies.snapshot() if c.utterance_id == "utt-speak")
    assert len(written) < len("Going to the kitchen. " + "La " * 200)  # generation stopped
