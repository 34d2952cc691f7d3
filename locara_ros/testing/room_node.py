"""Room simulator for echo and barge-in tests: a loudspeaker, a room and a microphone.

A real rclpy node in its own process (test support, not a locara_ros node, not a model). It
stands in for the physical path robot loudspeaker -> air -> microphone:

* it subscribes to the robot's actual output, ``audio/tts`` (+ ``audio/tts/info``), whose chunk
  stamps are play times, and keeps it on a timeline of 16 kHz samples;
* it publishes a live microphone stream on ``audio/mic`` (AudioDataStamped, S16LE mono,
  ``chunk_ms`` chunks, stamp = capture time of the chunk's first sample) and the latched
  ``audio/mic/info``, paced in real time: a chunk goes out ``mic_latency_ms`` after its last
  sample was "captured", like a sound card with a small buffer;
* each mic sample is ``echo(t) + user(t) + noise(t)``, where the echo is the robot's output
  delayed by ``echo_delay_ms`` and attenuated by ``echo_gain_db``, followed by a short decaying
  reverberation tail (``reverb_ms`` long, its energy ``reverb_db`` below the direct sound);
* ``user_wav``: a person's utterance (a WAV made by the test with locara_ros.testing.speech)
  mixed
  in at ``user_offset`` seconds after the robot starts a turn (its first audio/tts sample after at
  least ``turn_gap`` s of silence), at ``user_gain_db``, in the turns listed in ``user_turns``
  ("all", or e.g. "2" or "2,3"); several WAVs (comma separated) are played one per turn, in turn.
  With ``user_turns`` "request", nobody talks until asked: a ``room/user_next`` message
  (std_msgs/Int32, the 0-based index into ``user_wav``) arms the next robot turn with that clip
  (benchmarks that need to know which robot turn a user talks in, e.g. bench/stop.py).
  For every one it publishes the capture time of the user's speech onset (first 10 ms frame
  within 30 dB of the utterance's loudest) on ``room/user_onset`` and of the end of the voice on
  ``room/user_end`` (std_msgs/Header: stamp = that time, frame_id = "turn-<n>") and logs it.

Run it as ``python room.py --ros-args -p echo_delay_ms:=80.0 -p user_wav:=/tmp/u.wav ...``.
With ``record_wav`` set, the mic stream (left) and the loudspeaker signal at its play time
(right) are written there at shutdown, for listening and for replaying offline.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.node import Node
from std_msgs.msg import Header, Int32

from locara_ros.core import contract as C
from locara_ros.core.audio import (
    AudioFormat,
    AudioFormatError,
    MIC_FORMAT,
    decode,
    encode_s16le,
    StampedResampler,
    resample,
    to_mono,
)
from locara_ros.nodes.common import (
    AUDIO_QOS,
    LATCHED_QOS,
    RELIABLE_QOS,
    announce_ready,
    declare,
    ns_to_stamp,
    run_node,
    stamp_to_ns,
)
from locara_ros.testing.processes import NodeProcess, ros_args
from locara_ros.testing.room import impulse_response

RATE = MIC_FORMAT.sample_rate
NS = 1_000_000_000


def speech_onset(x: np.ndarray, rate: int = RATE, below_peak_db: float = 30.0) -> int:
    """Index of the first 10 ms frame whose RMS is within `below_peak_db` of the loudest."""
    n = rate // 100
    frames = x[:x.size // n * n].reshape(-1, n)
    if frames.size == 0:
        return 0
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) + 1e-12
    db = 20 * np.log10(rms)
    return int(np.argmax(db >= db.max() - below_peak_db)) * n


class _Timeline:
    """The loudspeaker's output by absolute sample index (ROS time * RATE), a ring buffer."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.size = int(seconds * RATE)
        self.buf = np.zeros(self.size, np.float32)
        self.lo = self.hi = None  # range of indices written since the buffer was last cleared

    def write(self, start: int, x: np.ndarray) -> None:
        if self.hi is not None and start > self.hi:  # silence between turns
            self._put(self.hi, np.zeros(min(start - self.hi, self.size), np.float32))
        if self.hi is None:
            self.lo = start
        self._put(start, x[-self.size:])
        self.hi = max(self.hi or 0, start + x.size)

    def _put(self, start: int, x: np.ndarray) -> None:
        idx = (start + np.arange(x.size)) % self.size
        self.buf[idx] = x

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        if self.hi is None:
            return out
        a, b = max(start, self.hi - self.size, self.lo), min(start + n, self.hi)
        if b > a:
            out[a - start:b - start] = self.buf[np.arange(a, b) % self.size]
        return out


