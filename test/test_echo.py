"""EchoGuard with real Piper speech: the robot's echo is removed, the user's voice is kept.

The "loudspeaker + room" here is a simulation: the robot's audio delayed by 60 ms, attenuated,
with a short decaying reverberation tail, plus background noise. The reference is fed in real
time order (a chunk at a time, as the asr node receives audio/tts).
"""
from __future__ import annotations

import numpy as np
import pytest
from support.speech import noise, synthesize

from locara_ros.core.echo import EchoGuard, erle_db, level_db

R = 16000
T0 = 1_000_000_000_000  # ROS time of the first sample, ns
CHUNK = 320


@pytest.fixture(scope="module")
def robot():
    speech = synthesize("Hello, I am the robot. I will tell you a long story about the kitchen "
                        "and the garden, and then we will see what happens next.")
    return np.concatenate([speech, np.zeros(R, np.float32)])


@pytest.fixture(scope="module")
def user():
    return synthesize("Stop talking please.")


def room(x: np.ndarray, delay_s: float = 0.06, gain: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(1)
    d, tail = int(delay_s * R), int(0.05 * R)
    h = np.zeros(d + tail, np.float32)
    h[d:] = rng.standard_normal(tail) * np.exp(-np.arange(tail) / (0.012 * R)) * gain * 0.3
    h[d] += gain
    return np.convolve(x, h)[:x.size].astype(np.float32)


def run(guard: EchoGuard, mic: np.ndarray, ref: np.ndarray | None,
        speaking: bool = False) -> np.ndarray:
    if speaking:
        guard.on_speaking(True, T0)
    out = []
    for i in range(0, mic.size, CHUNK):
        t = T0 + i * 1_000_000_000 // R
        if ref is not None:
            guard.on_reference(ref[i:i + CHUNK], t)
        out.append(guard.process(mic[i:i + CHUNK], t))
        assert out[-1].size == mic[i:i + CHUNK].size
    return np.concatenate(out)[guard.latency:]


def test_reference_mode_cancels_echo_and_keeps_the_user(robot, user):
    echo = room(robot) + noise(robot.size / R, R, -60)
    guard = EchoGuard("reference", R)
    out = run(guard, echo, robot)
    mic = echo[:out.size]
    assert guard.delay == pytest.approx(960, abs=2)  # found the 60 ms loudspeaker delay
    after = slice(R, int(6.5 * R))  # after the first second (delay search + convergence)
    erle = erle_db(mic[after], out[after])
    assert erle > 18.0, f"ERLE {erle:.1f} dB"
    # Without the reference the same signal passes untouched: the mechanism does the work.
    off = run(EchoGuard("off", R), echo, None)
    assert erle_db(echo[after], off[after]) == pytest.approx(0.0, abs=0.01)
    # Double talk: the user speaks over the robot; their voice comes through intact.
    at = 4 * R
    mixed = echo.copy()
    mixed[at:at + user.size] += user
    out = run(EchoGuard("reference", R), mixed, robot)
    got = out[at:at + user.size]
    assert np.corrcoef(got, user)[0, 1] > 0.9
    assert abs(level_db(got) - level_db(user)) < 3.0


def test_reference_mode_passes_the_mic_when_the_robot_is_silent(user):
    mic = np.concatenate([np.zeros(R, np.float32), user, np.zeros(R // 2, np.float32)])
    guard = EchoGuard("reference", R)
    out = run(guard, mic, np.zeros_like(mic))
    assert np.corrcoef(out, mic[:out.size])[0, 1] > 0.99
    assert guard.delay is None


def test_half_duplex_gates_echo_but_not_a_loud_user(robot, user):
    # Piper speech varies from run to run (noise_scale); the margins below allow for it.
    echo = room(robot, gain=0.05)
    guard = EchoGuard("half_duplex", R)
    out = run(guard, echo, None, speaking=True)
    assert erle_db(echo[:out.size], out) > 40.0
    # a user much louder than the echo opens the gate (and barge-in can happen)
    at = 4 * R
    mixed = echo.copy()
    mixed[at:at + user.size] += user * 3.0
    guard = EchoGuard("half_duplex", R)
    out = run(guard, mixed, None, speaking=True)
    got = out[at:at + user.size]
    assert np.corrcoef(got, user)[0, 1] > 0.8
    # after the robot stopped (plus the tail) the mic is not touched
    guard.on_speaking(False, T0)
    quiet = user * 0.05
    t = T0 + 20 * 1_000_000_000
    assert np.allclose(guard.process(quiet, t), quiet)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        EchoGuard("loud")
    with pytest.raises(ValueError, match="bogus"):
        EchoGuard("reference", bogus=1)
    guard = EchoGuard("reference")
    assert guard.process(np.zeros(0, np.float32), T0).size == 0
