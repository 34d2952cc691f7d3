"""Microphone audio in for the asr: decode, resample, echo-clean and feed the recognizer.

No ROS here (the asr node passes message fields and a clock). Two pieces:

* :class:`MicDecoder` - the announced format (from an ``AudioInfo``'s fields), decoding of raw
  chunks in it, mixing to mono and resampling to 16 kHz with sample-exact stamps. Touched by one
  thread (the microphone's callbacks).
* :class:`VadFeed` - the bounded queue between those callbacks and the VAD, and the thread that
  drains it: optional echo cancelling against the robot's own voice
  (:class:`~locara_ros.core.echo.EchoGuard`), then :meth:`StreamingRecognizer.feed
  <locara_ros.core.recognizer.StreamingRecognizer.feed>`. An utterance whose audio stops
  arriving is ended after ``stream_timeout`` seconds of *awake* waiting: a process descheduled
  for a second on a busy machine finds its queue empty when it wakes (the callbacks have not run
  yet), and the audio did not stop.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from locara_ros.core.audio import AudioFormat, AudioFormatError, StampedResampler, decode, to_mono
from locara_ros.core.recognizer import StreamingRecognizer
from locara_ros.core.vad import SAMPLE_RATE
from locara_ros.core.worker import BoundedQueue, Empty, Policy

log = logging.getLogger(__name__)

PCM_CODINGS = ("", "wave", "wav", "pcm", "raw", "s16le")


@dataclass(frozen=True)
class _Reset:
    """Queue marker: end the utterance (with this reason) and start over."""

    reason: str


def describe(fmt: AudioFormat) -> str:
    return f"{fmt.sample_rate} Hz {fmt.channels} ch {fmt.sample_format}"


def parse_info(coding_format: str, sample_rate: int, channels: int,
               sample_format: str) -> AudioFormat:
    """An AudioInfo's fields as a format; AudioFormatError says why one is not raw PCM we read."""
    if coding_format.strip().lower() not in PCM_CODINGS:
        raise AudioFormatError(f"coding_format '{coding_format}' is not raw PCM ('wave')")
    return AudioFormat(int(sample_rate), int(channels), (sample_format or "S16LE").strip().upper())


@dataclass
class InfoResult:
    """What a new AudioInfo did: nothing, a first/new format, a change mid-stream, or a refusal."""

    changed: bool
    restart: bool  # the current utterance must end (format changed mid-stream, or refused)
    message: str
    error: bool


class MicDecoder:
    """Chunks in the announced format -> (16 kHz mono float32, stamp of its first sample)."""

    def __init__(self, sample_rate: int) -> None:
        self.fmt: AudioFormat | None = AudioFormat(sample_rate, 1, "S16LE")
        self.problem = ""
        self.resampler = StampedResampler(sample_rate, SAMPLE_RATE)
        self.audio_seen = False
        self.bad_chunks = 0

    def set_info(self, coding_format: str, sample_rate: int, channels: int,
                 sample_format: str) -> InfoResult:
        try:
            fmt = parse_info(coding_format, sample_rate, channels, sample_format)
        except AudioFormatError as e:
            self.fmt, self.problem, self.audio_seen = None, str(e), False
            return InfoResult(True, True, f"audio/mic/info: {e}; audio is ignored until a "
                                          "supported AudioInfo arrives", True)
        if fmt == self.fmt:
            return InfoResult(False, False, "", False)
        restart = self.audio_seen and self.fmt is not None
        if restart:
            result = InfoResult(True, True, f"audio format changed mid-stream: "
                                            f"{describe(self.fmt)} -> {describe(fmt)}; ending the "
                                            "current utterance and continuing in the new format",
                                True)
            self.audio_seen = False
        else:
            result = InfoResult(True, False, f"audio format: {describe(fmt)}", False)
        self.fmt, self.problem = fmt, ""
        self.resampler = StampedResampler(fmt.sample_rate, SAMPLE_RATE)
        return result

    def decode(self, data: bytes, stamp_ns: int) -> list[tuple[np.ndarray, int]]:
        """16 kHz mono pieces of one chunk; AudioFormatError when the chunk cannot be used
        (no supported format announced, or malformed: counted in ``bad_chunks``)."""
        if self.fmt is None:
            raise AudioFormatError(f"audio dropped: {self.problem}")
        try:
            samples = decode(data, self.fmt)
        except AudioFormatError as e:
            self.bad_chunks += 1
            raise AudioFormatError(f"malformed audio chunk dropped ({e}); {self.bad_chunks} "
                                   "so far") from None
        if samples.size == 0:
            return []
        self.audio_seen = True
        return list(self.resampler.process(to_mono(samples), stamp_ns))


