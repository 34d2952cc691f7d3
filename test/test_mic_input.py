"""Microphone audio in (locara_ros.core.mic_input), in-process: the asr's decoding and its VAD
feed thread with the real Silero VAD and faster-whisper tiny.en on Piper speech."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from locara_ros.testing.speech import silence, synthesize

from locara_ros.core.asr_pipeline import AsrPipeline, priming
from locara_ros.core.audio import AudioFormatError, encode_s16le
from locara_ros.core.backends.asr import FasterWhisperTranscriber
from locara_ros.core.command_schema import load_schema
from locara_ros.core.mic_input import MicDecoder, VadFeed
from locara_ros.core.models import resolve_whisper
from locara_ros.core.recognizer import Hypothesis, RecognizerConfig, Stopped, StreamingRecognizer
from locara_ros.core.settings.asr import AsrSettings
from locara_ros.core.vad import Segmenter, SileroVad, VadConfig

T0 = 1_000_000_000


def test_decoder_follows_the_announced_format_and_refuses_what_it_cannot_read():
    mic = MicDecoder(16000)
    pieces = mic.decode(encode_s16le(np.zeros(320, np.float32)), T0)
    assert sum(p.size for p, _ in pieces) <= 320 and pieces[0][1] == T0
    # 48 kHz stereo announced mid-stream: the utterance must restart, audio comes out 16 kHz mono
    r = mic.set_info("wave", 48000, 2, "S16LE")
    assert r.changed and r.restart and r.error and "48000 Hz 2 ch" in r.message
    stereo = np.zeros((4800, 2), np.float32)  # 0.1 s
    out = []
    for i in range(10):
        out += mic.decode(encode_s16le(stereo.reshape(-1)), T0 + i * 100_000_000)
    n = sum(p.size for p, _ in out)
    assert all(p.ndim == 1 for p, _ in out) and 15_000 <= n <= 16_000, n
    assert [t for _, t in out] == sorted(t for _, t in out)
    # the same format again changes nothing
    assert not mic.set_info("wave", 48000, 2, "S16LE").changed
    # half a sample is malformed: dropped and counted, the next good chunk is used
    with pytest.raises(AudioFormatError, match="1 so far"):
        mic.decode(b"\x00\x01\x02", T0)
    assert mic.decode(encode_s16le(stereo.reshape(-1)), T0)
    # a compressed stream is refused: audio is dropped with the reason until a usable format
    r = mic.set_info("mp3", 16000, 1, "S16LE")
    assert r.error and r.restart and "not raw PCM" in r.message
    with pytest.raises(AudioFormatError, match="audio dropped: .*mp3"):
        mic.decode(b"\x00\x00", T0)
    assert not mic.set_info("wave", 16000, 1, "S16LE").restart  # no audio since the refusal


@pytest.fixture(scope="module")
def whisper():
    model = FasterWhisperTranscriber(resolve_whisper("tiny.en"))
    yield model
    model.close()


class Events:
    def __init__(self) -> None:
        self.items: list = []
        self.lock = threading.Condition()

    def __call__(self, ev) -> None:
        with self.lock:
            self.items.append(ev)
            self.lock.notify_all()

    def wait(self, predicate, timeout: float) -> list:
        with self.lock:
            assert self.lock.wait_for(lambda: any(predicate(e) for e in self.items), timeout), \
                [type(e).__name__ for e in self.items]
            return list(self.items)


def _feed(whisper, events: Events, stream_timeout: float) -> tuple[StreamingRecognizer, VadFeed]:
    rec = StreamingRecognizer(Segmenter(SileroVad(), VadConfig()), whisper,
                              RecognizerConfig(language="en", partial_interval=0.0), events,
                              id_prefix="t")
    feed = VadFeed(rec, queue_size=500, stream_timeout=stream_timeout)
    rec.start()
    feed.start()
    return rec, feed


def _put(feed: VadFeed, audio: np.ndarray, t0: int = T0) -> None:
    for i in range(0, audio.size, 320):
        feed.put(audio[i:i + 320], t0 + i * 62_500, "mic_link")


def test_speech_cut_off_by_a_silent_stream_ends_after_stream_timeout(whisper):
    events = Events()
    rec, feed = _feed(whisper, events, stream_timeout=0.5)
    try:
        _put(feed, np.concatenate([silence(0.3), synthesize("Go to the kitchen.")]))
        fed = time.monotonic()  # no silence follows: only the stream timeout ends it
        got = events.wait(lambda e: isinstance(e, Hypothesis) and e.final, timeout=60)
        stop = next(e.stop for e in got if isinstance(e, Stopped))
        assert stop.reason == "audio stopped", stop
        assert time.monotonic() - fed >= 0.5
        final = next(e for e in got if isinstance(e, Hypothesis) and e.final)
        assert "kitchen" in final.result.text.lower() and final.utterance.frame_id == "mic_link"
    finally:
        feed.close()
        rec.close()


def test_a_format_change_ends_the_utterance_and_starts_over(whisper):
    events = Events()
    rec, feed = _feed(whisper, events, stream_timeout=30.0)
    try:
        _put(feed, np.concatenate([silence(0.3), synthesize("Go to the kitchen.")]))
        feed.restart()
        got = events.wait(lambda e: isinstance(e, Hypothesis) and e.final, timeout=60)
        assert next(e.stop for e in got if isinstance(e, Stopped)).reason == \
            "audio format changed"
        _put(feed, np.concatenate([silence(0.3), synthesize("Stop."), silence(1.0)]), T0 * 10)
        got = events.wait(lambda e: isinstance(e, Hypothesis) and e.final and
                          e.utterance.id.endswith("0002"), timeout=60)
        assert "stop" in got[-1].result.text.lower() or any(
            "stop" in e.result.text.lower() for e in got if isinstance(e, Hypothesis))
    finally:
        feed.close()
        rec.close()


def test_the_asr_pipeline_from_its_settings_hears_a_complete_request(tmp_path):
    """core.asr_pipeline: what the asr node configures - the schema's words as hotwords (or
    prompt), the VAD and the recognizer from AsrSettings, the turn judged from the words."""
    schema = load_schema(Path(__file__).resolve().parent.parent / "config" / "commands.yaml")
    cfg = AsrSettings(model="tiny.en", partial_interval=0.0)
    primed = priming(cfg, schema)
    assert "kitchen" in primed.hotwords and primed.prompt == ""
    in_prompt = priming(dataclasses.replace(cfg, prime_with_schema="prompt",
                                            initial_prompt="Robot."), schema)
    assert in_prompt.prompt.startswith("Robot. ") and "kitchen" in in_prompt.prompt
    assert in_prompt.hotwords == ""
    events = Events()
    pipe = AsrPipeline(cfg, schema, FasterWhisperTranscriber(resolve_whisper("tiny.en")),
                       primed.prompt, events, now_ns=time.time_ns, id_prefix="pipe")
    pipe.warm()
    pipe.start()
    try:
        audio = np.concatenate([silence(0.3), synthesize("Go to the kitchen."), silence(1.5)])
        for i in range(0, audio.size, 320):  # S16LE chunks as they come off audio/mic
            for mono, t in pipe.mic.decode(encode_s16le(audio[i:i + 320]), T0 + i * 62_500):
                pipe.feed.put(mono, t, "")
        got = events.wait(lambda e: isinstance(e, Hypothesis) and e.final, timeout=60)
        final = next(e for e in got if isinstance(e, Hypothesis) and e.final)
        assert "go to the kitchen" in final.result.text.lower(), final.result.text
        stop = next(e.stop for e in got if isinstance(e, Stopped))
        assert stop.reason.startswith("silence"), stop
        # the turn is judged from the words (fed faster than real time here, the silence is
        # over before a speculative final: the judge itself is checked)
        assert pipe.turn_end.judge("go to the kitchen").stop_ms == cfg.turn_end_complete_ms
        assert pipe.turn_end.judge("go to the").stop_ms == cfg.turn_end_incomplete_ms
    finally:
        pipe.close()
