"""Voice activity detection: Silero VAD v6 (the ONNX bundled with faster-whisper) behind a small
state machine with hysteresis.

:class:`SileroVad` scores 32 ms windows (512 samples at 16 kHz, plus 64 samples of context, with
the LSTM state carried from window to window). :class:`Segmenter` turns the scores into
utterances: QUIET -> STARTING -> SPEAKING <-> STOPPING -> QUIET, with start and stop durations,
a minimum speech length, a maximum utterance length and pre-roll padding. It returns its
decisions as soon as the window that decides them has been scored, so a caller can announce
speech start within one window.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from locara_ros.core.models import resolve_silero_vad

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the v6 model looks at
WINDOW_NS = WINDOW * 1_000_000_000 // SAMPLE_RATE
RESYNC_NS = 200_000_000  # stamps further than this from the sample clock re-anchor it


class SileroVad:
    """Streaming Silero VAD v6: one speech probability per 512-sample window."""

    def __init__(self, path: str | Path = "") -> None:
        model = resolve_silero_vad(str(path) if path else "")
        try:
            import onnxruntime
        except ImportError as e:  # pragma: no cover - faster-whisper depends on it
            raise RuntimeError(f"Silero VAD '{model}': onnxruntime is not installed") from e
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        try:
            self.session = onnxruntime.InferenceSession(
                str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeError(f"Silero VAD '{model}' failed to load: {e}") from e
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise RuntimeError(f"Silero VAD '{model}': inputs {sorted(names)} are not those of "
                               "the v6 model (input, h, c)")
        self.path = Path(model)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """Speech probability of one 512-sample float32 window at 16 kHz."""
        if window.shape != (WINDOW,):
            raise ValueError(f"VAD window must be {WINDOW} samples, got {window.shape}")
        x = np.concatenate([self._context, window.astype(np.float32, copy=False)])[None, :]
        out, self._h, self._c = self.session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = window[-CONTEXT:].astype(np.float32, copy=True)
        return float(np.asarray(out).reshape(-1)[0])


@dataclass
class VadConfig:
    """Segmenter settings (durations in milliseconds unless the name says seconds)."""

    threshold: float = 0.5  # probability at or above which a window is speech
    neg_threshold: float = 0.0  # below this a window is silence; 0 -> threshold - 0.15
    start_ms: float = 96.0  # speech must last this long before SPEECH_STARTED
    stop_ms: float = 400.0  # silence this long ends the utterance
    min_speech_ms: float = 200.0  # shorter utterances are reported as discarded
    max_utterance_s: float = 60.0  # force an end after this much audio
    pre_roll_ms: float = 300.0  # audio kept before the start (first syllable)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold <= 0.0:
            self.neg_threshold = max(self.threshold - 0.15, 0.01)
        if self.neg_threshold > self.threshold:
            raise ValueError("VAD neg_threshold must not exceed threshold")
        for name in ("start_ms", "stop_ms", "min_speech_ms", "pre_roll_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAD {name} must be >= 0")
        if self.max_utterance_s <= 0:
            raise ValueError("VAD max_utterance_s must be > 0")


@dataclass
class SpeechStart:
    """Speech began. `audio` holds the pre-roll and the windows that decided the start."""

    speech_start_ns: int  # capture time of the first speech window
    decided_ns: int  # capture time of the end of the window that decided it
    audio: np.ndarray
    speech_offset: int  # index in `audio` of the first speech sample


@dataclass
class SpeechAudio:
    """More audio of the current utterance."""

    audio: np.ndarray
    speech_end_sample: int  # utterance sample index just after the last speech window
    in_silence: bool  # True while the state machine is STOPPING


@dataclass
class SpeechStop:
    """The utterance ended."""

    speech_end_ns: int  # capture time just after the last speech window
    decided_ns: int  # capture time of the end of the window that decided it
    duration: float  # seconds of speech (first to last speech window)
    reason: str  # "silence", "max_length" or the reason given to flush()
    discarded: bool = False  # shorter than min_speech_ms
    speech_end_sample: int = 0
    turn: str = ""  # how the end of the turn was decided ("200 ms of silence after ...")


@dataclass
class _Window:
    samples: np.ndarray
    stamp_ns: int
    prob: float = 0.0


@dataclass
class Segmenter:
    """Feed 16 kHz mono float32 audio with capture stamps; get Start/Audio/Stop decisions."""

    vad: SileroVad
    config: VadConfig = field(default_factory=VadConfig)

    QUIET, STARTING, SPEAKING, STOPPING = "quiet", "starting", "speaking", "stopping"

    def __post_init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_stamp = 0
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything (new stream); the caller ends any utterance first (flush)."""
        self.vad.reset()
        self.state = self.QUIET
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_stamp = 0
        pre = int(round(self.config.pre_roll_ms / 1000 * SAMPLE_RATE / WINDOW))
        self._history: deque[_Window] = deque(maxlen=max(pre, 0))
        self._starting: list[_Window] = []
        self._utt_samples = 0
        self._speech_start_ns = 0
        self._speech_end_ns = 0
        self._speech_end_sample = 0
        self._speech_start_sample = 0
        self._silence_samples = 0
        self.turn_end: tuple[float, str] | None = None  # (stop ms, why) for this utterance

    def end_turn_after(self, stop_ms: float, why: str) -> None:
        """Silence that ends the current utterance, instead of config.stop_ms (the words so
        far are a complete request: sooner; they trail off mid-phrase: later). Reset at the
        next utterance."""
        self.turn_end = (max(0.0, float(stop_ms)), why)

    @property
    def speaking(self) -> bool:
        return self.state in (self.SPEAKING, self.STOPPING)

    def _ms(self, samples: int) -> float:
        return samples * 1000.0 / SAMPLE_RATE

    # ------------------------------------------------------------------ input
    def feed(self, audio: np.ndarray, stamp_ns: int) -> list[object]:
        """Process a chunk whose first sample was captured at `stamp_ns`."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        # The sample clock follows the stamps; a jump (gap in the stream) re-anchors it.
        held_ns = self._buf.size * 1_000_000_000 // SAMPLE_RATE
        if self._buf.size == 0 or abs(self._buf_stamp + held_ns - int(stamp_ns)) > RESYNC_NS:
            self._buf_stamp = int(stamp_ns) - held_ns
        self._buf = np.concatenate([self._buf, audio])
        events: list[object] = []
        while self._buf.size >= WINDOW:
            w = _Window(self._buf[:WINDOW].copy(), self._buf_stamp)
            self._buf = self._buf[WINDOW:]
            self._buf_stamp += WINDOW_NS
            w.prob = self.vad(w.samples)
            self._step(w, events)
        return events

    def flush(self, reason: str) -> list[object]:
        """End the current utterance now (stream ended, format changed, ...)."""
        events: list[object] = []
        if self.speaking:
            self._stop(events, self._speech_end_ns, reason)
        self.state = self.QUIET
        self._starting = []
        return events

    # ------------------------------------------------------------------ machine
    def _step(self, w: _Window, events: list[object]) -> None:
        cfg = self.config
        end_ns = w.stamp_ns + WINDOW_NS
        if self.state == self.QUIET:
            if w.prob >= cfg.threshold:
                self.state = self.STARTING
                self._starting = [w]
            else:
                self._history.append(w)
                return
        elif self.state == self.STARTING:
            if w.prob >= cfg.neg_threshold:
                self._starting.append(w)
            else:  # a blip: back to quiet, the windows become history
                for old in self._starting + [w]:
                    self._history.append(old)
                self._starting = []
                self.state = self.QUIET
                return
        if self.state == self.STARTING:
            if self._ms(len(self._starting) * WINDOW) >= cfg.start_ms:
                self._start(events, end_ns)
            return

        # SPEAKING or STOPPING: every window belongs to the utterance.
        self._utt_samples += WINDOW
        if self.state == self.SPEAKING:
            if w.prob < cfg.neg_threshold:
                self.state = self.STOPPING
                self._silence_samples = WINDOW
            else:
                self._mark_speech(end_ns)
        else:  # STOPPING
            if w.prob >= cfg.threshold:
                self.state = self.SPEAKING
                self._mark_speech(end_ns)
            else:
                self._silence_samples += WINDOW
        events.append(SpeechAudio(w.samples, self._speech_end_sample,
                                  self.state == self.STOPPING))
        stop_ms, why = self.turn_end if self.turn_end is not None else (cfg.stop_ms, "")
        if self.state == self.STOPPING and self._ms(self._silence_samples) >= stop_ms:
            self._stop(events, end_ns, "silence",
                       turn=f"{stop_ms:.0f} ms of silence" + (f" after {why}" if why else ""))
        elif self._utt_samples >= cfg.max_utterance_s * SAMPLE_RATE:
            self._stop(events, end_ns, "max_length")

    def _mark_speech(self, end_ns: int) -> None:
        self._speech_end_ns = end_ns
        self._speech_end_sample = self._utt_samples
        self._silence_samples = 0

    def _start(self, events: list[object], decided_ns: int) -> None:
        pre = list(self._history)
        audio = np.concatenate([x.samples for x in pre + self._starting])
        offset = len(pre) * WINDOW
        self._history.clear()
        self._speech_start_ns = self._starting[0].stamp_ns
        self._speech_start_sample = offset
        self._utt_samples = audio.size
        self._speech_end_ns = self._starting[-1].stamp_ns + WINDOW_NS
        self._speech_end_sample = audio.size
        self._silence_samples = 0
        self._starting = []
        self.state = self.SPEAKING
        self.turn_end = None
        events.append(SpeechStart(self._speech_start_ns, decided_ns, audio, offset))

    def _stop(self, events: list[object], decided_ns: int, reason: str, turn: str = "") -> None:
        # from the samples, not the stamps: a source that stamps on arrival may jump its clock
        # back or forth mid-speech (a network stall), the audio is as long as it is
        duration = max(0.0, (self._speech_end_sample - self._speech_start_sample) / SAMPLE_RATE)
        events.append(SpeechStop(self._speech_end_ns, decided_ns, duration, reason,
                                 discarded=duration * 1000.0 < self.config.min_speech_ms,
                                 speech_end_sample=self._speech_end_sample, turn=turn))
        self.state = self.QUIET
        self._silence_samples = 0
