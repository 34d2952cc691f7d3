"""Voice output engine (no rclpy): sentence queue, synthesis worker, real-time player, sinks.

Data path::

    say(text) / feed(delta) -> SentenceSplitter -> per-utterance sentence queues
        -> synthesis thread (Synthesizer, one sentence at a time, cancellable)
        -> segment queue -> player thread (paced like a loudspeaker, ~20 ms chunks)
        -> SpeakerGate (enable, volume cap, speech-time budget) -> sinks (topic, PortAudio)

The player releases each chunk `lead` seconds before its play time and stamps it with that play
time, so "what was actually spoken" is well defined: the sentences fully played plus the words of
the current sentence up to the played fraction (characters scaled by time; Piper voices without
alignments give no better). :meth:`Speaker.stop` stops at once: nothing is written to a sink after
it returns, the queues are empty, the device buffer is dropped.
"""
from __future__ import annotations

import abc
import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional

import numpy as np

from locara_ros.core.audio import StreamResampler
from locara_ros.core.backends.tts import Synthesizer
from locara_ros.core.sentences import SentenceSplitter

log = logging.getLogger(__name__)


class PlaybackError(RuntimeError):
    """An output device could not be opened or written (the message names it)."""


# ---------------------------------------------------------------------------------------- sinks
class AudioSink(abc.ABC):
    """Where played audio goes. Called from the player thread only."""

    name = "sink"

    @abc.abstractmethod
    def write(self, samples: np.ndarray, play_time: float) -> None:
        """Mono float32 at the synthesizer rate; play_time = monotonic time of its first sample."""

    def flush(self) -> None:  # noqa: B027 - optional
        """Drop anything buffered and not yet played (stop, barge-in)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the output."""


