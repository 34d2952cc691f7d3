"""Failover: a node with a remote backend and a local fallback keeps working when the server
goes away, says so on voice/events and /diagnostics, and switches back when it returns.

The server is a REAL OpenAI-compatible server from PyPI (faster-whisper-server for asr), in its
own process group. It is killed mid-conversation (SIGKILL: connections are refused, as when the
server machine goes down) and later restarted on the same port. A server that stops answering
without refusing (a Wi-Fi drop) is detected after `server_timeout` the same way (core test:
test_failover_core.py).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from support import servers
from locara_ros.testing.feed import MicFeeder
from locara_ros.testing.speech import silence, synthesize

from locara_ros.core import contract as C
from locara_ros.core.transcripts import normalize_text
from locara_ros.msg import Transcript, VoiceEvent
from locara_ros.srv import ParseCommand
from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import NodeProcess

pytestmark = pytest.mark.slow

PHRASES = ["go back to the charging station", "turn left and stop", "open the gripper"]


def utterance(text: str) -> np.ndarray:
    return np.concatenate([silence(0.5), synthesize(text), silence(1.0)])


def test_asr_fails_over_to_local_whisper_and_back(ros, procs):
    server, url = servers.whisper_server(procs.log_dir)
    procs.add(server)
    asr = procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, params={
        "backend": "openai", "server_url": url, "fallback": "faster_whisper",
        "model": "tiny.en", "language": "en", "partial_interval": 0.0,
        "server_timeout": 20.0, "retry_interval": 1.0}), ready_timeout=90)
    listen = ros.node("failover_listener")
    finals = ros.collect(listen, Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    events = ros.collect(listen, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    diags = ros.collect(listen, DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    feeder = MicFeeder(ros)
    feeder.wait_connected()
    ros.wait_for_publishers(listen, C.TRANSCRIPT.name)

    def switches():
        return [e for e in events.snapshot() if e.type == VoiceEvent.BACKEND_CHANGED]

    # 1. Server up: the remote backend answers.
    feeder.play(utterance(PHRASES[0]))
    [first] = finals.wait_for(1, timeout=60)
    assert normalize_text(first.text) == normalize_text(PHRASES[0])
    assert first.backend == f"openai:{url}"

    # 2. The server dies mid-conversation: the utterance in flight is retried on the local
    #    model, nothing is lost, and the switch is announced on voice/events and /diagnostics.
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server.kill()
    feeder.play(utterance(PHRASES[1]))
    t_end = time.monotonic()
    second = finals.wait_for(2, timeout=60)[1]
    assert normalize_text(second.text) == normalize_text(PHRASES[1])
    assert second.backend.startswith("faster_whisper")
    [down] = wait_until(switches, 10, what="BACKEND_CHANGED to the fallback")
    assert down.source.endswith("asr") and "fallback" in down.detail
    wait_until(lambda: any(s.level == DiagnosticStatus.WARN
                           for d in diags.snapshot() for s in d.status), 10,
               what="a WARN diagnostic")
    print(f"\nfailover: final transcript from the fallback {time.monotonic() - t_end:.2f} s "
          "after the audio ended")

    # 3. The server comes back: the node switches back by itself.
    restarted, _ = servers.whisper_server(procs.log_dir, port=port, label="fws-restarted")
    procs.add(restarted)
    t_up = time.monotonic()
    back = wait_until(lambda: len(switches()) >= 2 and switches(), 30,
                      what="BACKEND_CHANGED back to the server")[1]
    print(f"recovery: back on the server {time.monotonic() - t_up:.2f} s after it returned")
    assert back.text == f"openai:{url}" and "primary" in back.detail
    feeder.play(utterance(PHRASES[2]))
    third = finals.wait_for(3, timeout=60)[2]
    assert normalize_text(third.text) == normalize_text(PHRASES[2])
    assert third.backend == f"openai:{url}"
    assert asr.alive


def test_command_parser_fails_over_to_local_llm_and_back(ros, procs):
    """The parser's remote chat server (llama-cpp-python's OpenAI-compatible server with the
    packaged SmolLM2) dies mid-conversation: requests keep being answered by the local GGUF."""
    server, url = servers.llama_server(procs.log_dir)
    procs.add(server)
    procs.start(NodeProcess.node("command_parser", log_dir=procs.log_dir, params={
    # the old names (n_threads, request_timeout_s, service_timeout_s) on purpose: they still work
        "backend": "openai", "server_url": url, "fallback": "llama_cpp", "n_threads": 1,
        "templates": False,  # every request goes to a model: the one that answers is the point
        "request_timeout_s": 60.0, "generation_timeout_s": 90.0, "retry_interval": 1.0}),
        ready_timeout=180)
    node = ros.node("parser_failover_test")
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    client = node.create_client(ParseCommand, C.PARSE.name)

    def parse(text):
        return ros.call(client, ParseCommand.Request(text=text, use_history=False), timeout=180)

    def switches():
        return [e for e in events.snapshot() if e.type == VoiceEvent.BACKEND_CHANGED]

    first = parse("go to the kitchen")
    assert first.success and first.command.origin == f"llm:openai:{url}", first
    assert first.command.action == "go_to"

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server.kill()
    second = parse("go to the kitchen")
    assert second.success, second.message
    assert second.command.origin.startswith("llm:llama_cpp:")
    assert second.command.action == "go_to"  # same model, same answer: nothing lost
    [down] = wait_until(switches, 10, what="BACKEND_CHANGED to the fallback")
    assert "fallback" in down.detail

    restarted, _ = servers.llama_server(procs.log_dir, port=port, label="llama-restarted")
    procs.add(restarted)
    wait_until(lambda: len(switches()) >= 2, 30, what="BACKEND_CHANGED back to the server")
    third = parse("go to the kitchen")
    assert third.success and third.command.origin == f"llm:openai:{url}"


def _parser_behind_relay(ros, procs, relay, **params):
    procs.start(NodeProcess.node("command_parser", log_dir=procs.log_dir, params={
        "backend": "openai", "server_url": relay.url, "fallback": "llama_cpp", "n_threads": 1,
        "templates": False, "retry_interval": 1.0, "generation_timeout_s": 90.0,
        "service_timeout_s": 120.0, **params}), ready_timeout=180)
    node = ros.node("parser_relay_test")
    events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    client = node.create_client(ParseCommand, C.PARSE.name)

    def parse(text):
        return ros.call(client, ParseCommand.Request(text=text, use_history=False), timeout=150)
    return parse, events


def test_a_server_killed_mid_answer_loses_no_request(ros, procs):
    """The real server is SIGKILLed while it streams its answer: the request in flight is
    retried on the local model and answered, and the switch is announced."""
    import signal
    from support.proxy import Relay
    server, url = servers.llama_server(procs.log_dir)
    procs.add(server)
    relay = Relay(int(url.rsplit(":", 1)[1].split("/")[0]))
    parse, events = _parser_behind_relay(ros, procs, relay, request_timeout_s=60.0)
    first = parse("go to the kitchen")
    assert first.success and first.command.origin == f"llm:openai:{relay.url}", first
    relay.arm(lambda: os.killpg(server.pid, signal.SIGKILL))
    second = parse("go to the kitchen")
    assert second.success, second.message
    assert second.command.origin.startswith("llm:llama_cpp:"), second.command.origin
    assert second.command.action == "go_to"
    [down] = wait_until(lambda: [e for e in events.snapshot()
                                 if e.type == VoiceEvent.BACKEND_CHANGED], 10,
                        what="BACKEND_CHANGED")
    assert "fallback" in down.detail and "closed before the end" in down.detail
    relay.close()


def test_a_server_that_stops_answering_mid_answer_loses_no_request(ros, procs):
    """The real server is SIGSTOPped while it streams (a hung process, a Wi-Fi drop): after
    request_timeout_s of silence the request is answered by the local model."""
    import signal
    from support.proxy import Relay
    server, url = servers.llama_server(procs.log_dir)
    procs.add(server)
    relay = Relay(int(url.rsplit(":", 1)[1].split("/")[0]))
    parse, events = _parser_behind_relay(ros, procs, relay, request_timeout_s=4.0)
    # The server's first answer (a cold prompt cache) may itself take longer than 4 s: then it
    # is answered by the fallback, and the node returns to the server once it answers probes.
    wait_until(lambda: parse("go to the kitchen").command.origin == f"llm:openai:{relay.url}",
               120, interval=1.0, what="an answer from the warm server")
    events.clear()
    relay.arm(lambda: os.killpg(server.pid, signal.SIGSTOP))
    try:
        t0 = time.monotonic()
        second = parse("go to the kitchen")
        waited = time.monotonic() - t0
        assert second.success, second.message
        assert second.command.origin.startswith("llm:llama_cpp:")
        assert second.command.action == "go_to"
        assert wait_until(lambda: [e for e in events.snapshot()
                                   if e.type == VoiceEvent.BACKEND_CHANGED], 10,
                          what="BACKEND_CHANGED")
        print(f"\nhung server: answered by the fallback {waited:.1f} s after the request")
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        relay.close()


def test_the_accepted_response_format_is_remembered(ros, procs):
    """llama-cpp-python's server refuses json_schema (HTTP 500) and takes json_object: the
    first request tries both, every later one goes straight to json_object."""
    from support.proxy import Relay
    server, url = servers.llama_server(procs.log_dir)
    procs.add(server)
    relay = Relay(int(url.rsplit(":", 1)[1].split("/")[0]))
    parse, _events = _parser_behind_relay(ros, procs, relay, request_timeout_s=60.0,
                                          response_format="auto")

    def formats() -> list[str]:
        out = []
        for raw in relay.requests:
            body = raw.split(b"\r\n\r\n", 1)[-1]
            for kind in (b'"json_schema"', b'"json_object"'):
                if b'"response_format"' in body and kind in body:
                    out.append(kind.decode().strip('"'))
                    break
        return out
    assert parse("go to the kitchen").success
    first = formats()
    assert first == ["json_schema", "json_object"], first
    assert parse("turn left").success and parse("pick up the cup").success
    assert formats()[len(first):] == ["json_object", "json_object"], formats()
    relay.close()
