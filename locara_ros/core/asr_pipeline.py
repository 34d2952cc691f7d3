"""The asr's pipeline assembled from its settings (no ROS).

    mic chunks -> MicDecoder (format, mono, 16 kHz) -> VadFeed (bounded queue, VAD thread,
    [echo guard]) -> StreamingRecognizer (Silero VAD segmenter, partials, finals) -> events

The command schema primes it: its words become the recognizer's hotwords or prompt
(`prime_with_schema`), its sentence templates end a turn sooner when the words so far are a
complete request (:class:`~locara_ros.core.turns.TurnEnd`), its stop phrases get a check of
short utterances (`stop_check_max_s`). The node creates the transcriber (a server backend is
wrapped with failover there), subscribes the microphone and publishes the events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from locara_ros.core.backends.asr import FasterWhisperTranscriber, Transcriber
from locara_ros.core.backends.failover import Failover
from locara_ros.core.command_schema import CommandSchema
from locara_ros.core.intents import recognizer_prompt
from locara_ros.core.mic_input import MicDecoder, VadFeed
from locara_ros.core.recognizer import Event, RecognizerConfig, StreamingRecognizer, stop_checker
from locara_ros.core.settings.asr import AsrSettings
from locara_ros.core.turns import TurnEnd
from locara_ros.core.vad import SAMPLE_RATE, Segmenter, SileroVad, VadConfig


@dataclass(frozen=True)
class Priming:
    """What the recognizer is primed with: Whisper's initial prompt and its hotwords."""

    prompt: str
    hotwords: str


def priming(cfg: AsrSettings, schema: CommandSchema) -> Priming:
    """`initial_prompt`, plus the schema's words as hotwords or prompt (`prime_with_schema`)."""
    prompt, hotwords = cfg.initial_prompt, ""
    if cfg.prime_with_schema != "off":
        words = recognizer_prompt(schema)
        if cfg.prime_with_schema == "prompt":
            prompt = f"{prompt} {words}".strip()
        else:
            hotwords = words
    return Priming(prompt, hotwords)


class AsrPipeline:
    """The VAD, the echo guard, the recognizer and the audio in between, from the settings.

    `feed(samples, stamp_ns, frame_id)` and `mic` take the microphone's audio; recognizer
    events (started, stopped, hypotheses, failures) go to `on_event` from the pipeline's
    threads. `start()` starts the threads, `restart(reason)` ends the utterance under way,
    `close()` stops everything.
    """

    def __init__(self, cfg: AsrSettings, schema: CommandSchema, transcriber: Transcriber,
                 prompt: str, on_event: Callable[[Event], None], *, now_ns: Callable[[], int],
                 id_prefix: str) -> None:
        self.cfg, self.transcriber = cfg, transcriber
        self.vad = SileroVad(cfg.vad_model)
        segmenter = Segmenter(self.vad, VadConfig(
            threshold=cfg.vad_threshold, neg_threshold=cfg.vad_neg_threshold,
            start_ms=cfg.vad_start_ms, stop_ms=cfg.vad_stop_ms,
            min_speech_ms=cfg.vad_min_speech_ms, max_utterance_s=cfg.max_utterance_s,
            pre_roll_ms=cfg.vad_pre_roll_ms))
        self.turn_end = TurnEnd(schema, cfg.turn_end_complete_ms, cfg.vad_stop_ms,
                                cfg.turn_end_incomplete_ms)
        echo = None
        if cfg.echo_mode != "off":  # cleans mic audio before VAD and ASR (core.echo)
            from locara_ros.core.echo import EchoGuard
            echo = EchoGuard(cfg.echo_mode, sample_rate=SAMPLE_RATE)
        # audio input state (touched only by the microphone's callbacks, one at a time)
        self.mic = MicDecoder(cfg.input_sample_rate)
        self.recognizer = StreamingRecognizer(
            segmenter, transcriber, RecognizerConfig(
                partial_interval=cfg.partial_interval,
                partial_min_speech_s=cfg.partial_min_speech_s,
                chunk_seconds=cfg.chunk_seconds, chunk_overlap=cfg.chunk_overlap,
                speech_pad_ms=cfg.speech_pad_ms, pre_roll_ms=cfg.vad_pre_roll_ms,
                language=cfg.language_code, prompt=prompt,
                stop_check_max_s=cfg.stop_check_max_s),
            on_event, turn_end=self.turn_end,
            stop_check=stop_checker(schema) if cfg.stop_check_max_s > 0 else None,
            id_prefix=id_prefix)
        # mic callbacks -> bounded queue -> VAD thread [-> echo guard] -> recognizer
        self.feed = VadFeed(self.recognizer, queue_size=cfg.queue_size,
                            stream_timeout=float(cfg.stream_timeout), echo=echo, now_ns=now_ns)

    @property
    def echo(self):
        return self.feed.echo

    def warm(self) -> None:
        """The first inference allocates: a second of silence through the local model now."""
        local = self.transcriber.fallback if isinstance(self.transcriber, Failover) else (
            self.transcriber)
        if isinstance(local, FasterWhisperTranscriber):
            local.transcribe(np.zeros(SAMPLE_RATE, np.float32), self.cfg.language_code)

    def start(self) -> None:
        self.feed.start()
        self.recognizer.start()

    def close(self) -> None:
        self.feed.close()
        self.recognizer.close()
        self.transcriber.close()
