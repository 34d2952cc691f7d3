#!/usr/bin/env python3
"""Voice-out benchmark: time to first audio, real-time factor, barge-in latency, echo ERLE.

    . ./locara_env.sh && python bench/tts.py [--runs 10]

* first audio: voice/say published -> first audio/tts chunk received (tts node process, real
  Piper voice, topic output), short sentence;
* RTF: Piper synthesis time / audio duration, in process;
* barge-in: user speech onset (the SPEECH_STARTED stamp, = onset capture time) -> the last
  audio/tts chunk whose play time is after the stop, i.e. output stopped; measured end to end
  through the tts process with barge_in_min_speech=0.2 (so 200 ms of it is the configured
  minimum). The VAD's own decision delay (asr node) is not included here;
* ERLE of EchoGuard (reference, half_duplex) on simulated loudspeaker echo of Piper speech, and
  of pyaec (a Rust port of the Speex echo canceller, PyPI) when it is importable.

Prints a table and writes out/bench/tts.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def bench_rtf(runs: int) -> dict:
    from locara_ros.core.backends.tts import PiperSynthesizer
    synth = PiperSynthesizer()
    list(synth.synthesize("Warm up."))
    rows = {}
    for label, text in (("short", "Okay, going to the kitchen."),
                        ("long", "The quick brown fox jumps over the lazy dog while the robot "
                                 "waits patiently by the door for its next command.")):
        rtf, first = [], []
        for _ in range(runs):
            t = time.perf_counter()
            audio = np.concatenate(list(synth.synthesize(text)))
            dt = time.perf_counter() - t
            rtf.append(dt / (audio.size / synth.sample_rate))
            first.append(dt * 1000)
        rows[label] = {"rtf_p50": pct(rtf, 50), "rtf_p90": pct(rtf, 90),
                       "synth_ms_p50": pct(first, 50), "synth_ms_p90": pct(first, 90)}
    return rows


def bench_node(runs: int) -> dict:
    from audio_common_msgs.msg import AudioDataStamped
    from std_msgs.msg import String

    from locara_ros.msg import VoiceEvent
    from locara_ros.nodes.common import AUDIO_QOS, EVENTS_QOS, RELIABLE_QOS, stamp_to_ns
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness, wait_until
    from locara_ros.testing.processes import NodeProcess, ProcessGroup

    lease = DomainLease()
    lease.acquire()
    group = ProcessGroup(tempfile.mkdtemp(prefix="bench_tts_"))
    ros = None
    try:
        group.start(NodeProcess.node("tts", log_dir=group.log_dir, params={
            "play_on_device": False, "output_rate": 16000, "barge_in_min_speech": 0.2}))
        ros = RosHarness()
        node = ros.node("bench_tts")
        say = node.create_publisher(String, "voice/say", RELIABLE_QOS)
        events_pub = node.create_publisher(VoiceEvent, "voice/events", EVENTS_QOS)
        audio = ros.collect(node, AudioDataStamped, "audio/tts", AUDIO_QOS)
        events = ros.collect(node, VoiceEvent, "voice/events", EVENTS_QOS)
        ros.wait_for_subscribers(say)
        ros.wait_for_subscribers(events_pub)
        ros.wait_for_publishers(node, "audio/tts")

        def stopped_count():
            return sum(1 for e in events.snapshot()
                       if e.type == VoiceEvent.SPEAKING_STOPPED and e.source == "/tts")

        first_audio = []
        for i in range(runs):
            audio.clear()
            n = stopped_count()
            t = time.monotonic()
            say.publish(String(data=f"Okay, going to room {i + 1}."))
            audio.wait_for(1, timeout=20)
            first_audio.append((audio.arrivals[0] - t) * 1000)
            wait_until(lambda n=n: stopped_count() > n, 20, what="end of speech")
            time.sleep(0.2)

        barge = []
        long_text = ("This is a long answer that keeps going. It has several sentences. "
                     "Each one takes a while to say. The user will interrupt it.")
        for _ in range(runs):
            n = stopped_count()
            audio.clear()
            say.publish(String(data=long_text))
            wait_until(lambda: len(audio.snapshot()) > 40, 20, what="speech")
            onset = node.get_clock().now().nanoseconds
            msg = VoiceEvent(type=VoiceEvent.SPEECH_STARTED, source="/bench_asr",
                             utterance_id=f"user-{time.monotonic_ns()}")
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(onset, 1_000_000_000)
            events_pub.publish(msg)
            wait_until(lambda n=n: stopped_count() > n, 10, what="barge-in")
            time.sleep(0.3)
            ends = [stamp_to_ns(m.header.stamp) + len(m.audio.data) // 2 * 62_500
                    for m in audio.snapshot()]
            barge.append((max(ends) - onset) / 1e6)  # last audio sample played - onset
        return {"first_audio_ms_p50": pct(first_audio, 50),
                "first_audio_ms_p90": pct(first_audio, 90),
                "barge_in_ms_p50": pct(barge, 50), "barge_in_ms_p90": pct(barge, 90),
                "runs": runs}
    finally:
        if ros is not None:
            ros.shutdown()
        group.stop_all()
        lease.release()


def bench_echo() -> dict:
    from support.speech import noise, synthesize
    from test_echo import CHUNK, R, T0, room

    from locara_ros.core.echo import EchoGuard, erle_db, level_db
    robot = np.concatenate([synthesize(
        "Hello, I am the robot. I will tell you a long story about the kitchen and the garden, "
        "and then we will see what happens next."), np.zeros(R, np.float32)])
    user = synthesize("Stop talking please.")
    echo = room(robot) + noise(robot.size / R, R, -60)
    at = 4 * R
    mixed = echo.copy()
    mixed[at:at + user.size] += user
    after = slice(R, at)
    rows = {}
    for mode in ("half_duplex", "reference"):
        for name, mic in (("echo", echo), ("double_talk", mixed)):
            g = EchoGuard(mode, R)
            g.on_speaking(True, T0)
            out, t = [], time.perf_counter()
            for i in range(0, mic.size, CHUNK):
                ts = T0 + i * 1_000_000_000 // R
                g.on_reference(robot[i:i + CHUNK], ts)
                out.append(g.process(mic[i:i + CHUNK], ts))
            cpu = time.perf_counter() - t
            out = np.concatenate(out)[g.latency:]
            if name == "echo":
                rows[mode] = {"erle_db": erle_db(mic[after], out[after]),
                              "cpu_rtf": cpu / (mic.size / R)}
            else:
                got = out[at:at + user.size]
                rows[mode]["user_corr"] = float(np.corrcoef(got, user)[0, 1])
                rows[mode]["user_level_change_db"] = level_db(got) - level_db(user)
    try:
        from pyaec import Aec  # evaluated only when importable (not a dependency)
    except Exception as e:  # noqa: BLE001
        rows["pyaec"] = {"error": f"not importable: {e}"}
    else:
        # pyaec gets the reference aligned by hand (it has no delay estimation of its own)
        d = 960
        ref = np.concatenate([np.zeros(d, np.float32), robot])[:robot.size]
        for name, mic in (("echo", echo), ("double_talk", mixed)):
            aec = Aec(160, 1600, R, True)
            out = []
            t = time.perf_counter()
            for i in range(0, mic.size - 160 + 1, 160):
                o = aec.cancel_echo((mic[i:i + 160] * 32767).astype(np.int16).tolist(),
                                    (ref[i:i + 160] * 32767).astype(np.int16).tolist())
                out.append(np.asarray(o, np.float32) / 32767)
            cpu = time.perf_counter() - t
            out = np.concatenate(out)
            if name == "echo":
                rows["pyaec"] = {"erle_db": erle_db(mic[after], out[after]),
                                 "cpu_rtf": cpu / (mic.size / R)}
            else:
                got = out[at:at + user.size]
                rows["pyaec"]["user_corr"] = float(np.corrcoef(got, user)[0, 1])
                rows["pyaec"]["user_level_change_db"] = level_db(got) - level_db(user)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "tts.json"))
    args = ap.parse_args()
    result = {"rtf": bench_rtf(args.runs), "node": bench_node(args.runs), "echo": bench_echo(),
              "cpus": os.cpu_count()}
    print("\nvoice out (tts node, Piper en_US-joe-medium)")
    print(f"{'metric':40s} {'p50':>9s} {'p90':>9s}")
    n = result["node"]
    print(f"{'first audio, short sentence [ms]':40s} {n['first_audio_ms_p50']:9.1f} "
          f"{n['first_audio_ms_p90']:9.1f}")
    print(f"{'barge-in onset -> output stopped [ms]':40s} {n['barge_in_ms_p50']:9.1f} "
          f"{n['barge_in_ms_p90']:9.1f}")
    for label, r in result["rtf"].items():
        print(f"{'Piper RTF, ' + label + ' sentence':40s} {r['rtf_p50']:9.3f} {r['rtf_p90']:9.3f}")
    print(f"\n{'echo guard':14s} {'ERLE dB':>8s} {'user corr':>10s} {'user dB':>8s} "
          f"{'cpu RTF':>8s}")
    for mode, r in result["echo"].items():
        if "error" in r:
            print(f"{mode:14s} {r['error']}")
            continue
        print(f"{mode:14s} {r['erle_db']:8.1f} {r['user_corr']:10.3f} "
              f"{r['user_level_change_db']:8.1f} {r['cpu_rtf']:8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
