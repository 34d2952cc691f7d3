"""voice/metrics: the turn_metrics node assembles stage latencies from the stamps of the stages."""
from __future__ import annotations

import pytest

from locara_ros.core import contract as C
from locara_ros.core.metrics import TurnTracker
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, TurnMetrics, VoiceEvent
from locara_ros.nodes.common import (
    EVENTS_QOS,
    RELIABLE_QOS,
    STREAM_QOS,
    ns_to_stamp,
    stamp_to_ns,
)
from locara_ros.testing.processes import NodeProcess

S = 1_000_000_000
MS = 1_000_000


def test_tracker_completes_a_turn_only_when_the_robot_finished_speaking():
    t = TurnTracker(timeout=30)
    t.speech("u1", 10 * S, 12 * S)
    t.stage("u1", "transcript", 12 * S + 300 * MS)
    t.reply_text("u1", 12 * S + 500 * MS)
    t.reply_text("u1", 12 * S + 900 * MS)  # later tokens do not move the first-token stage
    t.reply_finished("u1")
    assert t.pop_complete() == []  # the reply had text: wait for speech to finish
    t.stage("u1", "first_audio", 12 * S + 700 * MS)
    t.speaking_finished("u1")
    [turn] = t.pop_complete()
    assert turn.latency_ms("transcript") == pytest.approx(300)
    assert turn.latency_ms("first_reply_token") == pytest.approx(500)
    assert turn.latency_ms("first_audio") == pytest.approx(700)
    assert turn.latency_ms("command") == -1
    assert turn.speech_duration == pytest.approx(2.0)


def test_tracker_times_out_and_stays_bounded():
    t = TurnTracker(timeout=5, max_turns=3)
    for i in range(5):
        t.speech(f"u{i}", 1 * S, 2 * S)
    assert len(t._turns) == 3
    now = min(turn.created for turn in t._turns.values()) + 6
    assert len(t.pop_complete(now=now)) == 3


def test_turn_metrics_node_publishes_stage_latencies(ros, procs):
    procs.start(NodeProcess.node("turn_metrics", log_dir=procs.log_dir,
                                 params={"turn_timeout": 10.0}))
    node = ros.node("metrics_test")
    transcripts = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    events = node.create_publisher(VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    replies = node.create_publisher(ReplyChunk, C.REPLY.name, STREAM_QOS)
    commands = node.create_publisher(RobotCommand, C.COMMAND.name, RELIABLE_QOS)
    metrics = ros.collect(node, TurnMetrics, C.METRICS.name, RELIABLE_QOS)
    for pub in (transcripts, events, replies, commands):
        ros.wait_for_subscribers(pub)
    ros.wait_for_publishers(node, C.METRICS.name)

    end = 100 * S
    ev = VoiceEvent(type=VoiceEvent.SPEECH_STOPPED, utterance_id="u7")
    ev.header.stamp = ns_to_stamp(end + 250 * MS)
    events.publish(ev)
    tr = Transcript(utterance_id="u7", text="go to the kitchen", is_final=True)
    tr.speech_start, tr.speech_end = ns_to_stamp(end - 1500 * MS), ns_to_stamp(end)
    tr.header.stamp = ns_to_stamp(end + 400 * MS)
    transcripts.publish(tr)
    cmd = RobotCommand(utterance_id="u7", action="go_to", arguments_json='{"place": "kitchen"}')
    cmd.header.stamp = ns_to_stamp(end + 600 * MS)
    commands.publish(cmd)
    chunks = [("Going ", 650, False), ("to the kitchen.", 700, False), ("", 710, True)]
    for seq, (text, dt, final) in enumerate(chunks):
        chunk = ReplyChunk(utterance_id="u7", seq=seq, text=text, final=final)
        chunk.header.stamp = ns_to_stamp(end + dt * MS)
        replies.publish(chunk)
    started = VoiceEvent(type=VoiceEvent.SPEAKING_STARTED, utterance_id="u7")
    started.header.stamp = ns_to_stamp(end + 800 * MS)
    events.publish(started)
    stopped = VoiceEvent(type=VoiceEvent.SPEAKING_STOPPED, utterance_id="u7")
    stopped.header.stamp = ns_to_stamp(end + 2500 * MS)
    events.publish(stopped)

    [m] = metrics.wait_for(1, timeout=10)
    assert m.utterance_id == "u7" and stamp_to_ns(m.speech_end) == end
    assert m.vad_end_ms == pytest.approx(250)
    assert m.transcript_ms == pytest.approx(400)
    assert m.command_ms == pytest.approx(600)
    assert m.first_reply_token_ms == pytest.approx(650)
    assert m.first_audio_ms == pytest.approx(800)
    assert m.speech_duration == pytest.approx(1.5)
