"""locara_ros.core.audio: a resampled stamped stream keeps true stamps."""
from __future__ import annotations

import numpy as np

from locara_ros.core.audio import StampedResampler, StreamResampler

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _clicks(rate: int, seconds: float, at: list[float]) -> np.ndarray:
    x = np.zeros(int(rate * seconds), np.float32)
    for t in at:
        x[int(t * rate)] = 1.0
    return x


def _found(pieces: list[tuple[np.ndarray, int]], rate: int) -> list[float]:
    """Times (s after T0) of the clicks in the stamped output."""
    times = []
    for y, t in pieces:
        for i in np.nonzero(y > 0.3)[0]:
            if not times or (t + i * NS // rate - T0) / NS - times[-1] > 0.05:
                times.append((t + i * NS // rate - T0) / NS)
    return times


def test_resampled_chunks_keep_their_true_time():
    """22.05 kHz tts audio -> 16 kHz in 1024-sample messages, then a 1 s pause (a new turn):
    every click comes out within 1 ms of when it was played. Stamping soxr's output with the
    message it came out of puts it tens of ms late."""
    rate = 22050
    clicks = [0.3, 0.9, 1.5]
    x = _clicks(rate, 2.0, clicks)
    chunks = [(x[i:i + 1024], T0 + i * NS // rate) for i in range(0, x.size, 1024)]
    later = 3.0  # the second turn, after a pause
    chunks += [(c, t + int(later * NS)) for c, t in chunks]
    resampler = StampedResampler(rate, 16000)
    out = [piece for c, t in chunks for piece in resampler.process(c, t)]
    expected = clicks + [c + later for c in clicks]
    found = _found(out, 16000)
    assert len(found) == len(expected)
    assert np.max(np.abs(np.array(found) - expected)) < 0.001, found
    naive, stream = [], StreamResampler(rate, 16000)
    for c, t in chunks[:len(chunks) // 2]:
        y = stream.process(c)
        if y.size:
            naive.append((y, t))
    late = np.array(_found(naive, 16000)) - clicks
    assert late.max() > 0.02, late  # the bug this class fixes: 9-39 ms late, varying


def test_same_rate_passes_chunks_and_stamps_through():
    resampler = StampedResampler(16000, 16000)
    x = np.arange(320, dtype=np.float32)
    [(y, t)] = resampler.process(x, T0 + 7)
    assert t == T0 + 7 and np.array_equal(y, x)
    assert resampler.process(np.zeros(0, np.float32), T0) == [] and resampler.flush() == []


def test_flush_releases_what_the_stream_holds_back():
    """When the robot stops talking, the samples soxr holds back come out at once, stamped
    where they belong (the echo canceller waits for the reference up to the stop)."""
    rate = 22050
    x = np.ones(4096, np.float32) * 0.1
    resampler = StampedResampler(rate, 16000)
    out = [p for i in range(0, x.size, 1024) for p in resampler.process(x[i:i + 1024],
                                                                         T0 + i * NS // rate)]
    got = sum(y.size for y, _ in out)
    assert got < 4096 * 16000 // rate - 100  # held back
    tail = resampler.flush()
    assert tail and tail[0][1] == out[-1][1] + out[-1][0].size * NS // 16000
    assert abs(got + tail[0][0].size - 4096 * 16000 / rate) <= 1
    assert resampler.flush() == []
