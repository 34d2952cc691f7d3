"""An offline loudspeaker -> room -> microphone simulation for echo tests and benchmarks.

numpy only, no ROS, deterministic. :func:`impulse_response` is the room (a direct path after a
delay, then a decaying reverberation tail); :class:`EchoRun` plays robot turns (and optionally a
user) through it and feeds an :class:`~locara_ros.core.echo.EchoGuard` the way the asr node does:
20 ms mic chunks stamped with their capture time, reference chunks stamped with their play time
and released ``ref_lead_ms`` before it (or late, to reproduce a loaded machine), SPEAKING events
at the play times, and optionally a Silero VAD on the output.

The ROS room node (locara_ros/testing/room_node.py) uses the same impulse response.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RATE = 16000
NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # ROS time of sample 0


def impulse_response(delay_ms: float, gain_db: float, reverb_ms: float = 40.0,
                     reverb_db: float = -10.0, rate: int = RATE, seed: int = 7) -> np.ndarray:
    """Room impulse response: `gain_db` at `delay_ms`, then a decaying noise tail `reverb_ms`
    long whose energy is `reverb_db` below the direct sound."""
    d = int(round(delay_ms * rate / 1000))
    gain = 10 ** (gain_db / 20)
    tail = int(round(reverb_ms * rate / 1000))
    h = np.zeros(d + tail + 1, np.float32)
    h[d] = gain
    if tail:
        rng = np.random.default_rng(seed)
        t = rng.standard_normal(tail) * np.exp(-np.arange(tail) / (tail / 4))
        t *= gain * 10 ** (reverb_db / 20) / np.sqrt(np.sum(t * t))
        h[d + 1:] = t.astype(np.float32)
    return h


@dataclass
class EchoRun:
    """Robot turns (and a user) through the room, fed to an echo guard chunk by chunk."""

    robot: list[np.ndarray]  # what the robot says in each turn (16 kHz float32)
    delay_ms: float = 80.0
    gain_db: float = -9.0
    noise_dbfs: float = -60.0
    lead_s: float = 1.0  # silence before the first turn
    gap_s: float = 1.5  # silence between turns
    user: np.ndarray | None = None  # mixed in during turn `user_turn` (0-based) ...
    user_turn: int = 1
    user_offset_s: float = 2.0  # ... this long after the turn starts
    user_db: float = 0.0
    stop_after_user_s: float | None = None  # the robot stops (barge-in) this long after onset
    chunk: int = 320  # mic and reference chunk, samples
    ref_lead_ms: float = 40.0  # the tts node releases audio this long before its play time
    # A stalled subscriber: no reference arrives during these (start_s, seconds) spans (start:
    # seconds after the first turn starts); what was due then arrives in order at their end.
    ref_stalls: list[tuple[float, float]] = field(default_factory=list)
    # Mic chunks stamped when published, not by a sample clock: each stamp off by up to this
    # (uniform, seeded), as a driver that stamps with ROS time at publish gives.
    stamp_jitter_ms: float = 0.0
    turn_starts: list[int] = field(init=False, default_factory=list)
    turn_ends: list[int] = field(init=False, default_factory=list)
    user_at: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        ref = [np.zeros(int(self.lead_s * RATE), np.float32)]
        n = ref[0].size
        for k, speech in enumerate(self.robot):
            self.turn_starts.append(n)
            end = n + speech.size
            if self.user is not None and k == self.user_turn:
                self.user_at = n + int(self.user_offset_s * RATE)
                if self.stop_after_user_s is not None:
                    end = min(end, self.user_at + int(self.stop_after_user_s * RATE))
            self.turn_ends.append(end)
            ref.append(speech[:end - n])
            gap = np.zeros(int(self.gap_s * RATE), np.float32)
            ref.append(gap)
            n = end + gap.size
        self.ref = np.concatenate(ref)
        h = impulse_response(self.delay_ms, self.gain_db)
        self.echo = np.convolve(self.ref, h)[:self.ref.size].astype(np.float32)
        rng = np.random.default_rng(1)
        noise = rng.standard_normal(self.ref.size).astype(np.float32) * np.float32(
            10 ** (self.noise_dbfs / 20))
        self.mic = self.echo + noise
        self.user_signal = np.zeros_like(self.mic)
        if self.user is not None and self.user_at is not None:
            u = self.user * np.float32(10 ** (self.user_db / 20))
            u = u[:self.mic.size - self.user_at]
            self.user_signal[self.user_at:self.user_at + u.size] = u
            self.mic = self.mic + self.user_signal

    def stamp(self, index: int) -> int:
        return T0 + index * NS // RATE

    def run(self, guard, vad=None, hold: bool = True, holes: list[tuple[float, float]] = ()
            ) -> tuple[np.ndarray, list[int]]:
        """Feed everything to `guard` (EchoGuard.feed with `hold`, else .process); returns the
        guard's output aligned with self.mic (its latency removed) and the VAD's speech starts
        (sample indices) when a Segmenter is given. `holes`: (start_s, end_s) spans of mic audio
        that never arrive (lost messages)."""
        from locara_ros.core.vad import SpeechStart
        c = self.chunk
        lead = int(self.ref_lead_ms * RATE / 1000)
        t0 = self.turn_starts[0]
        stalls = [(t0 + int(a * RATE), t0 + int((a + d) * RATE)) for a, d in self.ref_stalls]

        def released(i: int) -> int:
            r = i - lead
            return next((b for a, b in stalls if a <= r < b), r)
        # (release index, play index, chunk), in order
        refs = [(released(i), i, self.ref[i:i + c]) for i in range(0, self.ref.size, c)]
        events = [(s, True) for s in self.turn_starts] + [(e, False) for e in self.turn_ends]
        events.sort()
        out = np.zeros_like(self.mic)
        starts: list[int] = []
        ri = ei = 0
        lost = [(int(a * RATE), int(b * RATE)) for a, b in holes]
        jitter = np.random.default_rng(2).uniform(-1.0, 1.0, self.mic.size // c + 1) \
            * self.stamp_jitter_ms * 1e6
        where: dict[int, int] = {}  # stamp given -> mic index (outputs are placed by it)

        def place(t: int) -> int:
            return where.pop(t) if t in where else (t - T0) * RATE // NS
        for i in range(0, self.mic.size - c + 1, c):
            arrival = i + c + int(0.03 * RATE)  # a chunk arrives 30 ms after its last sample
            # reference chunks and SPEAKING events released by now
            while ri < len(refs) and refs[ri][0] <= arrival:
                guard.on_reference(refs[ri][2], self.stamp(refs[ri][1]))
                ri += 1
            while ei < len(events) and events[ei][0] - lead <= arrival:
                guard.on_speaking(events[ei][1], self.stamp(events[ei][0]))
                ei += 1
            now = self.stamp(arrival)
            if any(a <= i < b for a, b in lost):
                ready = guard.poll(now) if hold else []
            else:
                t_mic = self.stamp(i) + int(jitter[i // c])
                where[t_mic] = i
                if hold:
                    ready = guard.feed(self.mic[i:i + c], t_mic, now)
                else:
                    ready = [(guard.process(self.mic[i:i + c], t_mic), t_mic)]
            for y, t in ready:
                j = place(t)
                out[j:j + y.size] = y
                if vad is not None:
                    for ev in vad.feed(y, t):
                        if isinstance(ev, SpeechStart):
                            starts.append(int((ev.speech_start_ns - T0) * RATE // NS))
        if hold:
            for y, t in guard.poll(self.stamp(self.mic.size) + NS):
                j = place(t)
                out[j:j + y.size] = y
        lat = guard.latency
        aligned = np.zeros_like(out)
        aligned[:out.size - lat] = out[lat:]
        return aligned, starts

    def turn(self, k: int, seconds: float | None = None) -> slice:
        """Mic samples of turn k's echo (from its first echo sample), or its first `seconds`."""
        a = self.turn_starts[k] + int(self.delay_ms * RATE / 1000)
        b = self.turn_ends[k] + int(self.delay_ms * RATE / 1000)
        if seconds is not None:
            b = min(b, a + int(seconds * RATE))
        return slice(a, b)
