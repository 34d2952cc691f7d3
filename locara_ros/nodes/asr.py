"""asr node: VAD + streaming speech recognition.

audio/mic (AudioDataStamped) or audio/mic/raw (AudioData), in the format audio/mic/info says
  -> subscription callbacks decode, mix to mono, resample to 16 kHz and enqueue (bounded)
  -> VAD thread: [echo guard] -> Silero VAD state machine -> SPEECH_STARTED / SPEECH_STOPPED on
     voice/events the moment they are decided (it never waits for the recognizer)
  -> recognizer thread: growing hypotheses on voice/transcript/partial while the user speaks,
     one final on voice/transcript per utterance; long utterances in overlapping chunks.

While the VAD hears silence after speech, the recognizer already transcribes the utterance up to
the last speech sample (plus speech_pad_ms); when the silence lasts long enough to end the
utterance, that result is the final, so the final follows the end-of-speech decision at once.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from locara_ros.core import contract as C
from locara_ros.core.asr_pipeline import AsrPipeline, priming
from locara_ros.core.audio import AudioFormatError
from locara_ros.core.backends import factory
from locara_ros.core.backends.asr import Transcriber, TranscriptionResult
from locara_ros.core.command_schema import load_schema
from locara_ros.core.mic_input import MicDecoder, VadFeed, describe, parse_info
from locara_ros.core.recognizer import Event, Failed, Hypothesis, Started, Stopped, Utterance
from locara_ros.core.settings.asr import AsrSettings
from locara_ros.msg import Transcript, VoiceEvent
from locara_ros.nodes.common import (
    declare_settings,
    default_schema_path,
    ns_to_stamp,
    publisher,
    run_node,
    stamp_to_ns,
    subscription,
    voice_event,
)
from locara_ros.nodes.failover import backend_name, served_by, with_failover
from locara_ros.nodes.managed import ManagedNode


class AsrNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("asr")
        self.cfg = declare_settings(self, AsrSettings)
        self.transcriber: Transcriber | None = None
        self.pipeline: AsrPipeline | None = None
        self.mic: MicDecoder | None = None
        self.feed: VadFeed | None = None

    def setup(self) -> tuple[str, float]:
        """configure: load Whisper and the VAD, subscribe the mic, start the VAD and recognizer
        threads."""
        cfg = self.cfg
        path = cfg.schema_path or default_schema_path()
        schema = load_schema(path)  # SchemaError names file and line
        primed = priming(cfg, schema)
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        t0 = time.monotonic()
        made = factory.transcriber(cfg, primed.hotwords)
        self.transcriber = made if not isinstance(made, factory.Remote) else with_failover(
            self, self.events_pub, "asr", made.backend, made.make_fallback, probe=made.probe,
            retry_interval=cfg.retry_interval)
        self.pipeline = pipe = AsrPipeline(
            cfg, schema, self.transcriber, primed.prompt, self._on_recognizer,
            now_ns=lambda: self.get_clock().now().nanoseconds,
            id_prefix=f"{self.get_name()}-{secrets.token_hex(2)}")
        pipe.warm()
        load_seconds = time.monotonic() - t0
        self.mic, self.feed = pipe.mic, pipe.feed
        self._heard = False  # the first chunk is logged (the microphone is connected)
        self.final_pub = publisher(self, C.TRANSCRIPT, Transcript)
        self.partial_pub = publisher(self, C.TRANSCRIPT_PARTIAL, Transcript)
        # The microphone has a callback group of its own: its chunks never wait behind the echo
        # reference, events or parameter calls (the audio state is touched only here).
        mic = MutuallyExclusiveCallbackGroup()
        # formats and the robot's speaking state are heard in every lifecycle state: a latched
        # format arrives once, when configure subscribes (the node is still inactive then)
        subscription(self, C.AUDIO_MIC_INFO, AudioInfo, self._on_info, callback_group=mic,
                     gated=False)
        subscription(self, C.AUDIO_MIC, AudioDataStamped, self._on_stamped, callback_group=mic)
        subscription(self, C.AUDIO_MIC_RAW, AudioData, self._on_raw,
                     name=cfg.audio_data_topic, callback_group=mic)
        if pipe.echo is not None:
            subscription(self, C.AUDIO_TTS_INFO, AudioInfo, self._on_tts_info, gated=False)
            subscription(self, C.AUDIO_TTS, AudioDataStamped, self._on_tts)
            subscription(self, C.VOICE_EVENTS, VoiceEvent, self._on_event, gated=False)
        pipe.start()
        return (f"asr ({backend_name(self.transcriber)}, VAD {pipe.vad.path.name}, echo "
                f"{cfg.echo_mode})", load_seconds)

    # ------------------------------------------------------------------ audio in (callbacks)
    def _on_info(self, msg: AudioInfo) -> None:
        if self.mic is None:  # ungated: may arrive while cleanup tears the pipeline down
            return
        r = self.mic.set_info(msg.coding_format, msg.sample_rate, msg.channels,
                              msg.sample_format)
        if r.changed and r.error:  # (rclpy: one severity per call site)
            self.get_logger().error(r.message)
        elif r.changed:
            self.get_logger().info(r.message)
        if r.restart:
            self.feed.restart()

    def _on_stamped(self, msg: AudioDataStamped) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self._on_audio(msg.audio.data, stamp or self.get_clock().now().nanoseconds,
                       msg.header.frame_id)

    def _on_raw(self, msg: AudioData) -> None:
        self._on_audio(msg.data, self.get_clock().now().nanoseconds, "")

    def _on_audio(self, data: Any, stamp_ns: int, frame_id: str) -> None:
        try:
            pieces = self.mic.decode(bytes(data), stamp_ns)
        except AudioFormatError as e:  # two call sites: rclpy throttles each on its own
            if self.mic.fmt is None:
                self.get_logger().error(str(e), throttle_duration_sec=5.0)  # no usable format
            else:
                self.get_logger().error(str(e), throttle_duration_sec=2.0)  # a malformed chunk
            return
        if not self._heard:
            self._heard = True
            self.get_logger().info(f"first audio from the microphone ({describe(self.mic.fmt)})")
        for mono, t_ns in pieces:
            self.feed.put(mono, t_ns, frame_id or self.cfg.frame_id)

    # ------------------------------------------------------------------ echo hook
    def _on_tts_info(self, msg: AudioInfo) -> None:
        if self.feed is None:  # ungated, as _on_info
            return
        try:
            self.feed.set_reference_format(parse_info("", msg.sample_rate, msg.channels,
                                                      msg.sample_format))
        except AudioFormatError as e:
            self.get_logger().error(f"audio/tts/info: {e}")

    def _on_tts(self, msg: AudioDataStamped) -> None:
        try:
            self.feed.reference(bytes(msg.audio.data), stamp_to_ns(msg.header.stamp)
                                or self.get_clock().now().nanoseconds)
        except AudioFormatError as e:
            self.get_logger().error(f"audio/tts chunk dropped: {e}", throttle_duration_sec=5.0)

    def _on_event(self, msg: VoiceEvent) -> None:
        speaking = (VoiceEvent.SPEAKING_STARTED, VoiceEvent.SPEAKING_STOPPED)
        if self.feed is not None and msg.type in speaking:
            summary = self.feed.speaking(msg.type == VoiceEvent.SPEAKING_STARTED,
                                         stamp_to_ns(msg.header.stamp))
            if msg.type == VoiceEvent.SPEAKING_STOPPED:
                self.get_logger().info(f"robot stopped speaking; {summary}")

    # ------------------------------------------------------------------ recognizer events
    def _on_recognizer(self, ev: Event) -> None:
        utt = ev.utterance
        if isinstance(ev, Started):
            # stamp: when it was decided; value: seconds of speech heard by then, so
            # stamp - value is the speech onset (the tts node times barge-in from it)
            self.events_pub.publish(voice_event(
                self, VoiceEvent.SPEECH_STARTED, utterance_id=utt.id, stamp_ns=ev.decided_ns,
                value=max(0.0, (ev.decided_ns - utt.speech_start_ns) / 1e9)))
        elif isinstance(ev, Stopped):
            stop = ev.stop
            detail = stop.reason + (f": {stop.turn}" if stop.turn else "") + (
                " (too short, discarded)" if stop.discarded else "")
            self.events_pub.publish(voice_event(
                self, VoiceEvent.SPEECH_STOPPED, utterance_id=utt.id, value=stop.duration,
                detail=detail, stamp_ns=stop.decided_ns))
            if stop.discarded:  # say why its final will be empty
                self.get_logger().info(
                    f"[{utt.id}] discarded: {stop.duration * 1000:.0f} ms of speech, less than "
                    f"vad_min_speech_ms ({stop.reason})")
        elif isinstance(ev, Failed):
            if not ev.final:
                self.get_logger().error(ev.error, throttle_duration_sec=5.0)
                return
            self.get_logger().error(f"transcription of {utt.id} failed: {ev.error}")
            self.events_pub.publish(voice_event(
                self, VoiceEvent.ERROR, utterance_id=utt.id,
                detail=f"{backend_name(self.transcriber)}: {ev.error}"[:500]))
        elif isinstance(ev, Hypothesis):
            r = ev.result
            if not ev.final:
                self.partial_pub.publish(self._transcript(utt, r, ev.spent, final=False))
                return
            self.final_pub.publish(self._transcript(utt, r, ev.spent, final=True))
            self.get_logger().info(
                f"[{utt.id}] \"{r.text}\" ({r.duration:.2f} s audio, "
                f"{ev.spent * 1000:.0f} ms inference, {utt.partials} partial(s))")

    def _transcript(self, utt: Utterance, r: TranscriptionResult, spent: float, *,
                    final: bool) -> Transcript:
        msg = Transcript(utterance_id=utt.id, text=r.text, is_final=final,
                         confidence=float(r.confidence), language=r.language or "",
                         audio_duration=float(r.duration), inference_time=float(spent),
                         backend=served_by(self.transcriber))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = utt.frame_id
        msg.speech_start = ns_to_stamp(utt.speech_start_ns)
        if final and utt.stop is not None:
            msg.speech_end = ns_to_stamp(utt.stop.speech_end_ns)
        return msg

    # ------------------------------------------------------------------ shutdown
    def pause(self) -> None:
        """deactivate: end the utterance under way (its final comes out now, not after the
        stream timeout) and start over on activate."""
        if self.pipeline is not None:
            self.pipeline.feed.restart("deactivated")

    def teardown(self) -> None:
        """cleanup / shutdown: stop the VAD and recognizer threads, free the models."""
        if self.pipeline is not None:
            self.pipeline.close()  # and the transcriber
        elif self.transcriber is not None:  # configure failed after loading it
            self.transcriber.close()
        self.pipeline = self.transcriber = self.feed = self.mic = None

def main(args=None) -> int:
    return run_node(AsrNode, args)
