"""Keep the robot from hearing itself (no rclpy).

:class:`EchoGuard` sits between the microphone and the VAD/ASR. Modes: ``off`` and
``reference``. (``half_duplex``, a gate with no cancellation, was removed: ``reference`` falls
back to the same gate whenever it has no echo path, so it is never worse.)

``reference`` uses the robot's own output (audio/tts, stamped with play times) as the reference:

1. delay estimation: GCC-PHAT cross-correlation of mic and reference over the last
   ``xcorr_window_s`` seconds finds the loudspeaker->mic delay (device latency + acoustics +
   clock offset, up to ``max_delay_ms``) and a coarse echo gain; re-checked every
   ``xcorr_interval_s`` while the robot speaks;
2. a partitioned-block frequency-domain NLMS adaptive filter (``filter_ms`` long, block ``block``
   samples) models the room and subtracts the predicted echo; adaptation freezes during double
   talk (Geigel detector on the coarse gain) so the user's voice is not learnt. When a delay is
   found, the filter is first trained on the audio already heard (the last ``train_s`` seconds
   of mic and reference that really arrived, ``train_passes`` times);
3. a residual echo suppressor (per frequency bin, Wiener-like, floor ``res_floor_db``) removes
   what the filter misses, and leaves bins where the user is louder than the echo;
4. a block the filter removed at least ``residual_gate_db`` from (no double talk) holds only
   echo residue: it is replaced by noise at the mic's floor. A residue ~30 dB under the echo
   sits at the noise floor, yet the Silero VAD scored it up to 0.86 on some renditions of the
   robot's speech (0.5 is speech): the robot barged in on itself.

The gate: while no echo path is known, and until the filter has learned from ``converge_s`` of
the robot's speech and removes ``converged_db`` of its echo, the robot's voice is gated: while the
robot speaks (SPEAKING_STARTED .. SPEAKING_STOPPED + ``tail_ms``, or while reference audio
plays) the mic is attenuated by ``attenuation_db`` unless a chunk is ``margin_db`` louder than
the echo expected from the reference level and a learnt coupling (the user talks; it then stays
open for ``hold_ms``). A filter trained on a fraction of a second of speech cancels the sounds it
has heard and lets new ones through: that let the first syllables of a turn reach the VAD as
speech. The convergence is kept across turns, so this costs barge-in sensitivity only in the
robot's first seconds of speech after start-up (or after the echo path changed).

Reference alignment: the reference travels from the tts node as messages, the mic audio as
others; on a loaded machine a burst of mic audio can arrive before the reference that explains
it (seen: 0.4 s). While the robot may be audible, :meth:`EchoGuard.feed` holds mic audio until
the reference covers it (at most ``ref_wait_ms``); audio still uncovered after that is gated as
echo, never passed as if the robot were silent. :meth:`EchoGuard.process` cleans a chunk at
once, without holding. Output is delayed by ``2 * block`` samples (16 ms at 16 kHz).

Mic stamps: a driver that stamps each chunk with the time it is published (ROS time, not a
sample clock; `audio/mic/raw` has no stamps at all) gives consecutive chunks stamps a few ms off
their true spacing. Taken literally, every chunk would look like a hole in the stream and restart
the blocks, dropping and inserting samples: the words came out mangled (a stop benchmark with
such a feeder: 52 % of stop phrases recognised, 87 % with echo cancelling off). A chunk within
``stamp_jitter_ms`` of where the stream continues is taken as contiguous; a longer jump (lost
messages), or a sustained offset (a smoothed drift over a third of that), restarts the stream at
the chunk's stamp.
"""
from __future__ import annotations

import collections
import logging
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

# A late reference: the echo is judged against the loudest reference of this many seconds.
LATE_SPAN_S = 2.0

MODES = ("off", "reference")


