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
Echo cancelling has its own benchmark: bench/echo.py.

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
from locara_ros.core import contract as C

ROOT = Path(__file__).resolve().parents[1]


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
        say = node.create_publisher(String, C.SAY.name, RELIABLE_QOS)
        events_pub = node.create_publisher(VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        audio = ros.collect(node, AudioDataStamped, C.AUDIO_TTS.name, AUDIO_QOS)
        events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        ros.wait_for_subscribers(say)
        ros.wait_for_subscribers(events_pub)
        ros.wait_for_publishers(node, C.AUDIO_TTS.name)

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "tts.json"))
    args = ap.parse_args()
    result = {"rtf": bench_rtf(args.runs), "node": bench_node(args.runs),
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
