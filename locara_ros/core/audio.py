"""Audio formats: the one place PCM is decoded, mixed, resampled and encoded.

Audio always travels with its format (:class:`AudioFormat`). Internally audio is float32 in
[-1, 1], shape (frames,) for mono or (frames, channels). On the wire (audio/mic, audio/tts) it is
S16LE interleaved, as audio_common_msgs/AudioInfo describes it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # high-quality streaming resampler (wheels for x86_64 and aarch64)
    import soxr
except ImportError:  # pragma: no cover - soxr is in requirements.txt
    soxr = None

# sample_format strings of audio_common_msgs/AudioInfo that we can decode, with their dtypes.
SAMPLE_FORMATS = {
    "S16LE": np.dtype("<i2"),
    "S32LE": np.dtype("<i4"),
    "F32LE": np.dtype("<f4"),
    "U8": np.dtype("u1"),
}


class AudioFormatError(ValueError):
    """Audio bytes that do not fit the declared format (the message says how)."""


@dataclass(frozen=True)
class AudioFormat:
    sample_rate: int = 16000
    channels: int = 1
    sample_format: str = "S16LE"

    def __post_init__(self) -> None:
        if self.sample_format.upper() not in SAMPLE_FORMATS:
            raise AudioFormatError(
                f"unsupported sample_format '{self.sample_format}' "
                f"(supported: {', '.join(SAMPLE_FORMATS)})")
        if not 1000 <= int(self.sample_rate) <= 384000:
            raise AudioFormatError(f"unsupported sample_rate {self.sample_rate} Hz")
        if not 1 <= int(self.channels) <= 64:
            raise AudioFormatError(f"unsupported channel count {self.channels}")

    @property
    def dtype(self) -> np.dtype:
        return SAMPLE_FORMATS[self.sample_format.upper()]

    @property
    def frame_bytes(self) -> int:
        return self.dtype.itemsize * self.channels

    @property
    def bitrate(self) -> int:
        """bits per second, as AudioInfo.bitrate wants it."""
        return self.sample_rate * self.frame_bytes * 8

    def duration(self, nbytes: int) -> float:
        return nbytes / (self.frame_bytes * self.sample_rate)


MIC_FORMAT = AudioFormat(16000, 1, "S16LE")


def decode(data: bytes | bytearray | memoryview, fmt: AudioFormat) -> np.ndarray:
    """Bytes -> float32 array (frames,) or (frames, channels). Raises AudioFormatError."""
    raw = bytes(data)
    if len(raw) % fmt.frame_bytes:
        raise AudioFormatError(
            f"{len(raw)} bytes is not a whole number of {fmt.sample_format} frames of "
            f"{fmt.channels} channel(s) ({fmt.frame_bytes} bytes each)")
    x = np.frombuffer(raw, dtype=fmt.dtype)
    if fmt.dtype.kind == "i":
        y = x.astype(np.float32) / float(2 ** (8 * fmt.dtype.itemsize - 1))
    elif fmt.dtype.kind == "u":
        y = (x.astype(np.float32) - 128.0) / 128.0
    else:
        y = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return y.reshape(-1, fmt.channels) if fmt.channels > 1 else y


def to_mono(x: np.ndarray, channel: int = -1) -> np.ndarray:
    """(frames, channels) -> (frames,): pick `channel` (>= 0) or average all (-1)."""
    if x.ndim == 1:
        return x
    if channel >= 0:
        if channel >= x.shape[1]:
            raise AudioFormatError(f"channel {channel} requested, audio has {x.shape[1]}")
        return np.ascontiguousarray(x[:, channel])
    return x.mean(axis=1, dtype=np.float32)


def encode_s16le(x: np.ndarray) -> bytes:
    """float32 [-1, 1] -> S16LE bytes (clipped)."""
    y = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    return (y * 32767.0).round().astype("<i2").tobytes()


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a whole mono float32 signal (for streams use :class:`StreamResampler`)."""
    if rate_in == rate_out or x.size == 0:
        return np.asarray(x, dtype=np.float32)
    if soxr is not None:
        return soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out).astype(np.float32)
    return _linear(np.asarray(x, dtype=np.float32), rate_in, rate_out)