def _db(power: float) -> float:
    return 10.0 * np.log10(max(power, 1e-12))


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-120 for silence)."""
    if x.size == 0:
        return -120.0
    return _db(float(np.mean(np.square(x, dtype=np.float64))))


def _peak_db(x: np.ndarray, frame: int = 256) -> float:
    """Level of the loudest `frame`-sample frame of x, dBFS."""
    n = x.size // frame * frame
    if n == 0:
        return level_db(x)
    power = np.mean(np.square(x[:n].reshape(-1, frame), dtype=np.float64), axis=1)
    return _db(float(power.max()))


def erle_db(mic: np.ndarray, out: np.ndarray) -> float:
    """Echo return loss enhancement: mic power over output power, dB (echo-only audio)."""
    return _db(float(np.mean(np.square(mic, dtype=np.float64)))) - \
        _db(float(np.mean(np.square(out, dtype=np.float64))))


class _Timeline:
    """Ring buffer of samples addressed by absolute sample index (ROS time * rate).

    Remembers which samples were really written: the first index (`lo`) and the holes filled
    with silence (a gap in the stream), so a caller can tell heard silence from missing audio.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.buf = np.zeros(self.size, dtype=np.float32)
        self.hi: Optional[int] = None  # one past the highest index written
        self.lo: Optional[int] = None  # first index written since the last reset
        self.holes: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)

    def write(self, start: int, x: np.ndarray) -> None:
        n = x.size
        if n == 0:
            return
        if n > self.size:
            start, x, n = start + n - self.size, x[-self.size:], self.size
        if self.hi is None or start - self.hi >= self.size:
            self.buf[:] = 0.0
            self.lo = start
            self.holes.clear()
        elif start > self.hi:  # a gap: silence
            self._put(self.hi, np.zeros(start - self.hi, dtype=np.float32))
            self.holes.append((self.hi, start))
        self._put(start, x)
        self.hi = max(self.hi or 0, start + n) if self.hi is not None else start + n

    def complete(self, a: int, b: int) -> bool:
        """True when every sample in [a, b) was written (none missing, none too old)."""
        if self.hi is None or self.lo is None or a < max(self.lo, self.hi - self.size) \
                or b > self.hi:
            return False
        return not any(h0 < b and a < h1 for h0, h1 in self.holes)

    def _put(self, start: int, x: np.ndarray) -> None:
        i = start % self.size
        first = min(x.size, self.size - i)
        self.buf[i:i + first] = x[:first]
        if first < x.size:
            self.buf[:x.size - first] = x[first:]

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        if self.hi is None or n <= 0:
            return out
        lo = self.hi - self.size
        a, b = max(start, lo), min(start + n, self.hi)
        if b <= a:
            return out
        idx = np.arange(a, b) % self.size
        out[a - start:b - start] = self.buf[idx]
        return out


