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

import os
import secrets
import time
from typing import Any

import numpy as np
from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from locara_ros.core import contract as C
from locara_ros.core.audio import AudioFormatError
from locara_ros.core.backends.asr import (
    ChatAudioTranscriber,
    FasterWhisperTranscriber,
    OpenAITranscriptionTranscriber,
    Transcriber,
    TranscriptionResult,
)
from locara_ros.core.backends.failover import Failover
from locara_ros.core.backends.openai_http import OpenAIClient, ServerConfig
from locara_ros.core.mic_input import MicDecoder, VadFeed, parse_info
from locara_ros.core.models import resolve_whisper
from locara_ros.core.recognizer import (
    Event,
    Failed,
    Hypothesis,
    RecognizerConfig,
    Started,
    Stopped,
    StreamingRecognizer,
    Utterance,
    stop_checker,
)
from locara_ros.core.vad import (
    SAMPLE_RATE,
    Segmenter,
    SileroVad,
    VadConfig,
)
from locara_ros.msg import Transcript, VoiceEvent
from locara_ros.nodes.common import (
    declare,
    ns_to_stamp,
    publisher,
    run_node,
    stamp_to_ns,
    subscription,
    voice_event,
)
from locara_ros.nodes.failover import backend_name, served_by, with_failover
from locara_ros.nodes.managed import ManagedNode

# Parameter ranges (inclusive) and allowed words; a value outside stops the node at start-up.
_LIMITS = {
    "beam_size": (1, 16), "threads": (0, 256), "server_timeout": (0.1, 3600.0),
    "retry_interval": (0.1, 3600.0), "partial_interval": (0.0, 10.0),
    "partial_min_speech_s": (0.0, 30.0),
    "chunk_seconds": (2.0, 30.0), "chunk_overlap": (0.0, 10.0), "speech_pad_ms": (0.0, 2000.0),
    "vad_threshold": (0.01, 0.99), "vad_neg_threshold": (0.0, 0.99),
    "vad_start_ms": (0.0, 2000.0), "vad_stop_ms": (32.0, 10000.0),
    "turn_end_complete_ms": (32.0, 10000.0), "turn_end_incomplete_ms": (32.0, 10000.0),
    "vad_min_speech_ms": (0.0, 10000.0), "vad_pre_roll_ms": (0.0, 5000.0),
    "max_utterance_s": (1.0, 3600.0), "stream_timeout": (0.05, 60.0),
    "input_sample_rate": (8000, 384000), "queue_size": (1, 100000),
    "stop_check_max_s": (0.0, 10.0),
}
_CHOICES = {
    "backend": ("faster_whisper", "openai", "chat_audio"),
    "prime_with_schema": ("hotwords", "prompt", "off"),
    "echo_mode": ("off", "reference", "half_duplex"),  # half_duplex: refused with its reason
    "fallback": ("", "faster_whisper"),
}


class AsrNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("asr")
        self._p = self._declare_parameters()
        self.frame_id_default = self._p["frame_id"]
        self.transcriber: Transcriber | None = None
        self.recognizer: StreamingRecognizer | None = None
        self.feed: VadFeed | None = None

    def setup(self) -> tuple[str, float]:
        """configure: load Whisper and the VAD, subscribe the mic, start the VAD and recognizer
        threads."""
        p = self._p
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        t0 = time.monotonic()
        self.transcriber = self._make_transcriber(p)
        self.vad = SileroVad(p["vad_model"])
        segmenter = Segmenter(self.vad, VadConfig(
            threshold=p["vad_threshold"], neg_threshold=p["vad_neg_threshold"],
            start_ms=p["vad_start_ms"], stop_ms=p["vad_stop_ms"],
            min_speech_ms=p["vad_min_speech_ms"], max_utterance_s=p["max_utterance_s"],
            pre_roll_ms=p["vad_pre_roll_ms"]))
        local = self.transcriber.fallback if isinstance(self.transcriber, Failover) else (
            self.transcriber)
        if isinstance(local, FasterWhisperTranscriber):  # first inference allocates: do it now
            local.transcribe(np.zeros(SAMPLE_RATE, np.float32), self.language)
        load_seconds = time.monotonic() - t0

        # Echo hook (locara_ros.core.echo, optional): cleans mic audio before VAD and ASR.
        echo = None
        if p["echo_mode"] != "off":
            from locara_ros.core.echo import EchoGuard
            echo = EchoGuard(p["echo_mode"], sample_rate=SAMPLE_RATE)
        # Audio input state (touched only by the microphone's callbacks, one at a time).
        self.mic = MicDecoder(p["input_sample_rate"])

        # Utterances: VAD thread (feed) -> recognizer thread (locara_ros.core.recognizer).
        self.recognizer = StreamingRecognizer(
            segmenter, self.transcriber, RecognizerConfig(
                partial_interval=p["partial_interval"],
                partial_min_speech_s=p["partial_min_speech_s"],
                chunk_seconds=p["chunk_seconds"], chunk_overlap=p["chunk_overlap"],
                speech_pad_ms=p["speech_pad_ms"], pre_roll_ms=p["vad_pre_roll_ms"],
                language=self.language, prompt=self.prompt,
                stop_check_max_s=p["stop_check_max_s"]),
            self._on_recognizer, turn_end=self.turn_end, stop_check=self.stop_check,
            id_prefix=f"{self.get_name()}-{secrets.token_hex(2)}")
        # mic callbacks -> bounded queue -> VAD thread [-> echo guard] -> recognizer
        self.feed = VadFeed(self.recognizer, queue_size=p["queue_size"],
                            stream_timeout=self.stream_timeout, echo=echo,
                            now_ns=lambda: self.get_clock().now().nanoseconds)
        self.final_pub = publisher(self, C.TRANSCRIPT, Transcript)
        self.partial_pub = publisher(self, C.TRANSCRIPT_PARTIAL, Transcript)
        # The microphone has a callback group of its own: its chunks never wait behind the echo
        # reference, events or parameter calls (the audio state is touched only here).
        mic = MutuallyExclusiveCallbackGroup()
        subscription(self, C.AUDIO_MIC_INFO, AudioInfo, self._on_info, callback_group=mic)
        subscription(self, C.AUDIO_MIC, AudioDataStamped, self._on_stamped, callback_group=mic)
        subscription(self, C.AUDIO_MIC_RAW, AudioData, self._on_raw,
                     name=p["audio_data_topic"], callback_group=mic)
        if echo is not None:
            subscription(self, C.AUDIO_TTS_INFO, AudioInfo, self._on_tts_info)
            subscription(self, C.AUDIO_TTS, AudioDataStamped, self._on_tts)
            subscription(self, C.VOICE_EVENTS, VoiceEvent, self._on_event)

        self.feed.start()
        self.recognizer.start()
        return (f"asr ({backend_name(self.transcriber)}, VAD {self.vad.path.name}, echo "
                f"{p['echo_mode']})", load_seconds)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> dict[str, Any]:
        d = {}

        def param(name, default, description):
            # everything here is read at start-up: read-only, so `ros2 param set` says so
            d[name] = declare(self, name, default, description, limits=_LIMITS.get(name),
                              choices=_CHOICES.get(name))

        param("backend", "faster_whisper",
              "faster_whisper (local), openai (/audio/transcriptions) or chat_audio "
              "(/chat/completions with input_audio)")
        param("model", "tiny.en", "faster_whisper: 'tiny.en', 'base' or a CTranslate2 model dir")
        param("compute_type", "int8", "faster_whisper: CTranslate2 compute type")
        param("compute_device", "cpu", "faster_whisper: cpu, cuda or auto")
        param("beam_size", 1, "faster_whisper: beam size (1 = greedy, fastest)")
        param("threads", 0, "faster_whisper: CPU threads (0 = library default)")
        param("language", "auto", "ISO 639-1 code, or 'auto' to detect (.en models: always en)")
        param("initial_prompt", "", "text that primes the recognizer (names, jargon)")
        param("prime_with_schema", "hotwords", "give the recognizer the command schema's "
              "words (places, objects, action and stop words): hotwords, prompt "
              "(initial_prompt) or off")
        param("schema_path", "", "command schema YAML (priming, end of turn from the words); "
              "empty = the installed share/locara_ros/config/commands.yaml")
        param("server_url", "", "openai/chat_audio: base URL, e.g. http://gpu:8000/v1")
        param("api_key", "", "openai/chat_audio: bearer token (empty: none)")
        param("server_model", "", "openai/chat_audio: model name sent to the server")
        param("server_timeout", 30.0, "openai/chat_audio: seconds per request")
        param("fallback", "", "openai/chat_audio: local backend used while the server is "
              "unreachable ('faster_whisper' with `model`; empty = none)")
        param("retry_interval", 5.0, "seconds between probes of an unreachable server")
        param("chat_instruction", "", "chat_audio: instruction sent with the audio "
                                      "(empty: ask for a verbatim transcript)")
        param("partial_min_speech_s", 0.8, "no partial before this much speech: a short "
                                           "utterance (a stop word) goes straight to the final, "
                                           "which a running partial would delay")
        param("stop_check_max_s", 2.0, "utterances of at most this many seconds get a quick "
              "stop check at each silence (a short-window decode, ~100 ms on a CPU): a stop "
              "phrase goes out as a partial before the full decode; 0 = off")
        param("partial_interval", 0.5, "seconds from the end of one partial hypothesis to the "
                                       "next (0 = no partials)")
        param("chunk_seconds", 25.0, "utterances longer than this are transcribed in "
                                     "overlapping chunks of this length")
        param("chunk_overlap", 2.0, "seconds shared by consecutive chunks")
        param("speech_pad_ms", 200.0, "silence appended after the last speech window for "
                                     "recognition")
        param("vad_model", "", "Silero VAD v6 ONNX path (empty: the one inside faster-whisper)")
        param("vad_threshold", 0.5, "speech probability that starts or resumes speech")
        param("vad_neg_threshold", 0.0, "probability below which a window is silence "
                                         "(0 = threshold - 0.15)")
        param("vad_start_ms", 96.0, "speech needed before SPEECH_STARTED")
        param("vad_stop_ms", 400.0, "silence that ends an utterance (words not judged, or "
                                    "neither complete nor trailing off)")
        param("turn_end_complete_ms", 200.0, "silence that ends an utterance whose words so far "
              "are a complete request (a sentence template matches, or a stop phrase)")
        param("turn_end_incomplete_ms", 800.0, "silence that ends an utterance whose words "
              "trail off mid-phrase ('go to the ...')")
        param("vad_min_speech_ms", 200.0, "shorter utterances are discarded (empty final)")
        param("vad_pre_roll_ms", 300.0, "audio kept before the speech start")
        param("max_utterance_s", 60.0, "an utterance is ended after this many seconds")
        param("stream_timeout", 1.0, "end an utterance when no audio arrives for this long [s]")
        param("input_sample_rate", 16000, "S16LE mono rate assumed until audio/mic/info arrives")
        param("audio_data_topic", C.AUDIO_MIC_RAW.name, "topic for unstamped AudioData")
        param("queue_size", 500, "audio chunks buffered between callbacks and the VAD thread")
        param("echo_mode", "off", "off or reference: cancel the robot's own voice using audio/tts "
                                  "(see locara_ros.core.echo)")
        param("frame_id", "", "frame_id for transcripts when the audio carries none")
        if d["echo_mode"] == "half_duplex":
            raise ValueError("echo_mode 'half_duplex' was removed: use 'reference' (it gates the "
                             "mic the same way until it has learned the echo path)")
        if d["echo_mode"] not in ("off", "reference"):
            raise ValueError(f"echo_mode '{d['echo_mode']}' is not off or reference")
        lang = str(d["language"]).strip().lower()
        self.language = None if lang in ("", "auto") else lang
        self.prompt = d["initial_prompt"]
        self.hotwords = ""
        if d["prime_with_schema"] not in ("hotwords", "prompt", "off"):
            raise ValueError(f"prime_with_schema must be hotwords, prompt or off, got "
                             f"'{d['prime_with_schema']}'")
        from locara_ros.core.command_schema import load_schema
        from locara_ros.core.intents import recognizer_prompt
        from locara_ros.core.turns import TurnEnd
        path = d["schema_path"]
        if not path:
            from ament_index_python.packages import get_package_share_directory
            path = f"{get_package_share_directory('locara_ros')}/config/commands.yaml"
        schema = load_schema(path)  # SchemaError names file and line
        if d["prime_with_schema"] != "off":
            words = recognizer_prompt(schema)
            if d["prime_with_schema"] == "prompt":
                self.prompt = f"{self.prompt} {words}".strip()
            else:
                self.hotwords = words
        self.turn_end = TurnEnd(schema, d["turn_end_complete_ms"], d["vad_stop_ms"],
                                d["turn_end_incomplete_ms"])
        self.stop_check = stop_checker(schema) if d["stop_check_max_s"] > 0 else None
        self.stream_timeout = float(d["stream_timeout"])
        return d

    def _make_transcriber(self, p: dict[str, Any]) -> Transcriber:
        backend = p["backend"]
        p = dict(p, hotwords=self.hotwords)
        if backend == "faster_whisper":
            return self._local_transcriber(p)
        if backend in ("openai", "chat_audio"):
            if not p["server_url"]:
                raise ValueError(f"backend '{backend}' needs the server_url parameter "
                                 "(e.g. http://gpu-server:8000/v1)")
            client = OpenAIClient(ServerConfig(base_url=p["server_url"], api_key=p["api_key"],
                                               model=p["server_model"],
                                               timeout=float(p["server_timeout"])))
            if backend == "openai":
                remote: Transcriber = OpenAITranscriptionTranscriber(client,
                                                                     model=p["server_model"])
            else:
                remote = ChatAudioTranscriber(client, model=p["server_model"],
                                              instruction=p["chat_instruction"])
            if p["fallback"] not in ("", "faster_whisper"):
                raise ValueError(f"fallback '{p['fallback']}' is not '' or 'faster_whisper'")
            make_fallback = (lambda: self._local_transcriber(p)) if p["fallback"] else None
            return with_failover(self, self.events_pub, "asr", remote, make_fallback,
                                 probe=client.health, retry_interval=p["retry_interval"])
        raise ValueError(f"backend '{backend}' is not faster_whisper, openai or chat_audio")

    @staticmethod
    def _local_transcriber(p: dict[str, Any]) -> FasterWhisperTranscriber:
        path = resolve_whisper(p["model"])
        label = p["model"] if p["model"] in ("tiny.en", "base") else os.path.basename(
            str(path).rstrip("/"))
        return FasterWhisperTranscriber(path, label=label, compute_type=p["compute_type"],
                                        device=p["compute_device"], beam_size=p["beam_size"],
                                        cpu_threads=p["threads"], hotwords=p["hotwords"])

    # ------------------------------------------------------------------ audio in (callbacks)
    def _on_info(self, msg: AudioInfo) -> None:
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
        for mono, t_ns in pieces:
            self.feed.put(mono, t_ns, frame_id or self.frame_id_default)

    # ------------------------------------------------------------------ echo hook
    def _on_tts_info(self, msg: AudioInfo) -> None:
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
        if msg.type in (VoiceEvent.SPEAKING_STARTED, VoiceEvent.SPEAKING_STOPPED):
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
    def teardown(self) -> None:
        """cleanup / shutdown: stop the VAD and recognizer threads, free the models."""
        if self.feed is not None:
            self.feed.close()
        if self.recognizer is not None:
            self.recognizer.close()
        if self.transcriber is not None:
            self.transcriber.close()
        self.feed = self.recognizer = self.transcriber = None


def main(args=None) -> int:
    return run_node(AsrNode, args)