def _linear(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    n_out = int(round(x.size * rate_out / rate_in))
    t = np.arange(n_out, dtype=np.float64) * (rate_in / rate_out)
    return np.interp(t, np.arange(x.size), x).astype(np.float32)


class StreamResampler:
    """Chunk-by-chunk mono resampler that keeps filter state across chunks (no clicks)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._stream = None
        if self.rate_in != self.rate_out and soxr is not None:
            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32")

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.rate_in == self.rate_out:
            return x
        if self._stream is not None:
            return self._stream.resample_chunk(x, last=last)
        return _linear(x, self.rate_in, self.rate_out)


class StampedResampler:
    """A stamped stream (chunks with the time of their first sample) resampled chunk by chunk,
    with stamps that stay true.

    soxr's stream holds samples back and releases them in bursts (22.05 -> 16 kHz in 1024-sample
    chunks: 538, 540, 540, 1080, ... out of 743 each), so output chunk k does not start at input
    chunk k's stamp: stamped that way, the echo reference sat 30-40 ms late and jittered, the
    canceller found a wrong delay (50 ms for 80 ms) and never converged. Output samples follow a
    sample clock anchored at the first input sample; an input stamp more than `resync_s` off
    that clock (a new turn after a pause, lost messages) flushes the stream and re-anchors.
    At equal rates nothing is held back: chunks and stamps pass through unchanged (a consumer
    that needs a smooth clock, like the echo canceller, keeps its own)."""

    def __init__(self, rate_in: int, rate_out: int, resync_s: float = 0.01) -> None:
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self.resync_ns = int(resync_s * 1e9)
        self._res = StreamResampler(self.rate_in, self.rate_out)
        self._anchor: int | None = None  # stamp of input sample 0 since the last anchor
        self._n_in = 0
        self._n_out = 0

    def _out_stamp(self) -> int:
        assert self._anchor is not None
        return self._anchor + self._n_out * 1_000_000_000 // self.rate_out

    def flush(self) -> list[tuple[np.ndarray, int]]:
        """The samples held back, now (the stream ended, e.g. the robot stopped talking): a
        consumer waiting for the reference up to the end must not wait for the next turn."""
        out: list[tuple[np.ndarray, int]] = []
        if self._anchor is not None:
            tail = self._res.process(np.zeros(0, np.float32), last=True)
            if tail.size:
                out.append((tail, self._out_stamp()))
            self._anchor = None
        return out

    def process(self, x: np.ndarray, t_ns: int) -> list[tuple[np.ndarray, int]]:
        """Input chunk stamped t_ns -> the output ready now, as (samples, stamp) pairs."""
        x = np.asarray(x, dtype=np.float32)
        if self.rate_in == self.rate_out:
            return [(x, int(t_ns))] if x.size else []
        out: list[tuple[np.ndarray, int]] = []
        if self._anchor is not None:
            expected = self._anchor + self._n_in * 1_000_000_000 // self.rate_in
            if abs(int(t_ns) - expected) > self.resync_ns:
                out += self.flush()
        if self._anchor is None:
            self._res = StreamResampler(self.rate_in, self.rate_out)
            self._anchor, self._n_in, self._n_out = int(t_ns), 0, 0
        y = self._res.process(x)
        self._n_in += x.size
        if y.size:
            out.append((y, self._out_stamp()))
            self._n_out += y.size
        return out


class Rechunker:
    """Collect arbitrary-length sample blocks, emit fixed-size chunks."""

    def __init__(self, chunk_samples: int) -> None:
        if chunk_samples <= 0:
            raise ValueError("chunk_samples must be positive")
        self.chunk_samples = chunk_samples
        self._buf = np.zeros(0, dtype=np.float32)

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        n = self._buf.size // self.chunk_samples
        out = [self._buf[i * self.chunk_samples:(i + 1) * self.chunk_samples] for i in range(n)]
        self._buf = self._buf[n * self.chunk_samples:]
        return out

    def flush(self) -> np.ndarray:
        rest, self._buf = self._buf, np.zeros(0, dtype=np.float32)
        return rest


def rms_dbfs(x: np.ndarray) -> float:
    """Level in dB relative to full scale; -120 for silence."""
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-6))