class EchoGuard:
    """Echo suppression for the mic path. See the module doc for the modes and parameters."""

    def __init__(self, mode: str, sample_rate: int = 16000, **params) -> None:
        if mode == "half_duplex":
            raise ValueError("echo mode 'half_duplex' was removed: use 'reference', which gates "
                             "the mic the same way while it has no echo path")
        if mode not in MODES:
            raise ValueError(f"echo mode '{mode}' unknown (use one of {', '.join(MODES)})")
        self.mode = mode
        self.rate = int(sample_rate)
        p = dict(tail_ms=300.0, margin_db=12.0, attenuation_db=60.0, echo_level_dbfs=-20.0,
                 echo_coupling_db=0.0,
                 hold_ms=300.0, max_delay_ms=500.0, filter_ms=64.0, block=128, mu=0.5,
                 res_floor_db=-40.0, res_overestimate=2.0, xcorr_window_s=1.0,
                 xcorr_interval_s=0.5, history_s=6.0, dt_factor=2.0, train_s=1.0,
                 train_passes=3, converged_db=15.0, converge_s=2.0, ref_wait_ms=400.0,
                 residual_gate_db=15.0, stamp_jitter_ms=40.0)
        unknown = set(params) - set(p)
        if unknown:
            raise ValueError(f"unknown EchoGuard parameter(s): {', '.join(sorted(unknown))}")
        p.update(params)
        self.params = p
        # --- the gate (no echo path yet, filter still learning, reference missing)
        self.tail = int(p["tail_ms"] * self.rate / 1000)
        self.margin_db = float(p["margin_db"])
        self.atten = float(10 ** (-p["attenuation_db"] / 20))
        self.echo_db = float(p["echo_level_dbfs"])
        self.coupling_db = float(p["echo_coupling_db"])  # mic echo level - reference level
        self.hold = int(p["hold_ms"] * self.rate / 1000)
        self._speaking = False
        self._speaking_until: Optional[int] = None  # sample index where gating ends
        self._open_until = -1
        # --- reference mode
        hist = int(p["history_s"] * self.rate)
        self.ref = _Timeline(hist)
        self.mic = _Timeline(hist)
        self.max_delay = int(p["max_delay_ms"] * self.rate / 1000)
        self.B = int(p["block"])
        self.N = 2 * self.B
        self.P = max(1, int(round(p["filter_ms"] * self.rate / 1000 / self.B)))
        self._pnorm = float(self.P)
        self.pre = self.B // 4  # filter taps before the estimated delay (delay error margin)
        self.mu = float(p["mu"])
        self.res_floor = float(10 ** (p["res_floor_db"] / 20))
        self.res_over = float(p["res_overestimate"])
        g = float(p["residual_gate_db"])
        self.res_gate = float(10 ** (g / 10)) if g > 0 else 0.0
        self.dt_factor = float(p["dt_factor"])
        self.delay: Optional[int] = None  # loudspeaker->mic delay, samples
        self.gain: float = 0.0  # coarse echo gain at that delay
        self._candidate: Optional[int] = None
        self._next_xcorr: Optional[int] = None
        self._win = np.sqrt(np.hanning(self.N + 1)[:-1]).astype(np.float32)  # sqrt-Hann, COLA
        self._reset_filter()
        self._in = np.zeros(0, dtype=np.float32)  # mic samples waiting for a full block
        self._in_start: Optional[int] = None  # absolute index of _in[0]
        self.jitter = int(p["stamp_jitter_ms"] * self.rate / 1000)
        self._drift = 0.0  # smoothed (stamp - where the stream continues), samples
        self._out = np.zeros(self.B, dtype=np.float32)  # output FIFO (+ B in the STFT)
        self.latency = 2 * self.B if mode == "reference" else 0
        self.converged_db = float(p["converged_db"])
        self.ref_wait_ns = int(p["ref_wait_ms"] * 1e6)
        self._stopped_at: Optional[int] = None  # sample index of the last SPEAKING_STOPPED
        self._held: list[tuple[np.ndarray, int, int]] = []  # (mic, t_ns, arrival ns) waiting
        self._floor_db: Optional[float] = None  # the mic's noise floor, dBFS
        self._rng = np.random.default_rng(0)
        self.stats = {"blocks": 0, "adapted": 0, "double_talk": 0, "gated": 0,
                      "unconverged": 0, "no_reference": 0, "held": 0, "residue": 0,
                      "restarts": 0, "late_reference": 0}

    # ---------------------------------------------------------------- public API
    def on_reference(self, samples: np.ndarray, t_ns: int) -> None:
        """The robot's own output, mono float32 at sample_rate; t_ns = play time of sample 0."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            self.ref.write(self._index(t_ns), x)

    def on_speaking(self, speaking: bool, t_ns: int) -> None:
        """SPEAKING_STARTED (True) / SPEAKING_STOPPED (False) from the tts node."""
        self._speaking = bool(speaking)
        self._speaking_until = None if speaking else self._index(t_ns) + self.tail
        self._stopped_at = None if speaking else self._index(t_ns)

    def covered(self, t_ns: int, n: int) -> bool:
        """True when the mic samples [t_ns, +n) can be cleaned now: the robot is silent there,
        or the reference that can echo into them has arrived."""
        return self.mode == "off" or self._covered(self._index(t_ns) + n)

    def feed(self, mic: np.ndarray, t_ns: int, now_ns: int) -> list[tuple[np.ndarray, int]]:
        """Queue a mic chunk (t_ns: capture time of sample 0; now_ns: arrival, same clock) and
        return the chunks that can be cleaned now, in order, as (cleaned audio, t_ns)."""
        x = np.asarray(mic, dtype=np.float32).reshape(-1)
        if x.size:
            self._held.append((x, int(t_ns), int(now_ns)))
        return self.poll(now_ns)

    def poll(self, now_ns: int) -> list[tuple[np.ndarray, int]]:
        """Release held chunks whose reference has arrived or whose wait is over."""
        out = []
        while self._held:
            x, t, arrived = self._held[0]
            if not self.covered(t, x.size) and now_ns - arrived < self.ref_wait_ns:
                self.stats["held"] += 1
                break
            self._held.pop(0)
            out.append((self.process(x, t), t))
        return out

    def summary(self) -> str:
        """One line for the log: the echo path, the filter, and what each block met so far."""
        if self.mode != "reference":
            return f"echo {self.mode}"
        path = ("no echo path yet" if self.delay is None else
                f"delay {self.delay * 1000 / self.rate:.1f} ms, "
                f"{'converged' if self.converged else 'learning'}, "
                f"{self.erle_lin_db:.1f} dB removed")
        counts = ", ".join(f"{k} {v}" for k, v in self.stats.items() if v)
        return f"echo: {path}; blocks: {counts or 'none'}"

    @property
    def holding(self) -> int:
        """Mic chunks waiting for their reference."""
        return len(self._held)

    def process(self, mic: np.ndarray, t_ns: int) -> np.ndarray:
        """Mic chunk (float32 mono at sample_rate, t_ns = capture time of sample 0) ->
        echo-suppressed chunk of the same length."""
        x = np.asarray(mic, dtype=np.float32).reshape(-1)
        if self.mode == "off" or x.size == 0:
            return x
        return self._reference(x, self._index(t_ns))

    def reset(self) -> None:
        """Forget the echo path (e.g. after the loudspeaker or mic moved)."""
        self.delay, self.gain, self._candidate = None, 0.0, None
        self._reset_filter()

    @property
    def converged(self) -> bool:
        """The adaptive filter removes at least converged_db of the echo (reference mode)."""
        return self.delay is not None and self._converged

    @property
    def erle_lin_db(self) -> float:
        """Echo removed by the linear filter alone, smoothed over recent echo-only blocks."""
        return _db(self._pd) - _db(self._pe)

    # ---------------------------------------------------------------- the gate
    def _index(self, t_ns: int) -> int:
        return int(t_ns) * self.rate // 1_000_000_000

    def _gating(self, end: int) -> bool:
        """May the robot's voice be in the mic before sample `end`?"""
        if self._speaking:
            return True
        if self._speaking_until is not None:
            if end <= self._speaking_until:
                return True
            if self.ref.hi is None or self.ref.hi <= self._stopped_at + self.B:
                return False  # stopped, tail over, and no reference after the stop
        # reference audio played recently (covers a missed SPEAKING_* event)
        if self.ref.hi is not None and end - self.tail - self.max_delay < self.ref.hi:
            recent = self.ref.read(end - self.tail - self.max_delay, self.tail + self.max_delay)
            return bool(np.any(np.abs(recent) > 1e-4))
        return False

    def _gate(self, x: np.ndarray, start: int, end: int) -> np.ndarray:
        if not self._gating(end) or self._gate_open(x, start, end):
            return x
        self.stats["gated"] += 1
        return x * np.float32(self.atten)

    def _gate_open(self, x: np.ndarray, start: int, end: int) -> bool:
        """True when the mic is far louder than the echo the robot can make (the user talks);
        learns the echo level on the way."""
        level = level_db(x)
        recent = self.ref.read(start - self.max_delay, self.max_delay + end - start)
        # The echo of this chunk comes from somewhere in the last max_delay of the reference:
        # predict it from the loudest 16 ms there, not the mean (a mean over 0.5 s is diluted by
        # pauses, e.g. at the start of a turn, and a normal echo would then open the gate).
        ref_db = _peak_db(recent) if self.ref.hi is not None else -120.0
        if self._speaking and self.ref.hi is not None and self.ref.hi < end - (self.delay or 0) \
                and self._gating(end):
            # This chunk's reference has not arrived (late past ref_wait_ms on a loaded
            # machine) while the robot speaks: what did arrive may end in a pause between words,
            # and the next syllable's echo then looked far louder than "the echo of silence"
            # and opened the gate as if the user talked (CI: the robot barged in on itself).
            # Judge it against the robot's loudest of the last LATE_SPAN_S instead, and learn
            # nothing from a pair that does not belong together. Only while the robot speaks:
            # after SPEAKING_STOPPED the reference is complete (the tail is judged by what the
            # robot said last), and between sentences the tts plays silence, so a gap in its
            # speech is not a late reference (bench/stop.py: both gated the user's "freeze").
            self.stats["late_reference"] += 1
            span = int(LATE_SPAN_S * self.rate)
            late_db = _peak_db(self.ref.read(self.ref.hi - span, span))
            # (Through the learnt coupling only: a floor at the default echo level, -20 dBFS,
            # gated a user at -18..-40 dBFS whenever the reference lagged on a busy machine,
            # where the mic had shown the robot's echo to be 90 dB under its output.)
            expected = late_db + self.coupling_db if late_db > -60.0 else self.echo_db
        elif ref_db > -60.0:  # the reference predicts the echo level (a quieter one: noise)
            expected = ref_db + self.coupling_db
            if level <= expected + self.margin_db:  # echo: learn the coupling
                rate = 0.3 if level - ref_db > self.coupling_db else 0.01
                self.coupling_db += rate * (level - ref_db - self.coupling_db)
        else:  # no reference: follow the echo level (fast up, slowly down)
            expected = self.echo_db
            # Pauses in the robot's speech are silence, not a quieter echo: learning from them
            # would lower the expected level until the next syllable opened the gate.
            if -70.0 < level <= expected + self.margin_db:
                rate = 0.3 if level > self.echo_db else 0.01
                self.echo_db += rate * (level - self.echo_db)
        if level > expected + self.margin_db:
            self._open_until = end + self.hold  # far louder than the echo: the user talks
        return end <= self._open_until

    # ---------------------------------------------------------------- reference mode
    def _reset_filter(self) -> None:
        nb = self.B + 1
        self.W = np.zeros((self.P, nb), dtype=np.complex128)
        self.Xh = np.zeros((self.P, nb), dtype=np.complex128)
        self.S = np.full(nb, 1e-6)  # smoothed reference power per bin
        self._xprev = np.zeros(self.B, dtype=np.float32)
        self._eprev = np.zeros(self.B, dtype=np.float32)
        self._yprev = np.zeros(self.B, dtype=np.float32)
        self._ola = np.zeros(self.B, dtype=np.float32)
        self._see = np.zeros(nb)
        self._syy = np.zeros(nb)
        self.leak = 1.0
        self._dt_hold = 0
        self._pd = 1e-12  # smoothed mic and error power of echo-only blocks (convergence)
        self._pe = 1e-12
        self._converged = False
        self._trained = 0  # echo-only samples the filter has learned from

    def _contiguous(self, start: int) -> int:
        """The stream position of a chunk stamped `start`: where the stream continues when the
        stamp is only jitter, else the stamp itself (a hole or a re-anchor)."""
        if self._in_start is None:
            return start
        expected = self._in_start + self._in.size
        off = start - expected
        if abs(off) > self.jitter:
            self._drift = 0.0
            return start
        self._drift = 0.9 * self._drift + 0.1 * off
        if abs(self._drift) > self.jitter / 3:
            self._drift = 0.0
            return start
        return expected

    def _reference(self, x: np.ndarray, start: int) -> np.ndarray:
        start = self._contiguous(start)
        self.mic.write(start, x)
        if self._in_start is None or start != self._in_start + self._in.size:
            # a hole in the mic stream (or its start): restart the blocks there, with the
            # output exactly `latency` behind the input again
            if self._in_start is not None:
                self.stats["restarts"] += 1
                log.debug("mic stream jumped by %d samples", start - self._in_start - self._in.size)
            self._in = np.zeros(0, dtype=np.float32)
            self._in_start = start
            self._out = np.zeros(self.B, dtype=np.float32)
            self._eprev[:] = 0.0
            self._yprev[:] = 0.0
            self._ola[:] = 0.0
            self._xprev[:] = 0.0
        self._in = np.concatenate([self._in, x])
        end = start + x.size
        if self._next_xcorr is None or end >= self._next_xcorr:
            self._next_xcorr = end + int(self.params["xcorr_interval_s"] * self.rate)
            self._estimate_delay(end)
        produced = []
        while self._in.size >= self.B:
            block, self._in = self._in[:self.B], self._in[self.B:]
            b0 = self._in_start
            self._in_start += self.B
            produced.append(self._block(block, b0))
        if produced:
            self._out = np.concatenate([self._out] + produced)
        out, self._out = self._out[:x.size], self._out[x.size:]
        if out.size < x.size:  # cannot happen with the fixed FIFO, but never return short
            out = np.concatenate([np.zeros(x.size - out.size, dtype=np.float32), out])
        return out

    def _estimate_delay(self, end: int) -> None:
        W = int(self.params["xcorr_window_s"] * self.rate)
        D = self.max_delay
        a = self.mic.read(end - W, W)
        b = self.ref.read(end - W - D, W + D)
        if level_db(b) < -60 or level_db(a) < -70:
            return  # robot silent, or no mic signal
        n = 1 << int(np.ceil(np.log2(W + W + D)))
        A = np.fft.rfft(a, n)
        Bf = np.fft.rfft(b, n)
        cross = A * np.conj(Bf)
        r = np.fft.irfft(cross / (np.abs(cross) + 1e-9), n)
        # a[k] ~ g * b[k + D - d]  =>  correlation peak at lag (d - D) mod n
        lags = (np.arange(D + 1) - D) % n
        cc = r[lags]
        d = int(np.argmax(cc))
        peak = float(cc[d])
        noise = float(np.median(np.abs(cc)) + 1e-9)
        confidence = peak / noise
        if confidence < 8.0:
            return
        seg = b[D - d:D - d + W]
        dot, ss = float(np.dot(a, seg)), float(np.dot(seg, seg))
        gain = dot / (ss + 1e-9)
        if gain <= 0:
            return
        # The reference at that delay must explain a real part of the mic signal: a GCC-PHAT
        # peak between the reference and mere noise (e.g. a mic that does not hear this
        # loudspeaker yet) must not install a wrong delay, which would end the gate fallback.
        if dot * dot < 0.1 * ss * float(np.dot(a, a)):
            return
        if self.delay is not None and abs(d - self.delay) <= 2:
            self.gain = 0.8 * self.gain + 0.2 * gain
            self._candidate = None
            return
        if self.delay is None or self._candidate == d:
            log.info("echo path: delay %.1f ms, gain %.3f (confidence %.0f)",
                     d * 1000 / self.rate, gain, confidence)
            self._reset_filter()
            self.delay, self.gain, self._candidate = d, gain, None
            # Start the filter at the direct path the correlation found, not at zero: an empty
            # filter would let the whole echo through while it converges (the gate
            # no longer covers it once a delay is known).
            w = np.zeros(self.N)
            w[self.pre] = gain
            self.W[0] = np.fft.rfft(w)
            self._pretrain()
        else:
            self._candidate = d  # confirm a changed delay once more before switching

    def _pretrain(self) -> None:
        """Train the new filter on the mic and reference already heard, so it cancels the echo
        from its first block instead of learning on live audio (which let the start of a turn
        through). Ends at the next block to process, so its history stays contiguous."""
        if self._in_start is None:
            return
        stop = self._in_start
        n = int(self.params["train_s"] * self.rate) // self.B * self.B
        # blocks the mic really heard (no stream holes: zeros there would teach the filter that
        # the loudspeaker makes no echo)
        starts = [b0 for b0 in range(stop - n, stop, self.B)
                  if self.mic.complete(b0, b0 + self.B)]
        if not starts:
            return
        passes = int(self.params["train_passes"])
        pd = pe = 0.0
        trained = self._trained
        for k in range(passes):
            prev = None
            for b0 in starts:
                if b0 - self.B != prev:  # a new run of blocks: its own reference history
                    self._xprev = self.ref.read(b0 - self.B - self.delay + self.pre, self.B)
                prev = b0
                d = self.mic.read(b0, self.B)
                e, _, active, double_talk = self._filter_block(d, b0)
                if k == passes - 1 and active and not double_talk:
                    pd += float(np.dot(d, d))
                    pe += float(np.dot(e, e))
                    trained += self.B
        self._trained = trained  # each block once, however many passes
        if pd > 0.0:
            self._pd, self._pe = pd, pe
            self._check_converged()
        log.info("echo filter trained on %.2f s: %.1f dB of echo removed", len(starts) * self.B
                 / self.rate, self.erle_lin_db)

    def _block(self, d: np.ndarray, b0: int) -> np.ndarray:
        """One block of B mic samples starting at absolute index b0 -> B output samples."""
        self.stats["blocks"] += 1
        end = b0 + self.B
        self._track_floor(d)
        if self.delay is None or not self._covered(end):
            # no echo path yet, or its reference has not arrived: the gate
            self._xprev[:] = 0.0
            if self.delay is not None:
                self.stats["no_reference"] += 1
            out = self._gate(d, b0, end)
            return self._synthesize_passthrough(out)
        e, y, ref_active, double_talk = self._filter_block(d, b0)
        out = self._suppress(e, y, ref_active, double_talk)
        if ref_active and not double_talk and self.res_gate > 0.0 \
                and float(np.dot(e, e)) * self.res_gate < float(np.dot(d, d)):
            # the filter removed most of this block: what is left is echo residue, which the
            # VAD can still take for speech; replace it by noise at the mic's floor
            self.stats["residue"] += 1
            out = self._comfort_noise(out.size)
        if ref_active and not self.converged and not self._gate_open(d, b0, end):
            # the filter is still learning: what it lets through is echo, not the user
            self.stats["unconverged"] += 1
            out = out * np.float32(self.atten)
        return out

    def _track_floor(self, d: np.ndarray) -> None:
        """Follow the mic's noise floor: down at once, up by 1.2 dB/s (minimum statistics)."""
        level = level_db(d)
        if level <= -110.0:
            return
        if self._floor_db is None or level < self._floor_db:
            self._floor_db = level
        else:
            self._floor_db += 1.2 * self.B / self.rate

    def _comfort_noise(self, n: int) -> np.ndarray:
        if self._floor_db is None:
            return np.zeros(n, dtype=np.float32)
        scale = np.float32(10 ** (self._floor_db / 20))
        return self._rng.standard_normal(n).astype(np.float32) * scale

    def _covered(self, end: int) -> bool:
        """Has the reference that can echo into the mic before sample `end` arrived?"""
        if not self._gating(end):
            return True
        need = end - self.delay + self.pre if self.delay is not None else end
        if self._stopped_at is not None:
            need = min(need, self._stopped_at)
        return self.ref.hi is not None and self.ref.hi >= need - 1

    def _filter_block(self, d: np.ndarray, b0: int
                      ) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """Predict and subtract the echo in one block, adapting the filter unless the user
        talks; returns (error, echo estimate, reference active, double talk)."""
        B, N = self.B, self.N
        xnew = self.ref.read(b0 - self.delay + self.pre, B)  # aligned reference, `pre` early
        xfull = np.concatenate([self._xprev, xnew])
        self._xprev = xnew
        X = np.fft.rfft(xfull)
        self.Xh = np.roll(self.Xh, 1, axis=0)
        self.Xh[0] = X
        Y = np.sum(self.W * self.Xh, axis=0)
        y = np.fft.irfft(Y, N)[B:].astype(np.float32)
        e = d - y
        # double talk (Geigel): the mic is far louder than the loudest echo the reference can make
        span = self.ref.read(b0 - self.delay - self.P * B + self.pre, self.P * B + B)
        xmax = float(np.max(np.abs(span))) if span.size else 0.0
        ref_active = xmax > 1e-3
        if ref_active and float(np.max(np.abs(d))) > self.dt_factor * self.gain * xmax + 1e-4:
            self._dt_hold = int(0.1 * self.rate / B) + 1
        double_talk = self._dt_hold > 0
        self._dt_hold = max(0, self._dt_hold - 1)
        self.stats["double_talk"] += int(double_talk)
        self.S = 0.8 * self.S + 0.2 * np.abs(X) ** 2
        if ref_active and not double_talk:
            E = np.fft.rfft(np.concatenate([np.zeros(B, dtype=np.float32), e]))
            norm = self.mu / (self._pnorm * self.S + 1e-6 + 1e-3 * np.mean(self.S))
            self.W += np.conj(self.Xh) * (E * norm)
            w = np.fft.irfft(self.W, N, axis=1)
            w[:, B:] = 0.0  # gradient constraint: linear, not circular, convolution
            self.W = np.fft.rfft(w, N, axis=1)
            self.stats["adapted"] += 1
            self._trained += B
            self._pd = 0.98 * self._pd + 0.02 * float(np.dot(d, d))
            self._pe = 0.98 * self._pe + 0.02 * float(np.dot(e, e))
            self._check_converged()
        return e, y, ref_active, double_talk

    def _check_converged(self) -> None:
        """Latch convergence once the filter has learned from converge_s of echo and removes
        converged_db of it (a filter trained on a fraction of a second of speech cancels the
        sounds it has heard and lets new ones through). It is not revoked on a low reading (the
        user talking over the robot reads the same as a filter that stopped working); a changed
        echo path resets the filter and with it the latch."""
        if not self._converged and self._trained >= self.params["converge_s"] * self.rate \
                and self.erle_lin_db >= self.converged_db:
            self._converged = True
            log.info("echo filter converged: %.1f dB of echo removed", self.erle_lin_db)

    def _stft_pair(self, e: np.ndarray, y: np.ndarray):
        fe = np.concatenate([self._eprev, e]) * self._win
        fy = np.concatenate([self._yprev, y]) * self._win
        self._eprev, self._yprev = e, y
        return np.fft.rfft(fe), np.fft.rfft(fy)

    def _overlap_add(self, F: np.ndarray) -> np.ndarray:
        frame = np.fft.irfft(F, self.N).astype(np.float32) * self._win
        out = self._ola + frame[:self.B]
        self._ola = frame[self.B:].copy()
        return out

    def _synthesize_passthrough(self, x: np.ndarray) -> np.ndarray:
        E, _ = self._stft_pair(x, np.zeros_like(x))
        return self._overlap_add(E)

    def _suppress(self, e: np.ndarray, y: np.ndarray, ref_active: bool,
                  double_talk: bool) -> np.ndarray:
        """Residual echo suppression: per-bin gain from the echo estimate's spectrum."""
        E, Y = self._stft_pair(e, y)
        pe, py = np.abs(E) ** 2, np.abs(Y) ** 2
        self._see = 0.5 * self._see + 0.5 * pe
        self._syy = 0.5 * self._syy + 0.5 * py
        if ref_active and not double_talk and self._syy.sum() > 1e-9:
            ratio = float(self._see.sum() / (self._syy.sum() + 1e-12))
            self.leak = float(np.clip(0.9 * self.leak + 0.1 * ratio, 1e-3, 4.0))
        residual = self.res_over * self.leak * self._syy
        gain = np.clip(1.0 - residual / (self._see + 1e-12), self.res_floor, 1.0)
        return self._overlap_add(E * gain)
