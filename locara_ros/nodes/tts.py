"""tts node: streamed speech output with barge-in (thin adapter over locara_ros.core.playback).

Subscribes voice/say (whole texts) and voice/reply (streamed chunks); speaks sentence by sentence
through a Piper voice; plays on a PortAudio device and/or publishes audio/tts (+ latched
audio/tts/info) paced in real time; reports SPEAKING_STARTED / SPEAKING_STOPPED / BARGE_IN on
voice/events; voice/stop stops at once. See the README (tts).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from std_msgs.msg import String
from std_srvs.srv import Trigger

from locara_ros.core import contract as C
from locara_ros.core.audio import AudioFormat, encode_s16le
from locara_ros.core.backends.tts import PiperSynthesizer
from locara_ros.core.memory import trim_heap
from locara_ros.core.playback import (
    BargeInMonitor,
    Speaker,
    SpeakerGate,
    SpeakerListener,
    StopKind,
    StopReport,
    apply_setting,
    open_sinks,
)
from locara_ros.core.settings.tts import TtsSettings
from locara_ros.msg import ReplyChunk, VoiceEvent
from locara_ros.nodes.common import (
    declare_settings,
    ns_to_stamp,
    publisher,
    run_node,
    service,
    stamp_to_ns,
    subscription,
    voice_event,
)
from locara_ros.nodes.managed import ManagedNode

# Parameters that may change while the node runs (everything else needs a restart).
_DYNAMIC = TtsSettings.dynamic()


class TtsNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("tts")
        self._p = p = dataclasses.asdict(declare_settings(self, TtsSettings))
        self._closing = False
        self.gate: SpeakerGate | None = None
        self.speaker: Speaker | None = None
        self.monitor = BargeInMonitor(p["barge_in_min_speech"], p["barge_in"])
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def setup(self) -> tuple[str, float]:
        """configure: load and warm the voice, open the outputs, subscribe, start playback."""
        # start-up parameters are read-only; the run-time ones are read as they are now
        p = dict(self._p, **{n: self.get_parameter(n).value for n in _DYNAMIC})
        t0 = time.monotonic()
        self.synth = PiperSynthesizer(
            p["voice"], speaker_id=None if p["speaker_id"] < 0 else p["speaker_id"],
            length_scale=p["length_scale"] or None, threads=p["threads"])
        list(self.synth.synthesize("Ready."))  # warm up onnxruntime (first run is slow)
        load_seconds = time.monotonic() - t0
        self.output_rate = int(p["output_rate"]) or self.synth.sample_rate
        self.frame_id = p["frame_id"]
        self._closing = False

        self.control_group = ReentrantCallbackGroup()  # events, barge-in timer, voice/stop
        self.data_group = MutuallyExclusiveCallbackGroup()  # say/reply keep their order
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        self.audio_pub = self.info_pub = None
        if p["publish_audio"]:
            self.audio_pub = publisher(self, C.AUDIO_TTS, AudioDataStamped)
            self.info_pub = publisher(self, C.AUDIO_TTS_INFO, AudioInfo)
            self.info_pub.publish(AudioInfo(
                channels=1, sample_rate=self.output_rate, sample_format="S16LE",
                bitrate=AudioFormat(self.output_rate, 1, "S16LE").bitrate, coding_format="wave"))
        sinks, startup_errors = open_sinks(
            self.synth.sample_rate, publish=self._publish_audio if p["publish_audio"] else None,
            publish_rate=self.output_rate, device=p["device"] if p["play_on_device"] else None,
            device_rate=p["device_rate"], peak=p["max_volume"])
        for err in startup_errors:
            self.get_logger().error(err)
        self.gate = SpeakerGate(p["speaker_enabled"], p["volume"], p["max_volume"],
                                p["max_speech_seconds"], p["speech_window_seconds"])
        self.speaker = Speaker(self.synth, sinks, gate=self.gate, listener=_Listener(self),
                               chunk_ms=p["chunk_ms"], lead_ms=p["lead_ms"],
                               max_sentence_chars=p["max_sentence_chars"],
                               max_text_chars=p["max_text_chars"],
                               reply_timeout=p["reply_timeout"])

        subscription(self, C.SAY, String, self._on_say,
                     callback_group=self.data_group)
        subscription(self, C.REPLY, ReplyChunk, self._on_reply,
                     callback_group=self.data_group)
        # user speech and spoken stops are state: heard in every lifecycle state, and voice/stop
        # always answers (there is nothing to stop while inactive: pause() stopped it)
        subscription(self, C.VOICE_EVENTS, VoiceEvent, self._on_event,
                     callback_group=self.control_group, gated=False)
        service(self, C.STOP_SPEAKING, Trigger, self._on_stop,
                callback_group=self.control_group, gated=False)
        self.create_timer(0.02, self._check_barge_in, callback_group=self.control_group)
        # the heap freed after speech goes back to the system while idle (core.memory)
        self._spoke = False
        self.create_timer(5.0, self._trim_when_idle, callback_group=self.control_group)
        for err in startup_errors:
            self.events_pub.publish(voice_event(self, VoiceEvent.ERROR, detail=err))
        outputs = ", ".join(s.name for s in sinks)
        return (f"tts ({self.synth.name}, {self.synth.sample_rate} Hz -> {outputs}, audio/tts "
                f"at {self.output_rate} Hz)", load_seconds)

    # ---------------------------------------------------------------- callbacks (enqueue only)
    def _on_say(self, msg: String) -> None:
        try:
            utt = self.speaker.say(msg.data)
            self.get_logger().info(f"say {utt}: {msg.data[:80]!r}")
        except ValueError as e:
            self._error("", f"voice/say rejected: {e}")

    def _on_reply(self, msg: ReplyChunk) -> None:
        utt = msg.utterance_id or "reply"
        if msg.cancelled:
            self.speaker.cancel(utt, "reply cancelled")
            return
        try:
            self.speaker.feed(utt, int(msg.seq), msg.text, bool(msg.final))
        except ValueError as e:
            self._error(utt, f"voice/reply rejected: {e}")

    def _on_event(self, msg: VoiceEvent) -> None:
        if msg.source == self.get_fully_qualified_name():
            return
        if msg.type == VoiceEvent.SPEECH_STARTED:
            onset = stamp_to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
            # the asr node stamps the decision and puts the speech heard by then in `value`:
            # the minimum speech duration counts from the onset
            onset -= int(max(0.0, float(msg.value)) * 1e9)
            self.monitor.speech_started(msg.utterance_id, onset)
        elif msg.type == VoiceEvent.SPEECH_STOPPED:
            self.monitor.speech_stopped(msg.utterance_id)
        elif msg.type == VoiceEvent.STOP:
            # the user said stop: silence now, drop everything queued but the stop's own reply
            report = self.speaker.stop(f"stop: {msg.text!r}", keep=msg.utterance_id)
            if report is not None:
                self.get_logger().info(f"stopped {report.utterance_id} for a spoken stop")

    def _check_barge_in(self) -> None:
        self.monitor.check(self.speaker, self.get_clock().now().nanoseconds)

    def _trim_when_idle(self) -> None:
        if self._spoke and self.speaker is not None and not self.speaker.speaking:
            self._spoke = False
            trim_heap()

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        report = self.speaker.stop("voice/stop")
        response.success = True
        response.message = (f"stopped {report.utterance_id}; spoken: {report.spoken!r}"
                            if report else "nothing was playing; queue flushed")
        return response

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        # Checked before anything is applied; a value of the wrong type or NaN is refused with
        # a reason (it must never raise here: that would take the node down).
        for prm in params:
            why = TtsSettings.runtime_refusal(prm.name, prm.value)
            if why:
                return SetParametersResult(successful=False, reason=why)
        for prm in params:  # unconfigured: the next configure reads the new values
            apply_setting(prm.name, prm.value, gate=self.gate, speaker=self.speaker,
                          monitor=self.monitor)
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- outputs (worker threads)
    def _publish_audio(self, samples, play_time: float) -> None:
        if self._closing:
            return
        offset = self.get_clock().now().nanoseconds - time.monotonic_ns()
        msg = AudioDataStamped()
        msg.header.stamp = ns_to_stamp(int(play_time * 1e9) + offset)
        msg.header.frame_id = self.frame_id
        msg.audio.data = encode_s16le(samples)
        self.audio_pub.publish(msg)

    def _ros_time(self, mono: float) -> int:
        return int(mono * 1e9) + self.get_clock().now().nanoseconds - time.monotonic_ns()

    def _error(self, utterance_id: str, detail: str) -> None:
        self.get_logger().error(detail)
        self.publish_event(voice_event(self, VoiceEvent.ERROR, utterance_id=utterance_id,
                                            detail=detail))

    def publish_event(self, msg: VoiceEvent) -> None:
        if not self._closing:
            self.events_pub.publish(msg)

    def pause(self) -> None:
        """deactivate: stop speaking and drop what is queued."""
        if self.speaker is not None:
            self.speaker.stop("deactivated", kind=StopKind.DISABLED)
        self.monitor.reset()

    def teardown(self) -> None:
        """cleanup / shutdown: stop speaking, close the outputs and the playback threads, free
        the voice."""
        self._closing = True  # no more events from the playback threads
        if self.speaker is not None:
            self.speaker.close()
        self.speaker = self.gate = self.synth = None
        self.monitor.reset()


class _Listener(SpeakerListener):
    def __init__(self, node: TtsNode) -> None:
        self.node = node

    def on_started(self, utterance_id: str, first_sentence: str, play_time: float) -> None:
        n = self.node
        n.publish_event(voice_event(n, VoiceEvent.SPEAKING_STARTED, utterance_id=utterance_id,
                                         text=first_sentence,
                                         stamp_ns=n._ros_time(play_time)))

    def on_stopped(self, report: StopReport) -> None:
        n = self.node
        n._spoke = True
        if report.kind is StopKind.BARGE_IN:
            n.get_logger().info(f"barge-in on {report.utterance_id}: spoken {report.spoken!r}")
            n.publish_event(voice_event(n, VoiceEvent.BARGE_IN,
                                             utterance_id=report.utterance_id,
                                             text=report.spoken, detail=report.reason))
        n.publish_event(voice_event(n, VoiceEvent.SPEAKING_STOPPED,
                                         utterance_id=report.utterance_id, text=report.spoken,
                                         detail=report.reason))

    def on_error(self, utterance_id: str, detail: str) -> None:
        self.node._error(utterance_id, detail)


def main(args=None) -> int:
    return run_node(TtsNode, args)


if __name__ == "__main__":
    import sys
    sys.exit(main())