class Room(Node):
    def __init__(self) -> None:
        super().__init__("room")

        def p(name, default, description):
            return declare(self, name, default, description)

        self.chunk = int(p("chunk_ms", 20.0, "mic chunk length [ms]") * RATE / 1000)
        self.latency_ns = int(p("mic_latency_ms", 30.0, "a chunk is published this long after "
                                                         "its last sample [ms]") * 1e6)
        self.delay = int(p("echo_delay_ms", 80.0, "loudspeaker -> mic delay [ms]") * RATE / 1000)
        gain_db = p("echo_gain_db", -9.0, "echo level relative to audio/tts [dB]")
        gain = 10 ** (gain_db / 20)
        reverb_ms = p("reverb_ms", 40.0, "reverberation tail length [ms]; 0 = none")
        reverb_db = p("reverb_db", -10.0, "energy of the reverb tail relative to the direct "
                                          "sound [dB]")
        # the room impulse response after the delay (the same room as the offline tests')
        self.h = impulse_response(0.0, gain_db, reverb_ms, reverb_db, RATE)
        self.noise_amp = 10 ** (p("noise_dbfs", -60.0, "background noise RMS [dBFS]") / 20)
        self.user_offset = p("user_offset", 2.0, "user speech starts this long after the robot "
                                                 "starts a turn [s]")
        user_gain = 10 ** (p("user_gain_db", 0.0, "gain applied to user_wav [dB]") / 20)
        turns = str(p("user_turns", "all", "robot turns (1-based, comma separated) the user "
                                            "talks in, 'all', or 'request' (room/user_next)")
                    ).strip()
        self.on_request = turns == "request"
        self.user_turns = (None if turns in ("", "all") else set() if self.on_request else
                           {int(t) for t in turns.split(",")})
        self.armed: int | None = None  # on request: the clip for the next robot turn
        self.turn_gap = int(p("turn_gap", 1.0, "tts silence that separates robot turns [s]")
                            * RATE)
        self.record_path = p("record_wav", "", "write the mic stream to this WAV at shutdown")
        wav = p("user_wav", "", "the user's utterance (WAV), mixed in during robot turns; "
                                "several, comma separated: turn n plays the n-th (cycling)")
        self.users: list[tuple[np.ndarray, int, int]] = []  # (audio, onset, end of voice)
        for path in [w for w in str(wav).split(",") if w]:
            import soundfile as sf
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            audio = resample(data.mean(axis=1), rate, RATE) * np.float32(user_gain)
            self.users.append((audio, speech_onset(audio),
                               audio.size - speech_onset(audio[::-1].copy())))

        self.lock = threading.Lock()
        self.tts = _Timeline()
        self.tts_fmt = AudioFormat(22050, 1, "S16LE")
        # the loudspeaker plays a continuous signal: resample it as a stream (per-chunk
        # resampling leaves edges and rounding gaps a real echo does not have)
        self.tts_resampler = StampedResampler(22050, RATE)
        self.turn = 0
        self.turn_end = None  # one past the last tts sample of the current turn
        self.scheduled: list[tuple[int, np.ndarray]] = []  # (start index, user audio)
        self.published = 0  # one past the last mic sample published
        self.late = 0
        self.recorded: list[np.ndarray] = []

        self.mic_pub = self.create_publisher(AudioDataStamped, C.AUDIO_MIC.name, AUDIO_QOS)
        self.info_pub = self.create_publisher(AudioInfo, C.AUDIO_MIC_INFO.name, LATCHED_QOS)
        self.onset_pub = self.create_publisher(Header, "room/user_onset", RELIABLE_QOS)
        self.end_pub = self.create_publisher(Header, "room/user_end", RELIABLE_QOS)
        self.info_pub.publish(AudioInfo(channels=1, sample_rate=RATE, sample_format="S16LE",
                                        bitrate=MIC_FORMAT.bitrate, coding_format="wave"))
        self.create_subscription(AudioInfo, C.AUDIO_TTS_INFO.name, self._on_tts_info, LATCHED_QOS)
        self.create_subscription(AudioDataStamped, C.AUDIO_TTS.name, self._on_tts, AUDIO_QOS)
        self.create_subscription(Int32, "room/user_next", self._on_user_next, RELIABLE_QOS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._mic_loop, name="room-mic")
        self._thread.start()
        announce_ready(self, f"room (echo {self.delay * 1000 // RATE} ms, {20 * np.log10(gain):.1f}"
                             f" dB; user {wav or 'none'} in turns {turns or 'all'})")

    def _on_user_next(self, msg: Int32) -> None:
        if not 0 <= msg.data < len(self.users):
            self.get_logger().error(f"room/user_next: no user clip {msg.data} "
                                    f"({len(self.users)} given)")
            return
        with self.lock:
            self.armed = int(msg.data)
        self.get_logger().info(f"user clip {msg.data} armed for the next robot turn")

    # ------------------------------------------------------------------ loudspeaker
    def _on_tts_info(self, msg: AudioInfo) -> None:
        try:
            self.tts_fmt = AudioFormat(int(msg.sample_rate), int(msg.channels),
                                       msg.sample_format or "S16LE")
            self.tts_resampler = StampedResampler(self.tts_fmt.sample_rate, RATE)
        except AudioFormatError as e:
            self.get_logger().error(f"audio/tts/info: {e}")

    def _on_tts(self, msg: AudioDataStamped) -> None:
        fmt = self.tts_fmt
        try:
            x = to_mono(decode(bytes(msg.audio.data), fmt))
        except AudioFormatError as e:
            self.get_logger().error(f"audio/tts chunk dropped: {e}")
            return
        with self.lock:
            for y, t_ns in self.tts_resampler.process(x, stamp_to_ns(msg.header.stamp)):
                self._play(y, round(t_ns * RATE / NS))

    def _play(self, x: np.ndarray, start: int) -> None:
        """Loudspeaker output x from sample index `start` (lock held)."""
        if self.turn_end is None or start - self.turn_end >= self.turn_gap:
            self._new_turn(start)
        self.turn_end = max(self.turn_end, start + x.size)
        if start + self.delay < self.published:
            self.late += 1  # part of this chunk's echo should already have been heard
            self.get_logger().warn(
                f"audio/tts chunk arrived {(self.published - start) * 1000 // RATE} ms after "
                f"its play time, too late for the echo ({self.late} so far)",
                throttle_duration_sec=2.0)
        self.tts.write(start, x)

    def _new_turn(self, start: int) -> None:
        self.turn += 1
        self.turn_end = start
        t = start * NS // RATE
        self.get_logger().info(f"robot turn {self.turn} starts at {t / 1e9:.3f}")
        if self.on_request:
            if self.armed is None:
                return
            index, self.armed = self.armed, None
        elif not self.users or (self.user_turns is not None
                                and self.turn not in self.user_turns):
            return
        else:
            index = (self.turn - 1) % len(self.users)
        audio, onset, end = self.users[index]
        at = start + int(self.user_offset * RATE)
        self.scheduled.append((at, audio))
        onset_ns = (at + onset) * NS // RATE
        msg = Header(frame_id=f"turn-{self.turn}")
        msg.stamp = ns_to_stamp(onset_ns)
        self.onset_pub.publish(msg)
        done = Header(frame_id=f"turn-{self.turn}")
        done.stamp = ns_to_stamp((at + end) * NS // RATE)
        self.end_pub.publish(done)
        self.get_logger().info(f"turn {self.turn}: user speech onset at {onset_ns / 1e9:.3f}")

    # ------------------------------------------------------------------ microphone
    def _mix(self, a: int, n: int) -> np.ndarray:
        tail = self.h.size - 1
        with self.lock:
            src = self.tts.read(a - self.delay - tail, n + tail)
            users = [(s, u) for s, u in self.scheduled if s < a + n and s + u.size > a]
            self.scheduled = [(s, u) for s, u in self.scheduled if s + u.size > a]
        y = np.convolve(src, self.h, mode="valid").astype(np.float32)
        for s, u in users:
            lo, hi = max(a, s), min(a + n, s + u.size)
            y[lo - a:hi - a] += u[lo - s:hi - s]
        if self.noise_amp > 0:
            y += np.random.standard_normal(n).astype(np.float32) * np.float32(self.noise_amp)
        return np.clip(y, -1.0, 1.0)

    def _mic_loop(self) -> None:
        now = self.get_clock().now().nanoseconds
        idx = now * RATE // NS
        speaker_seen = False
        while not self._stop.is_set():
            if not speaker_seen and idx % RATE < self.chunk:  # about once a second
                speaker_seen = self.count_publishers(C.AUDIO_TTS.name) > 0
                if speaker_seen:
                    self.get_logger().info("loudspeaker connected (a publisher on audio/tts)")
            due = (idx + self.chunk) * NS // RATE + self.latency_ns
            wait = (due - self.get_clock().now().nanoseconds) / 1e9
            if wait > 0:
                if self._stop.wait(wait):
                    break
            with self.lock:
                self.published = idx + self.chunk
            x = self._mix(idx, self.chunk)
            msg = AudioDataStamped()
            msg.header.stamp = ns_to_stamp(idx * NS // RATE)
            msg.header.frame_id = "mic"
            msg.audio.data = encode_s16le(x)
            try:
                self.mic_pub.publish(msg)
            except Exception:  # the context is shutting down: stop; anything else: raise
                if self._stop.is_set() or not self.context.ok():
                    break
                raise
            if self.record_path:
                with self.lock:
                    self.recorded.append(np.stack([x, self.tts.read(idx, self.chunk)], axis=1))
            idx += self.chunk

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        if self.record_path and self.recorded:
            import soundfile as sf
            sf.write(self.record_path, np.concatenate(self.recorded), RATE, subtype="PCM_16")
        self.get_logger().info(f"room closed: {self.turn} robot turn(s), {self.late} late "
                               "audio/tts chunk(s)")


def room_process(log_dir: str, label: str = "room", **params) -> NodeProcess:
    """This simulator as a test process: `procs.start(room_process(procs.log_dir, ...))`."""
    return NodeProcess.python(__file__, *ros_args(params=params), log_dir=log_dir, label=label)


if __name__ == "__main__":
    sys.exit(run_node(Room))