class _TimedResampler:
    """Stream resampler that keeps output play times contiguous across its internal delay.

    Input blocks come with their play times; output blocks get the play time of their first
    output sample (counted in output samples), restarting at a gap (a pause between sentences).
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self.reset()

    def reset(self) -> None:
        self._rs = StreamResampler(self.rate_in, self.rate_out)
        self._t_in: Optional[float] = None  # expected play time of the next input sample
        self._t_out = 0.0

    def process(self, samples: np.ndarray, play_time: float) -> List[tuple[np.ndarray, float]]:
        out = []
        if self._t_in is not None and abs(play_time - self._t_in) > 1e-3:
            tail = self._rs.process(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                out.append((tail, self._t_out))
            self._rs = StreamResampler(self.rate_in, self.rate_out)
            self._t_in = None
        if self._t_in is None:
            self._t_out = play_time
        y = self._rs.process(samples)
        if y.size:
            out.append((y, self._t_out))
            self._t_out += y.size / self.rate_out
        self._t_in = play_time + samples.size / self.rate_in
        return out


class CallbackSink(AudioSink):
    """Hands paced chunks to a callback (the tts node publishes them on audio/tts).

    Resamples from the synthesizer rate to `rate_out` on the way (stream resampler, no clicks);
    the play times handed on are contiguous in output samples.
    """

    name = "topic"

    def __init__(self, emit: Callable[[np.ndarray, float], None], rate_in: int,
                 rate_out: int = 0, peak: float = 1.0) -> None:
        self.emit = emit
        self.rate_out = int(rate_out) or int(rate_in)
        self.peak = float(peak)  # resampling overshoots a clipped input: clip again after it
        self._resampler = _TimedResampler(rate_in, self.rate_out)

    def write(self, samples: np.ndarray, play_time: float) -> None:
        for out, t in self._resampler.process(samples, play_time):
            self.emit(np.clip(out, -self.peak, self.peak), t)

    def flush(self) -> None:
        self._resampler.reset()


class DeviceSink(AudioSink):
    """A PortAudio output device through sounddevice.

    `device`: a PortAudio device index or (part of) its name; "" = the system default.
    `rate`: the device rate (0 = the device's default); audio is resampled to it.
    Opening fails with :class:`PlaybackError` naming the device (e.g. a machine with no sound
    card), which the node reports at start-up.
    """

    name = "device"

    def __init__(self, rate_in: int, device: str = "", rate: int = 0, channels: int = 1,
                 latency: float | str = "low", peak: float = 1.0) -> None:
        self.peak = float(peak)  # resampling overshoots a clipped input: clip again after it
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: libportaudio missing
            raise PlaybackError(f"audio output device '{device or 'default'}': PortAudio is "
                                f"not available ({e}); install libportaudio2") from e
        self._sd = sd
        dev: int | str | None = None
        if str(device).strip():
            dev = int(device) if str(device).strip().isdigit() else str(device)
        try:
            info = sd.query_devices(dev, "output")
            self.rate_out = int(rate) or int(info["default_samplerate"])
            self.channels = max(1, int(channels))
            self._stream = sd.OutputStream(samplerate=self.rate_out, channels=self.channels,
                                           dtype="float32", device=dev, latency=latency)
            self._stream.start()
        except Exception as e:
            raise PlaybackError(
                f"audio output device '{device or 'default'}' could not be opened: {e} "
                f"(devices: {self.describe_devices()})") from e
        self.device_name = str(info.get("name", device))
        self.rate_in = int(rate_in)
        self._resampler = StreamResampler(self.rate_in, self.rate_out)

    def describe_devices(self) -> str:
        try:
            devs = [f"{i}: {d['name']}" for i, d in enumerate(self._sd.query_devices())
                    if d.get("max_output_channels", 0) > 0]
        except Exception:  # noqa: BLE001
            return "unknown"
        return "; ".join(devs) if devs else "none"

    def write(self, samples: np.ndarray, play_time: float) -> None:
        out = np.clip(self._resampler.process(samples), -self.peak, self.peak)
        if not out.size:
            return
        frames = np.repeat(out[:, None], self.channels, axis=1) if self.channels > 1 \
            else out[:, None]
        try:
            self._stream.write(np.ascontiguousarray(frames, dtype=np.float32))
        except Exception as e:
            raise PlaybackError(f"audio output device '{self.device_name}': {e}") from e

    def flush(self) -> None:
        try:
            self._stream.abort()  # drops what the device has buffered
            self._stream.start()
        except Exception as e:  # noqa: BLE001
            log.warning("audio device flush failed: %s", e)
        self._resampler = StreamResampler(self.rate_in, self.rate_out)

    def close(self) -> None:
        try:
            self._stream.abort()
            self._stream.close()
        except Exception:  # noqa: BLE001
            pass


# ----------------------------------------------------------------------------------------- gate
class SpeakerGate:
    """Protects the loudspeaker from a misbehaving publisher.

    * `enabled`: when false, nothing is synthesized or played (text is dropped and logged);
    * `volume` (gain) is capped at `max_volume`, and every sample is clipped to +-max_volume;
    * at most `max_speech_seconds` of audio in any `window_seconds`: sentences beyond the
      budget are dropped (reported once per utterance).
    """

    def __init__(self, enabled: bool = True, volume: float = 1.0, max_volume: float = 1.0,
                 max_speech_seconds: float = 120.0, window_seconds: float = 60.0) -> None:
        if not 0.0 < max_volume <= 1.0:
            raise ValueError(f"max_volume must be in (0, 1], got {max_volume}")
        if max_speech_seconds <= 0 or window_seconds <= 0:
            raise ValueError("max_speech_seconds and window_seconds must be positive")
        self.enabled = bool(enabled)
        self.max_volume = float(max_volume)
        self.volume = float(volume)
        self.max_speech_seconds = float(max_speech_seconds)
        self.window_seconds = float(window_seconds)
        self._spoken: Deque[tuple[float, float]] = collections.deque()  # (start, duration)

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"volume must be >= 0, got {value}")
        self._volume = min(float(value), self.max_volume)

    def used(self, now: float) -> float:
        """Seconds of speech admitted within the window ending at `now`."""
        while self._spoken and self._spoken[0][0] + self._spoken[0][1] < now - self.window_seconds:
            self._spoken.popleft()
        return sum(d for _, d in self._spoken)

    def admit(self, duration: float, now: float) -> bool:
        """May `duration` seconds of speech start at `now`? Records it if so."""
        if not self.enabled:
            return False
        if self.used(now) + duration > self.max_speech_seconds:
            return False
        self._spoken.append((now, duration))
        return True

    def apply(self, samples: np.ndarray) -> np.ndarray:
        y = samples * np.float32(self._volume)
        return np.clip(y, -self.max_volume, self.max_volume).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------- barge-in
class BargeInMonitor:
    """Decides when user speech is a barge-in: it lasted `min_speech` seconds (a cough does not).

    Times are in nanoseconds of one clock (ROS time): onset = the capture time of the speech start,
    so the VAD's own decision delay counts towards the minimum.
    """

    def __init__(self, min_speech: float = 0.2, enabled: bool = True) -> None:
        self.min_speech_ns = int(max(0.0, min_speech) * 1e9)
        self.enabled = bool(enabled)  # off: user speech never stops the robot
        self._active: Dict[str, int] = {}  # user utterance id -> onset ns

    def speech_started(self, utterance_id: str, onset_ns: int) -> None:
        self._active[utterance_id] = int(onset_ns)

    def speech_stopped(self, utterance_id: str) -> None:
        self._active.pop(utterance_id, None)

    def reset(self) -> None:
        self._active.clear()

    def due(self, now_ns: int) -> Optional[tuple[str, float]]:
        """(user utterance id, seconds of speech so far) once one has lasted long enough."""
        for utt, onset in self._active.items():
            if now_ns - onset >= self.min_speech_ns:
                return utt, (now_ns - onset) / 1e9
        return None

    def check(self, speaker: Speaker, now_ns: int) -> bool:
        """Stop `speaker` (StopKind.BARGE_IN) when user speech has lasted long enough while it
        speaks; one barge-in per user utterance. True when it stopped it."""
        due = self.due(now_ns) if self.enabled else None
        if due is None or not speaker.speaking:
            return False
        user_utt, seconds = due
        self.speech_stopped(user_utt)
        speaker.stop(f"barge-in: user speech {user_utt or '?'} for {seconds:.2f} s",
                     kind=StopKind.BARGE_IN)
        return True


def apply_setting(name: str, value: object, *, gate: Optional[SpeakerGate],
                  speaker: Optional[Speaker], monitor: BargeInMonitor) -> None:
    """A run-time tts parameter (already checked: TtsSettings.runtime_refusal) takes effect."""
    if name == "speaker_enabled" and gate is not None:
        gate.enabled = bool(value)
        if not value and speaker is not None:
            speaker.stop("speaker disabled", kind=StopKind.DISABLED)
    elif name == "volume" and gate is not None:
        gate.volume = float(value)  # capped at max_volume by the gate
    elif name == "barge_in":
        monitor.enabled = bool(value)
    elif name == "barge_in_min_speech":
        monitor.min_speech_ns = int(float(value) * 1e9)


def open_sinks(rate_in: int, *, publish: Callable[[np.ndarray, float], None] | None = None,
               publish_rate: int = 0, device: str | None = None, device_rate: int = 0,
               peak: float = 1.0) -> tuple[List[AudioSink], List[str]]:
    """The tts outputs: a topic (`publish` at `publish_rate`) and/or a sound `device` (None: no
    device). A device that cannot be opened is an error kept in the returned list when the
    topic remains, and a PlaybackError when nothing would be left."""
    sinks: List[AudioSink] = []
    errors: List[str] = []
    if publish is not None:
        sinks.append(CallbackSink(publish, rate_in, publish_rate or rate_in, peak=peak))
    if device is not None:
        try:
            sinks.append(DeviceSink(rate_in, device, device_rate, peak=peak))
        except PlaybackError as e:
            if not sinks:
                raise PlaybackError(f"{e}; with publish_audio=false there is no output left "
                                    "(set play_on_device=false to publish only)") from e
            errors.append(f"{e}; publishing on audio/tts only")
    return sinks, errors


# ------------------------------------------------------------------------------------- pipeline
def spoken_prefix(text: str, fraction: float) -> str:
    """The words of `text` played by `fraction` of its audio (whole words only)."""
    if fraction >= 0.999:
        return text
    if fraction <= 0.0:
        return ""
    cut = int(len(text) * fraction)
    prefix = text[:cut]
    if cut < len(text) and not text[cut].isspace():
        prefix = prefix.rsplit(None, 1)[0] if len(prefix.split()) > 1 else ""
    return prefix.strip()


class StopKind(str, enum.Enum):
    """Why an utterance stopped playing (StopReport.kind); `reason` says it in words."""

    FINISHED = "finished"  # played to its end
    BARGE_IN = "barge-in"  # the user talked over it
    STOP = "stop"  # a stop phrase or voice/stop
    CANCELLED = "cancelled"  # its reply was cancelled
    DISABLED = "disabled"  # speaker_enabled was switched off
    SHUTDOWN = "shutdown"


@dataclass
class StopReport:
    utterance_id: str
    spoken: str  # what was actually played of this utterance
    full_text: str  # everything that had been queued for it so far (for logs)
    reason: str
    kind: StopKind = StopKind.STOP


@dataclass
class _Segment:
    utterance_id: str
    text: str
    audio: Optional[np.ndarray]  # None: end-of-utterance marker
    pos: int = 0
    start: float = 0.0  # play time of the first sample


@dataclass
class _Stream:
    utterance_id: str
    splitter: SentenceSplitter
    sentences: Deque[str] = field(default_factory=collections.deque)
    final: bool = False
    last_activity: float = 0.0
    next_seq: int = 0
    texts: List[str] = field(default_factory=list)


class SpeakerListener:
    """What the engine tells its owner (the tts node). Called from worker threads."""

    def on_started(self, utterance_id: str, first_sentence: str, play_time: float) -> None:
        """The first audio of an utterance is being played."""

    def on_stopped(self, report: StopReport) -> None:
        """An utterance finished playing, or was stopped/cancelled (report.reason)."""

    def on_error(self, utterance_id: str, detail: str) -> None:
        """A sentence was dropped (synthesis failed, gate closed, budget exceeded)."""


class Speaker:
    """The voice-out engine: queue text, synthesize sentence by sentence, play in real time."""

    def __init__(self, synthesizer: Synthesizer, sinks: List[AudioSink], *,
                 gate: Optional[SpeakerGate] = None, listener: Optional[SpeakerListener] = None,
                 chunk_ms: float = 20.0, lead_ms: float = 40.0, max_sentence_chars: int = 250,
                 max_text_chars: int = 5000, max_queued_sentences: int = 200,
                 reply_timeout: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.synth = synthesizer
        self.rate = int(synthesizer.sample_rate)
        self.sinks = list(sinks)
        self.gate = gate or SpeakerGate()
        self.listener = listener or SpeakerListener()
        self.chunk = max(1, int(self.rate * chunk_ms / 1000.0))
        self.lead = max(0.0, lead_ms / 1000.0)
        self.max_sentence_chars = int(max_sentence_chars)
        self.max_text_chars = int(max_text_chars)
        self.max_queued_sentences = int(max_queued_sentences)
        self.reply_timeout = float(reply_timeout)
        self.clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._streams: collections.OrderedDict[str, _Stream] = collections.OrderedDict()
        self._segments: Deque[_Segment] = collections.deque()
        self._current: Optional[_Segment] = None
        self._playing_utt: Optional[str] = None  # utterance whose audio has started
        self._played: List[str] = []  # sentences of _playing_utt fully played
        self._synthesizing: Optional[str] = None
        self._epoch = 0
        self._next_play = 0.0
        self._say_count = 0
        self._budget_reported: set[str] = set()
        # utterances stopped or cancelled: late chunks for them are ignored
        self._dropped: Deque[str] = collections.deque(maxlen=64)
        self._running = True
        self._synth_thread = threading.Thread(target=self._synth_loop, name="tts-synth")
        self._play_thread = threading.Thread(target=self._play_loop, name="tts-player")
        self._synth_thread.start()
        self._play_thread.start()

    # ---------------------------------------------------------------- input
    def say(self, text: str, utterance_id: str = "") -> str:
        """Queue a whole text; returns the utterance id it got. Raises ValueError on bad text."""
        text = self._check_text(text)
        with self._cond:
            if not utterance_id:
                self._say_count += 1
                utterance_id = f"say-{self._say_count}"
            if utterance_id in self._streams:
                raise ValueError(f"utterance '{utterance_id}' is already queued")
            stream = self._new_stream(utterance_id)
            self._add_sentences(stream, stream.splitter.feed(text) + stream.splitter.flush())
            stream.final = True
            self._cond.notify_all()
        return utterance_id

    def feed(self, utterance_id: str, seq: int, text: str, final: bool) -> None:
        """One streamed reply chunk (voice/reply). Gaps in seq are logged, text still used."""
        if not self.gate.enabled:
            raise ValueError("speaker is disabled (speaker_enabled=false)")
        with self._cond:
            if utterance_id in self._dropped:
                return  # stopped/cancelled: the parser may still be sending its last chunks
            stream = self._streams.get(utterance_id)
            if stream is None:
                if text and len(text) > self.max_text_chars:
                    raise ValueError(f"reply chunk of {len(text)} characters is too long")
                stream = self._new_stream(utterance_id)
            if seq != stream.next_seq:
                log.warning("reply %s: chunk seq %d, expected %d (chunks lost or reordered)",
                            utterance_id, seq, stream.next_seq)
            stream.next_seq = seq + 1
            stream.last_activity = self.clock()
            if sum(len(t) for t in stream.texts) + len(text) > self.max_text_chars:
                raise ValueError(f"reply {utterance_id} exceeds {self.max_text_chars} characters")
            sentences = stream.splitter.feed(text)
            if final:
                sentences += stream.splitter.flush()
                stream.final = True
            self._add_sentences(stream, sentences)
            self._cond.notify_all()

    def cancel(self, utterance_id: str, reason: str = "cancelled",
               kind: StopKind = StopKind.CANCELLED) -> Optional[StopReport]:
        """Drop everything held for one utterance; stops it if it is playing."""
        with self._cond:
            return self._drop(utterance_id, reason, kind)

    def stop(self, reason: str = "stop", keep: str = "",
             kind: StopKind = StopKind.STOP) -> Optional[StopReport]:
        """Stop now and flush everything queued (except utterance `keep`, e.g. the reply that
        confirms a stop). Returns what was being spoken, if anything."""
        with self._cond:
            if keep and (keep in self._streams or self._playing_utt == keep or any(
                    s.utterance_id == keep for s in self._segments)):
                report = None
                for utt in [u for u in self._queued_utterances() if u != keep]:
                    report = self._drop(utt, reason, kind) or report
                return report
            return self._drop(None, reason, kind)

    def _queued_utterances(self) -> List[str]:
        utts = list(self._streams) + [s.utterance_id for s in self._segments]
        for utt in (self._playing_utt, self._synthesizing):
            if utt:
                utts.append(utt)
        return list(dict.fromkeys(utts))

    @property
    def speaking(self) -> bool:
        """True while an utterance's audio is playing (or paused between its sentences)."""
        with self._cond:
            return self._playing_utt is not None

    @property
    def busy(self) -> bool:
        """True while anything is queued, being synthesized or played."""
        with self._cond:
            return bool(self._playing_utt or self._streams or self._segments or self._current
                        or self._synthesizing)

    @property
    def current_utterance(self) -> Optional[str]:
        with self._cond:
            return self._playing_utt

    def spoken_so_far(self) -> str:
        with self._cond:
            return self._spoken_text(self.clock())

    def close(self) -> None:
        with self._cond:
            self._drop(None, "shutdown", StopKind.SHUTDOWN)
            self._running = False
            self._cond.notify_all()
        self._synth_thread.join(10.0)
        self._play_thread.join(5.0)
        for sink in self.sinks:
            sink.close()

    # ---------------------------------------------------------------- internals (hold _cond)
    def _check_text(self, text: str) -> str:
        if not self.gate.enabled:
            raise ValueError("speaker is disabled (speaker_enabled=false)")
        text = (text or "").strip()
        if not text:
            raise ValueError("empty text")
        if len(text) > self.max_text_chars:
            raise ValueError(f"text of {len(text)} characters exceeds max_text_chars "
                             f"({self.max_text_chars})")
        return text

    def _new_stream(self, utterance_id: str) -> _Stream:
        stream = _Stream(utterance_id, SentenceSplitter(self.max_sentence_chars),
                         last_activity=self.clock())
        self._streams[utterance_id] = stream
        return stream

    def _add_sentences(self, stream: _Stream, sentences: List[str]) -> None:
        queued = sum(len(s.sentences) for s in self._streams.values())
        for s in sentences:
            if queued >= self.max_queued_sentences:
                log.error("sentence queue full (%d): dropping %r", queued, s[:40])
                continue
            stream.sentences.append(s)
            stream.texts.append(s)
            queued += 1

    def _drop(self, utterance_id: Optional[str], reason: str,
              kind: StopKind = StopKind.STOP) -> Optional[StopReport]:
        """Remove an utterance (or all); return the report of the one playing, if hit."""
        now = self.clock()
        hit_playing = self._playing_utt is not None and utterance_id in (None, self._playing_utt)
        report = None
        if hit_playing:
            spoken = self._spoken_text(now)
            full = " ".join(self._queued_texts(self._playing_utt))
            report = StopReport(self._playing_utt, spoken, full or spoken, reason, kind)
        for utt in ([utterance_id] if utterance_id is not None else
                    set(self._streams) | {s.utterance_id for s in self._segments}
                    | {self._playing_utt, self._synthesizing}):
            if utt and utt not in self._dropped:
                self._dropped.append(utt)
        if utterance_id is None:
            self._streams.clear()
            self._segments.clear()
            self._epoch += 1
        else:
            self._streams.pop(utterance_id, None)
            self._segments = collections.deque(
                s for s in self._segments if s.utterance_id != utterance_id)
            if self._synthesizing == utterance_id:
                self._epoch += 1
        if hit_playing or (self._current is not None and utterance_id in
                           (None, self._current.utterance_id)):
            self._current = None
            for sink in self.sinks:
                sink.flush()
            self._next_play = 0.0
        if hit_playing:
            self._playing_utt = None
            self._played = []
            self.listener.on_stopped(report)
        self._cond.notify_all()
        return report

    def _queued_texts(self, utterance_id: str) -> List[str]:
        stream = self._streams.get(utterance_id)
        if stream is not None:
            return list(stream.texts)
        texts = list(self._played)
        if self._current is not None and self._current.utterance_id == utterance_id:
            texts.append(self._current.text)
        texts += [s.text for s in self._segments if s.utterance_id == utterance_id and s.text]
        return texts

    def _spoken_text(self, now: float) -> str:
        parts = list(self._played)
        cur = self._current
        if cur is not None and cur.audio is not None and cur.utterance_id == self._playing_utt \
                and cur.pos > 0:
            fraction = (now - cur.start) * self.rate / max(1, cur.audio.size)
            partial = spoken_prefix(cur.text, fraction)
            if partial:
                parts.append(partial)
        return " ".join(parts)

    # ---------------------------------------------------------------- synthesis thread
    def _next_sentence(self) -> Optional[tuple[str, str, int]]:
        """Wait for the next sentence in order (holds _cond while waiting)."""
        while self._running:
            stream = next(iter(self._streams.values()), None)
            if stream is None:
                self._cond.wait(0.5)
                continue
            if stream.sentences:
                return stream.utterance_id, stream.sentences.popleft(), self._epoch
            if stream.final:
                del self._streams[stream.utterance_id]
                self._segments.append(_Segment(stream.utterance_id, "", None))
                self._cond.notify_all()
                continue
            if self.clock() - stream.last_activity > self.reply_timeout:
                log.warning("reply %s: no chunk for %.1f s and no final chunk; speaking what "
                            "arrived", stream.utterance_id, self.reply_timeout)
                self._add_sentences(stream, stream.splitter.flush())
                stream.final = True
                continue
            self._cond.wait(0.1)
        return None

    def _synth_loop(self) -> None:
        while True:
            with self._cond:
                item = self._next_sentence()
                if item is None:
                    return
                utt, sentence, epoch = item
                self._synthesizing = utt
            audio = None
            try:
                parts = [a for a in self.synth.synthesize(sentence)]
                audio = np.concatenate(parts) if parts else None
            except Exception as e:  # noqa: BLE001 - a bad sentence must not kill the worker
                log.error("synthesis failed: %s", e)
                self.listener.on_error(utt, f"synthesis failed: {e}")
            with self._cond:
                self._synthesizing = None
                if epoch != self._epoch or not self._running:
                    continue  # stopped or cancelled while synthesizing
                if audio is not None and audio.size:
                    self._segments.append(_Segment(utt, sentence, audio.astype(np.float32)))
                self._cond.notify_all()

    # ---------------------------------------------------------------- player thread
    def _play_loop(self) -> None:
        while True:
            with self._cond:
                if not self._running:
                    return
                now = self.clock()
                if self._current is None:
                    if not self._segments:
                        if self._playing_utt is not None:
                            self._fill_gap(now)  # mid-utterance: the next sentence is not ready
                        else:
                            self._cond.wait(0.05)
                        continue
                    seg = self._segments[0]
                    if seg.audio is None:  # end of utterance: wait until its audio has played
                        if now < self._next_play:
                            self._cond.wait(self._next_play - now)
                            continue
                        self._segments.popleft()
                        self._finish_utterance(seg.utterance_id)
                        continue
                    if seg.utterance_id != self._playing_utt and self._playing_utt is not None:
                        # the previous utterance ended without marker (cancelled): close it
                        if now < self._next_play:
                            self._cond.wait(self._next_play - now)
                            continue
                        self._finish_utterance(self._playing_utt)
                    self._segments.popleft()
                    duration = seg.audio.size / self.rate
                    if not self.gate.admit(duration, now):
                        self._gate_refused(seg, duration, now)
                        continue
                    self._current = seg
                    if self._next_play < now:
                        # nothing was playing: start now, but released `lead` ahead of its play
                        # time like every other chunk, so a listener (a remote player, the echo
                        # reference) has it before it is due
                        self._next_play = now + self.lead
                    seg.start = self._next_play
                    if self._playing_utt != seg.utterance_id:
                        self._playing_utt = seg.utterance_id
                        self._played = []
                        self.listener.on_started(seg.utterance_id, seg.text, seg.start)
                seg = self._current
                wait = self._next_play - self.lead - now
                if wait > 0.0005:
                    self._cond.wait(wait)
                    continue
                block = self.gate.apply(seg.audio[seg.pos:seg.pos + self.chunk])
                failed = self._play(block)
                if failed:
                    self.listener.on_error(seg.utterance_id, failed)
                seg.pos += block.size
                if seg.pos >= seg.audio.size:
                    self._played.append(seg.text)
                    self._current = None

    def _fill_gap(self, now: float) -> None:
        """Between two sentences of one utterance whose next sentence is still being synthesized
        (or generated): play silence, paced like speech. The sinks then say what the robot
        plays, silence included: the asr's echo guard, which waits for the reference of every
        moment the robot speaks, would otherwise take the missing reference for a late one and
        judge the user's voice against the robot's loudest recent speech (bench/stop.py: a
        "freeze" said in such a gap was gated until the reply ended, 7 s)."""
        if self._next_play < now:
            self._next_play = now + self.lead
        wait = self._next_play - self.lead - now
        if wait > 0.0005:
            self._cond.wait(wait)
            return
        self._play(np.zeros(self.chunk, np.float32))

    def _play(self, block: np.ndarray) -> str:
        """Write one block to every sink at the next play time and move that on; '' or why the
        output failed (logged; a failing sink must not kill the player)."""
        play_time = self._next_play
        self._next_play = play_time + block.size / self.rate
        try:
            for sink in self.sinks:
                sink.write(block, play_time)
        except Exception as e:  # noqa: BLE001 - a failing sink must not kill the player
            log.error("audio output failed: %s", e)
            return f"audio output failed: {e}"
        return ""

    def _gate_refused(self, seg: _Segment, duration: float, now: float) -> None:
        if not self.gate.enabled:
            detail = "speaker disabled"
        else:
            detail = (f"speech-time budget exceeded ({self.gate.used(now):.1f} s of "
                      f"{self.gate.max_speech_seconds:.0f} s in {self.gate.window_seconds:.0f} "
                      f"s); dropped {duration:.1f} s")
        log.error("not playing %r: %s", seg.text[:40], detail)
        if seg.utterance_id not in self._budget_reported:
            self._budget_reported.add(seg.utterance_id)
            self.listener.on_error(seg.utterance_id, detail)

    def _finish_utterance(self, utterance_id: str) -> None:
        self._budget_reported.discard(utterance_id)
        if self._playing_utt != utterance_id:
            return  # nothing of it was played
        report = StopReport(utterance_id, " ".join(self._played), " ".join(self._played),
                            "finished", StopKind.FINISHED)
        self._playing_utt = None
        self._played = []
        self.listener.on_stopped(report)
