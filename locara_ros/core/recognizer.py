"""The streaming recognizer: VAD-segmented utterances -> partial and final transcripts.

No ROS here; the asr node feeds it 16 kHz mono audio (already echo-cleaned) and publishes what
it emits. Two threads touch it:

* the caller's audio thread calls :meth:`StreamingRecognizer.feed` (and :meth:`flush`,
  :meth:`reset`): the Silero VAD state machine runs there, so :class:`Started` and
  :class:`Stopped` are emitted the moment the VAD decides them, never behind the recognizer;
* the recognizer thread (:meth:`start`; or :meth:`step` from a test) transcribes: growing
  hypotheses while the user speaks (``partial_interval`` apart, none before
  ``partial_min_speech_s`` of speech), and, as soon as the VAD hears silence after speech, the
  utterance up to the last speech sample plus ``speech_pad_ms`` of digital silence (the
  *speculative final*). When the silence lasts long enough to end the utterance, that result is
  the final, so the final follows the end-of-speech decision at once. Long utterances are
  transcribed in overlapping chunks; finished chunks are cached per utterance.

The words of the speculative final also judge the end of the turn (:class:`~locara_ros.core.
turns.TurnEnd`): a complete request ends it after a shorter silence, words that trail off after
a longer one.

**The stop check** (``stop_check_max_s`` > 0 and a `stop_check`): before the speculative final of
a short utterance, a rough transcript from a short encoder window
(:meth:`~locara_ros.core.backends.asr.FasterWhisperTranscriber.quick_transcribe`, ~90 ms instead
of ~450 ms on two CPU cores) is checked for a stop phrase; a stop goes out at once as a partial.
While such an utterance is still that short, its partials come from the same rough transcript
(a stop phrase among them goes out as the phrase): a full decode running when the speech ends
would hold the check at the silence back by ~500 ms.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from locara_ros.core.backends.asr import Transcriber, TranscriptionResult
from locara_ros.core.backends.openai_http import BackendError
from locara_ros.core.command_schema import CommandSchema
from locara_ros.core.transcripts import chunk_plan, clean_text, is_loop, merge_chunks
from locara_ros.core.turns import TurnEnd
from locara_ros.core.vad import SAMPLE_RATE, Segmenter, SpeechAudio, SpeechStart, SpeechStop

log = logging.getLogger(__name__)
_WORDS = re.compile(r"[a-z0-9']+")


@dataclass
class Utterance:
    """One utterance, shared by the audio thread (writes audio) and the recognizer (reads)."""

    id: str
    speech_start_ns: int
    audio_start_ns: int  # capture time of sample 0 (pre-roll included)
    frame_id: str
    chunks: list[np.ndarray] = field(default_factory=list)
    n: int = 0  # samples so far
    speech_end_sample: int = 0  # just after the last speech window
    in_silence: bool = False
    stop: SpeechStop | None = None
    cache: dict[tuple[int, int, bool], TranscriptionResult] = field(default_factory=dict)
    last_partial_speech_end: int = 0
    last_partial_time: float = 0.0
    partials: int = 0
    failed_end: int = -1  # speech end of a speculative final that failed (not retried)
    checked_end: int = -1  # speech end the stop check last looked at
    # the end of the turn judged from the words up to a silence: (speech end sample, ms, why)
    turn_end: tuple[int, float, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, audio: np.ndarray, speech_end_sample: int, in_silence: bool) -> None:
        with self.lock:
            self.chunks.append(audio)
            self.n += audio.size
            self.speech_end_sample = speech_end_sample
            self.in_silence = in_silence

    def audio(self, end: int) -> np.ndarray:
        with self.lock:
            if len(self.chunks) > 1:
                self.chunks = [np.concatenate(self.chunks)]
            data = self.chunks[0] if self.chunks else np.zeros(0, np.float32)
        return data[:end]


@dataclass
class Started:
    """Speech started (emitted from the audio thread). `decided_ns`: the capture time of the
    window that decided it; speech onset = utterance.speech_start_ns."""

    utterance: Utterance
    decided_ns: int


@dataclass
class Stopped:
    """The VAD ended the utterance (audio thread); its final follows from the recognizer."""

    utterance: Utterance
    stop: SpeechStop


@dataclass
class Hypothesis:
    """A transcript (recognizer thread): a partial while the user speaks, or the final (always
    exactly one per utterance, empty for a discarded or failed one)."""

    utterance: Utterance
    result: TranscriptionResult
    spent: float  # seconds of recognizer inference for this hypothesis
    final: bool


@dataclass
class Failed:
    """Recognition failed (the final is then empty); `error` says why."""

    utterance: Utterance
    error: str
    final: bool


Event = Union[Started, Stopped, Hypothesis, Failed]


@dataclass
class RecognizerConfig:
    partial_interval: float = 0.5  # s from the end of one partial to the next; 0 = no partials
    partial_min_speech_s: float = 0.8  # no partial before this much speech
    chunk_seconds: float = 25.0  # longer utterances: overlapping chunks of this length
    chunk_overlap: float = 2.0
    speech_pad_ms: float = 200.0  # digital silence after the last speech window
    pre_roll_ms: float = 300.0  # the segmenter's pre-roll (not speech for the partial minimum)
    language: str | None = None
    prompt: str = ""
    # The stop check: an utterance of at most this much audio (pre-roll included) gets a quick
    # rough transcript at each silence, before the speculative final; 0 = off
    stop_check_max_s: float = 0.0
    stop_check_window_s: float = 4.0

    def __post_init__(self) -> None:
        if self.chunk_overlap < 0 or self.chunk_overlap >= self.chunk_seconds / 2:
            raise ValueError("chunk_overlap must be >= 0 and less than half of chunk_seconds")


def stop_checker(schema: CommandSchema) -> Callable[[str], str | None]:
    """text -> the stop it is (the text, or the stop phrase it sounds like), or None: the
    command parser's own rules (stop phrases and filler, a stop after a pause; sound-alikes of
    what no template makes a command of), with no model."""
    from locara_ros.core.parser import CommandParser

    rules = CommandParser(schema, None)

    def check(text: str) -> str | None:
        if rules.is_stop(text):
            return text
        return rules.sounds_like_stop(text, rules.decide(text))
    return check


def first_repeat(text: str) -> str:
    """The words up to their first repetition: a short-window decode repeats a short phrase
    ("hold on. hold on. hold on. hold" -> "hold on"); other text is returned as words."""
    words = _WORDS.findall(text.lower())
    for p in range(1, len(words) // 2 + 1):
        if words[:p] == words[p:2 * p]:
            return " ".join(words[:p])
    return " ".join(words)


class StreamingRecognizer:
    def __init__(self, segmenter: Segmenter, transcriber: Transcriber,
                 config: RecognizerConfig, emit: Callable[[Event], None], *,
                 turn_end: TurnEnd | None = None, id_prefix: str = "utt",
                 stop_check: Callable[[str], str | None] | None = None) -> None:
        self.segmenter = segmenter
        self.transcriber = transcriber
        self.config = config
        self.turn_end = turn_end
        self._emit = emit
        self._id_prefix = id_prefix
        # the stop check needs a stop test and a backend that can transcribe a short window
        quick = getattr(transcriber, "quick_transcribe", None)
        self._quick = quick if stop_check is not None and config.stop_check_max_s > 0 else None
        self._stop_check = stop_check
        self._check_max = int(config.stop_check_max_s * SAMPLE_RATE)
        self.partial_min_speech = int(config.partial_min_speech_s * SAMPLE_RATE)
        self.chunk_samples = int(config.chunk_seconds * SAMPLE_RATE)
        self.overlap_samples = int(config.chunk_overlap * SAMPLE_RATE)
        self.pad_samples = int(config.speech_pad_ms / 1000 * SAMPLE_RATE)
        self._pre_roll = int(config.pre_roll_ms / 1000 * SAMPLE_RATE)
        self._cond = threading.Condition()
        self._active: Utterance | None = None
        self._finals: collections.deque[Utterance] = collections.deque()
        self._counter = 0
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ audio thread
    @property
    def speaking(self) -> bool:
        return self.segmenter.speaking

    def feed(self, samples: np.ndarray, stamp_ns: int, frame_id: str = "") -> None:
        """16 kHz mono float32 audio whose first sample was captured at `stamp_ns`."""
        utt = self._active
        if utt is not None and utt.turn_end is not None:
            end_sample, ms, why = utt.turn_end
            with utt.lock:
                current = utt.speech_end_sample == end_sample and utt.in_silence
            # only for the silence that the judged words end in (speech may have resumed)
            if current and self.segmenter.turn_end != (ms, why):
                self.segmenter.end_turn_after(ms, why)
            elif not current and self.segmenter.turn_end is not None:
                self.segmenter.turn_end = None
        self._handle(self.segmenter.feed(samples, stamp_ns), frame_id)

    def flush(self, reason: str) -> None:
        """End the current utterance now (the audio stopped, its format changed)."""
        self._handle(self.segmenter.flush(reason), "")

    def reset(self) -> None:
        self.segmenter.reset()

    def _handle(self, events: list[object], frame_id: str) -> None:
        for ev in events:
            if isinstance(ev, SpeechAudio):
                utt = self._active
                if utt is not None:
                    utt.append(ev.audio, ev.speech_end_sample, ev.in_silence)
                    if ev.in_silence:
                        with self._cond:
                            self._cond.notify()
            elif isinstance(ev, SpeechStart):
                self._counter += 1
                utt = Utterance(f"{self._id_prefix}-{self._counter:04d}", ev.speech_start_ns,
                                ev.speech_start_ns - ev.speech_offset * 1_000_000_000
                                // SAMPLE_RATE, frame_id)
                utt.append(ev.audio, ev.audio.size, False)
                self._emit(Started(utt, ev.decided_ns))
                with self._cond:
                    self._active = utt
                    self._cond.notify()
            elif isinstance(ev, SpeechStop):
                utt = self._active
                if utt is None:
                    continue
                self._emit(Stopped(utt, ev))
                with self._cond:
                    utt.stop = ev
                    self._active = None
                    self._finals.append(utt)
                    self._cond.notify()

    # ------------------------------------------------------------------ recognizer thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work_loop, name="asr-recognizer",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def step(self) -> bool:
        """Do the next recognizer job, if any (for tests without the thread)."""
        with self._cond:
            job = self._next_job()
        if job is not None:
            self._run(job)
        return job is not None

    def _next_job(self) -> tuple[str, Utterance, int] | None:
        if self._finals:
            return "final", self._finals.popleft(), 0
        utt = self._active
        if utt is None:
            return None
        with utt.lock:
            n, speech_end, silent = utt.n, utt.speech_end_sample, utt.in_silence
        # The stop check first: a short utterance that is a stop phrase stops the robot ~100 ms
        # after the word instead of after a full decode.
        if silent and speech_end != utt.checked_end and self._checkable(speech_end):
            return "stop_check", utt, speech_end
        # Speculative final: silence after speech; transcribe up to the speech end (+ pad)
        # now, so the final is ready when the VAD confirms the end.
        if silent and speech_end != utt.failed_end and not self._have(utt, speech_end):
            return "speculative", utt, speech_end
        # Partials: only for new speech, and `partial_interval` after the previous one ended,
        # so the recognizer is never kept busy by partials when the final is due. While the
        # utterance is short enough for the stop check, a rough one (see _quick_partial).
        if (self.config.partial_interval > 0 and not silent
                and speech_end > utt.last_partial_speech_end
                and speech_end - self._pre_roll >= self.partial_min_speech
                and time.monotonic() - utt.last_partial_time >= self.config.partial_interval):
            return "partial", utt, n
        return None

    def _checkable(self, speech_end: int) -> bool:
        return self._quick is not None and speech_end + self.pad_samples <= self._check_max

    def _have(self, utt: Utterance, speech_end: int) -> bool:
        plan = chunk_plan(speech_end + self.pad_samples, self.chunk_samples,
                          self.overlap_samples)
        return bool(plan) and (*plan[-1], True) in utt.cache

    def _work_loop(self) -> None:
        while not self._closing.is_set():
            with self._cond:
                job = self._next_job()
                if job is None:
                    self._cond.wait(timeout=0.05)
                    continue
            self._run(job)

    def _run(self, job: tuple[str, Utterance, int]) -> None:
        kind, utt, end = job
        try:
            if kind == "final":
                self._final(utt)
            elif kind == "stop_check":
                self._check_stop(utt, end)
            elif kind == "partial" and self._checkable(end):
                self._quick_partial(utt, end)
            else:
                self._partial(utt, end, kind)
        except Exception as e:  # noqa: BLE001 - keep recognizing the next utterance
            log.error("recognizer failed (%s, %s): %s: %s", kind, utt.id, type(e).__name__, e)

    def _recognize(self, utt: Utterance, end: int,
                   pad: bool = False) -> tuple[TranscriptionResult, float]:
        """Text of utt[0:end] (+ speech_pad_ms of silence with pad), chunk by chunk; finished
        chunks come from the cache. The pad is digital silence, not the audio after the speech,
        so the final can be computed from the moment the silence begins."""
        audio = utt.audio(end)
        real = audio.size
        if pad:
            audio = np.concatenate([audio, np.zeros(self.pad_samples, np.float32)])
        plan = chunk_plan(audio.size, self.chunk_samples, self.overlap_samples)
        results, spent = [], 0.0
        for start, stop in plan:
            key = (start, stop, pad and stop > real)
            r = utt.cache.get(key)
            if r is None:
                r = self.transcriber.transcribe(audio[start:stop], self.config.language,
                                                self.config.prompt)
                utt.cache[key] = r
                spent += r.inference_time
            results.append(r)
        weights = [max(r.duration, 1e-3) for r in results]
        conf = float(np.average([r.confidence for r in results], weights=weights))
        language = next((r.language for r in results if r.language), self.config.language or "")
        text = merge_chunks([r.text for r in results]) if len(results) > 1 else clean_text(
            results[0].text if results else "")
        return TranscriptionResult(text, conf, language, duration=audio.size / SAMPLE_RATE,
                                   inference_time=spent), spent

    def _rough(self, utt: Utterance, end: int) -> tuple[TranscriptionResult, str, str | None]:
        """Rough transcript of utt[0:end] + pad (repeats collapsed), and the stop phrase it is,
        if any. Raises what the backend raises."""
        assert self._quick is not None and self._stop_check is not None
        audio = np.concatenate([utt.audio(end), np.zeros(self.pad_samples, np.float32)])
        rough = self._quick(audio, self.config.stop_check_window_s,
                            language=self.config.language)
        text = first_repeat(rough.text)
        return rough, text, (self._stop_check(text) if text else None)

    def _emit_rough(self, utt: Utterance, rough: TranscriptionResult, text: str) -> None:
        utt.partials += 1
        self._emit(Hypothesis(utt, TranscriptionResult(
            text, rough.confidence, rough.language, duration=rough.duration,
            inference_time=rough.inference_time), rough.inference_time, final=False))

    def _check_stop(self, utt: Utterance, end: int) -> None:
        utt.checked_end = end
        try:
            rough, _text, heard = self._rough(utt, end)
        except (BackendError, ValueError, RuntimeError) as e:
            log.warning("stop check for %s failed: %s", utt.id, e)
            return
        if heard:
            self._emit_rough(utt, rough, heard)

    def _quick_partial(self, utt: Utterance, end: int) -> None:
        """A partial of a short utterance from the rough transcript (~100 ms, not ~500): a stop
        phrase goes out as the phrase, anything else as heard."""
        with utt.lock:
            speech_end = utt.speech_end_sample
        utt.last_partial_speech_end = max(utt.last_partial_speech_end, speech_end)
        try:
            rough, text, heard = self._rough(utt, end)
        except (BackendError, ValueError, RuntimeError) as e:
            self._emit(Failed(utt, f"partial for {utt.id} failed: {e}", final=False))
            return
        finally:
            utt.last_partial_time = time.monotonic()
        if heard or (text and not is_loop(text)):
            self._emit_rough(utt, rough, heard or text)

    def _partial(self, utt: Utterance, end: int, kind: str) -> None:
        with utt.lock:
            speech_end = utt.speech_end_sample
        utt.last_partial_speech_end = max(utt.last_partial_speech_end, speech_end)
        try:
            result, spent = self._recognize(utt, end, pad=kind == "speculative")
        except (BackendError, ValueError, RuntimeError) as e:
            if kind == "speculative":  # not again for the same silence: the final will retry
                utt.failed_end = end
            self._emit(Failed(utt, f"partial for {utt.id} failed: {e}", final=False))
            return
        finally:
            utt.last_partial_time = time.monotonic()
        if kind == "speculative" and utt.stop is None and self.turn_end is not None:
            # the words up to this silence: a complete request ends the turn sooner
            decision = self.turn_end.judge(result.text)
            utt.turn_end = (end, decision.stop_ms, decision.why)
        # Still before the final (this thread emits both), even if the VAD has meanwhile
        # decided the end: a hypothesis computed from the speech is worth showing.
        # A speculative result the VAD has meanwhile confirmed is the final itself (next job).
        if is_loop(result.text):  # Whisper looping on a short stretch: not worth showing
            log.debug("partial for %s dropped (a decoding loop): '%s'", utt.id, result.text[:60])
            return
        if self.config.partial_interval > 0 and result.text and not (
                kind == "speculative" and utt.stop is not None):
            utt.partials += 1
            self._emit(Hypothesis(utt, result, spent, final=False))

    def _final(self, utt: Utterance) -> None:
        stop = utt.stop
        assert stop is not None
        result, spent = TranscriptionResult("", 0.0, ""), 0.0
        end = min(stop.speech_end_sample, utt.n)
        if (not stop.discarded and end != utt.checked_end and self._checkable(end)
                and not self._have(utt, end)):
            # The turn ended before the stop check ran (a busy machine: the recognizer was
            # still on the previous job): check now, ~100 ms, before the full decode.
            self._check_stop(utt, end)
        if not stop.discarded:
            try:
                result, spent = self._recognize(utt, end, pad=True)
            except (BackendError, ValueError, RuntimeError) as e:
                self._emit(Failed(utt, str(e), final=True))
        self._emit(Hypothesis(utt, result, spent, final=True))
        utt.cache.clear()
