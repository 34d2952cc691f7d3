"""turn_metrics node: assembles per-turn stage latencies from the voice topics and publishes one
locara_ros/TurnMetrics per turn on voice/metrics (see locara_ros.core.metrics for the stages and
what clock offsets between machines do to them).
"""
from __future__ import annotations

from locara_ros.core import contract as C
from locara_ros.core.metrics import TurnTracker
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, TurnMetrics, VoiceEvent
from locara_ros.nodes.common import (
    announce_ready,
    declare,
    ns_to_stamp,
    publisher,
    run_node,
    stamp_to_ns,
    subscription,
)
from locara_ros.nodes.managed import GuardedNode


class TurnMetricsNode(GuardedNode):
    def __init__(self) -> None:
        super().__init__("turn_metrics")
        timeout = declare(self, "turn_timeout", 30.0,
                          "seconds after which an unfinished turn is reported with the stages "
                          "it reached")
        self.tracker = TurnTracker(timeout=float(timeout))
        self.pub = publisher(self, C.METRICS, TurnMetrics)
        subscription(self, C.TRANSCRIPT, Transcript, self.on_transcript)
        subscription(self, C.VOICE_EVENTS, VoiceEvent, self.on_event)
        subscription(self, C.REPLY, ReplyChunk, self.on_reply)
        subscription(self, C.COMMAND, RobotCommand, self.on_command)
        self.create_timer(0.2, self.flush)
        announce_ready(self, "turn_metrics")

    # All callbacks are cheap bookkeeping on one (default, mutually exclusive) callback group.
    def on_transcript(self, msg: Transcript) -> None:
        if not msg.is_final:
            return
        uid = msg.utterance_id
        self.tracker.speech(uid, stamp_to_ns(msg.speech_start), stamp_to_ns(msg.speech_end))
        self.tracker.stage(uid, "transcript", stamp_to_ns(msg.header.stamp))
        if not msg.text.strip():  # nothing was said: nothing will follow
            self.tracker.reply_finished(uid)

    def on_event(self, msg: VoiceEvent) -> None:
        t = stamp_to_ns(msg.header.stamp)
        if msg.type == VoiceEvent.SPEECH_STOPPED:
            self.tracker.stage(msg.utterance_id, "vad_end", t)
        elif msg.type == VoiceEvent.SPEAKING_STARTED:
            self.tracker.stage(msg.utterance_id, "first_audio", t)
        elif msg.type == VoiceEvent.COMMAND_READY:
            self.tracker.stage(msg.utterance_id, "command_ready", t)
        elif msg.type in (VoiceEvent.SPEAKING_STOPPED, VoiceEvent.BARGE_IN):
            self.tracker.speaking_finished(msg.utterance_id)

    def on_reply(self, msg: ReplyChunk) -> None:
        if msg.text:
            self.tracker.reply_text(msg.utterance_id, stamp_to_ns(msg.header.stamp))
        if msg.final or msg.cancelled:
            self.tracker.reply_finished(msg.utterance_id)

    def on_command(self, msg: RobotCommand) -> None:
        self.tracker.stage(msg.utterance_id, "command", stamp_to_ns(msg.header.stamp))

    def flush(self) -> None:
        for turn in self.tracker.pop_complete():
            out = TurnMetrics(utterance_id=turn.utterance_id,
                              vad_end_ms=turn.latency_ms("vad_end"),
                              transcript_ms=turn.latency_ms("transcript"),
                              first_reply_token_ms=turn.latency_ms("first_reply_token"),
                              command_ms=turn.latency_ms("command"),
                              command_ready_ms=turn.latency_ms("command_ready", float("nan")),
                              first_audio_ms=turn.latency_ms("first_audio"),
                              speech_duration=turn.speech_duration)
            out.header.stamp = self.get_clock().now().to_msg()
            out.speech_start = ns_to_stamp(turn.speech_start_ns)
            out.speech_end = ns_to_stamp(turn.speech_end_ns)
            self.pub.publish(out)


def main(args=None) -> int:
    return run_node(TurnMetricsNode, args, num_threads=1)