class VadFeed:
    """The audio queue and the thread that feeds the recognizer (through the echo guard)."""

    def __init__(self, recognizer: StreamingRecognizer, *, queue_size: int,
                 stream_timeout: float, echo: Any = None,
                 now_ns: Callable[[], int] = time.time_ns, name: str = "asr") -> None:
        self.recognizer = recognizer
        self.echo = echo  # an EchoGuard, or None
        self.stream_timeout = float(stream_timeout)
        self.now_ns = now_ns
        self.frame_id = ""
        self._echo_lock = threading.Lock()
        self._tts_resampler: StampedResampler | None = None
        self._tts_fmt: AudioFormat | None = None
        # the VAD must keep up with live audio: a full queue drops its oldest chunk (counted)
        self.queue: BoundedQueue[Any] = BoundedQueue(
            f"{name}-audio", max(10, queue_size), Policy.DROP_OLDEST, on_drop=self._dropped)
        self._last_drop_log = self._last_failure_log = 0.0
        self._failures = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-vad", daemon=True)

    def _dropped(self, _: Any) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            self._last_drop_log = now
            log.warning(f"VAD queue full: {self.queue.counts.dropped} chunk(s) dropped")

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ producers
    def put(self, samples: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        self.queue.put((samples, stamp_ns, frame_id))

    def restart(self, reason: str = "audio format changed") -> None:
        """End the utterance after the audio queued so far and start over (the format changed
        or became unusable; the node was deactivated)."""
        self.queue.put(_Reset(reason))

    # ------------------------------------------------------------------ echo reference
    def set_reference_format(self, fmt: AudioFormat) -> None:
        with self._echo_lock:
            if fmt != self._tts_fmt:
                self._tts_fmt = fmt
                self._tts_resampler = StampedResampler(fmt.sample_rate, SAMPLE_RATE)

    def reference(self, data: bytes, stamp_ns: int) -> None:
        """A chunk of the robot's own voice (audio/tts) in the reference format."""
        if self.echo is None:
            return
        with self._echo_lock:
            if self._tts_fmt is None:
                self._tts_fmt = AudioFormat(22050, 1, "S16LE")
                self._tts_resampler = StampedResampler(22050, SAMPLE_RATE)
            x = to_mono(decode(data, self._tts_fmt))  # AudioFormatError to the caller
            for ref, t in self._tts_resampler.process(x, stamp_ns):
                self.echo.on_reference(ref, t)

    def speaking(self, started: bool, stamp_ns: int) -> str:
        """The robot started or stopped speaking; returns the echo summary (for the log)."""
        if self.echo is None:
            return ""
        with self._echo_lock:
            if not started and self._tts_resampler is not None:
                # the resampler's last samples: the mic audio up to the stop waits for them
                for ref, t in self._tts_resampler.flush():
                    self.echo.on_reference(ref, t)
            self.echo.on_speaking(started, stamp_ns)
            return self.echo.summary()

    # ------------------------------------------------------------------ the VAD thread
    def _loop(self) -> None:
        # `waited`: seconds this loop has waited for audio while awake (each wait counts at
        # most 0.2 s): only that counts toward stream_timeout.
        waited, last = 0.0, time.monotonic()
        while not self._closing.is_set():
            # mic audio held for its echo reference is released within ref_wait_ms
            holding = self.echo is not None and self.echo.holding
            try:
                item = self.queue.get(timeout=0.01 if holding else 0.1)
            except Empty:
                now = time.monotonic()
                waited += min(now - last, 0.2)
                last = now
                if holding:
                    self._feed(None, 0)
                elif self.recognizer.speaking and waited > self.stream_timeout:
                    log.warning(f"no audio for {waited:.1f} s mid-utterance: ending it "
                                "(stream_timeout)")
                    self.recognizer.flush("audio stopped")
                continue
            waited, last = 0.0, time.monotonic()
            try:
                if isinstance(item, _Reset):
                    self.recognizer.flush(item.reason)
                    self.recognizer.reset()
                    continue
                samples, stamp_ns, frame_id = item
                self.frame_id = frame_id
                self._feed(samples, stamp_ns)
            except Exception as e:  # noqa: BLE001 - the VAD thread must survive anything
                self._failures += 1
                if time.monotonic() - self._last_failure_log >= 5.0:
                    self._last_failure_log = time.monotonic()
                    log.error(f"VAD failed on a chunk ({self._failures} so far): "
                              f"{type(e).__name__}: {e}")

    def _feed(self, samples: np.ndarray | None, stamp_ns: int) -> None:
        """Mic audio -> [echo guard] -> VAD. With echo cancelling, a chunk goes on once the
        robot's reference for it has arrived (EchoGuard.feed), so it may come out later."""
        if self.echo is None:
            if samples is not None:
                self.recognizer.feed(samples, stamp_ns, self.frame_id)
            return
        now = self.now_ns()
        with self._echo_lock:
            ready = (self.echo.feed(samples, stamp_ns, now) if samples is not None
                     else self.echo.poll(now))
        for cleaned, t_ns in ready:
            self.recognizer.feed(cleaned, t_ns, self.frame_id)
