#!/usr/bin/env python3
"""Voice-in benchmark: recognizer speed, end-of-speech -> final transcript, partial cadence,
mic_capture CPU.

    . ./locara_env.sh && python bench/asr.py [--utterances 20] [--model tiny.en]

* RTF: faster-whisper inference time / audio duration of the default model (tiny.en, int8,
  beam 1), in process, on Piper speech of 1-4 s and one 12 s utterance;
* end of speech -> final: a Piper conversation (--utterances phrases, 1.5 s apart, light noise)
  replayed in real time by a mic_capture process (file source) into an asr process; for each
  final transcript, the arrival time (ROS time) minus
  - speech_end (capture time of the last speech sample): what a user waits, including the
    VAD's stop duration (vad_stop_ms, 400 ms by default);
  - the SPEECH_STOPPED event's stamp (capture time of the audio that decided the end): the
    recognizer's share;
* partial interval: gaps between consecutive partials of one utterance (header stamps);
* mic_capture CPU: process CPU time / wall time during the replay (% of one core).

Prints a table and writes out/bench/asr.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from locara_ros.core import contract as C

ROOT = Path(__file__).resolve().parents[1]

PHRASES = [
    "go to the kitchen", "turn around and come back", "where are my keys", "what time is it",
    "open the door please", "move forward three meters", "hello robot", "please stop",
    "the weather is nice today", "pick up the red ball", "follow me",
    "go back to the charging station", "how are you doing", "look at the table",
    "good morning", "take a picture",
    "pick up the red ball and look at the table and then go back to the charging station",
    "turn around and come back to the kitchen and open the door please",
    "where are my keys and what time is it in the kitchen right now",
    "follow me to the table and take a picture of the red ball",
]


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def bench_rtf(model: str) -> dict:
    from locara_ros.testing.speech import synthesize

    from locara_ros.core.backends.asr import FasterWhisperTranscriber
    from locara_ros.core.models import resolve_whisper

    asr = FasterWhisperTranscriber(resolve_whisper(model), label=model)
    asr.transcribe(np.zeros(16000, np.float32), "en")  # warm-up
    clips = [synthesize(p, varied=True) for p in PHRASES[:10]]
    clips.append(np.concatenate([synthesize(p, varied=True) for p in PHRASES[10:15]]))  # ~12 s
    rtf, infer_ms = [], []
    for clip in clips:
        r = asr.transcribe(clip, "en")
        rtf.append(r.inference_time / (clip.size / 16000))
        infer_ms.append(r.inference_time * 1000)
    return {"model": model, "rtf_p50": pct(rtf, 50), "rtf_p90": pct(rtf, 90),
            "rtf_long_12s": rtf[-1], "inference_ms_p50": pct(infer_ms, 50),
            "clips": len(clips)}


def bench_pipeline(n: int, model: str) -> dict:
    import psutil
    from locara_ros.testing.speech import conversation, write_wav

    from locara_ros.core.transcripts import normalize_text
    from locara_ros.msg import Transcript, VoiceEvent
    from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS, stamp_to_ns
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness, wait_until
    from locara_ros.testing.processes import NodeProcess, ProcessGroup

    phrases = (PHRASES * (n // len(PHRASES) + 1))[:n]
    tmp = tempfile.mkdtemp(prefix="bench_asr_")
    wav = write_wav(Path(tmp) / "conversation.wav",
                    conversation(phrases, lead=1.0, gap=1.5, tail=1.5, noise_dbfs=-55))
    lease = DomainLease()
    lease.acquire()
    group = ProcessGroup(os.path.join(tmp, "logs"))
    ros = None
    try:
        group.start(NodeProcess.node("asr", log_dir=group.log_dir, params={"model": model}),
                    ready_timeout=90)
        ros = RosHarness()
        node = ros.node("bench_asr")
        lock = threading.Lock()
        finals, partials, stopped = [], [], {}

        def now_ns() -> int:
            return node.get_clock().now().nanoseconds

        def on_final(msg):
            with lock:
                finals.append((now_ns(), msg))

        def on_partial(msg):
            with lock:
                partials.append((now_ns(), msg))

        def on_event(msg):
            if msg.type == VoiceEvent.SPEECH_STOPPED:
                with lock:
                    stopped[msg.utterance_id] = (now_ns(), stamp_to_ns(msg.header.stamp))

        node.create_subscription(Transcript, C.TRANSCRIPT.name, on_final, RELIABLE_QOS)
        node.create_subscription(Transcript, C.TRANSCRIPT_PARTIAL.name, on_partial,
                                 RELIABLE_QOS)
        node.create_subscription(VoiceEvent, C.VOICE_EVENTS.name, on_event, EVENTS_QOS)
        ros.wait_for_publishers(node, C.TRANSCRIPT.name, timeout=20)
        mic = group.start(NodeProcess.node("mic_capture", log_dir=group.log_dir, params={
            "source": "file", "file_path": str(wav), "realtime": True,
            "wait_for_services": []}))  # no parser here
        proc = psutil.Process(mic.pid)
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        mic.wait_for_output("file source finished", timeout=n * 6 + 60)
        cpu1, wall1 = proc.cpu_times(), time.monotonic()
        wait_until(lambda: len(finals) >= n, 30, what=f"{n} finals")
        time.sleep(0.5)
    finally:
        if ros is not None:
            ros.shutdown()
        group.stop_all()
        lease.release()

    mic_cpu = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (wall1 - wall0)
    from_speech_end, from_decision, gaps, correct = [], [], [], 0
    for (arrival, msg), phrase in zip(finals, phrases):  # noqa: B905 - extra finals ignored
        from_speech_end.append((arrival - stamp_to_ns(msg.speech_end)) / 1e6)
        if msg.utterance_id in stopped:
            from_decision.append((arrival - stopped[msg.utterance_id][1]) / 1e6)
        correct += normalize_text(msg.text) == normalize_text(phrase)
        stamps = sorted(stamp_to_ns(p.header.stamp) for _, p in partials
                        if p.utterance_id == msg.utterance_id)
        gaps += [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]  # noqa: B905
    return {
        "utterances": len(finals), "correct": correct,
        "speech_end_to_final_ms_p50": pct(from_speech_end, 50),
        "speech_end_to_final_ms_p90": pct(from_speech_end, 90),
        "vad_decision_to_final_ms_p50": pct(from_decision, 50),
        "vad_decision_to_final_ms_p90": pct(from_decision, 90),
        "partials": len(partials),
        "utterances_with_2plus_partials": sum(
            1 for _, m in finals
            if sum(p.utterance_id == m.utterance_id for _, p in partials) >= 2),
        "partial_interval_s_mean": float(np.mean(gaps)) if gaps else float("nan"),
        "partial_interval_s_p50": pct(gaps, 50),
        "mic_capture_cpu_percent": mic_cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "asr.json"))
    args = ap.parse_args()

    rtf = bench_rtf(args.model)
    pipe = bench_pipeline(max(args.utterances, 1), args.model)
    rows = [
        ("RTF p50 / p90 (" + args.model + ", int8, beam 1)",
         f"{rtf['rtf_p50']:.3f} / {rtf['rtf_p90']:.3f}", "<= 0.1"),
        ("RTF, 12 s utterance", f"{rtf['rtf_long_12s']:.3f}", ""),
        ("inference per utterance p50 [ms]", f"{rtf['inference_ms_p50']:.0f}", ""),
        ("speech end -> final p50 / p90 [ms]",
         f"{pipe['speech_end_to_final_ms_p50']:.0f} / {pipe['speech_end_to_final_ms_p90']:.0f}",
         "<= 350 (includes 400 ms VAD stop)"),
        ("VAD end decision -> final p50 / p90 [ms]",
         f"{pipe['vad_decision_to_final_ms_p50']:.0f} / "
         f"{pipe['vad_decision_to_final_ms_p90']:.0f}", ""),
        ("partials / utterances with >= 2 partials",
         f"{pipe['partials']} / {pipe['utterances_with_2plus_partials']}", ""),
        ("partial interval mean / p50 [s] (0.5 s after the previous ends)",
         f"{pipe['partial_interval_s_mean']:.2f} / {pipe['partial_interval_s_p50']:.2f}", ""),
        ("finals correct (normalized)", f"{pipe['correct']} / {pipe['utterances']}", ""),
        ("mic_capture CPU [% of one core]", f"{pipe['mic_capture_cpu_percent']:.1f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nvoice-in benchmark on {platform.node()} ({os.cpu_count()} CPUs), "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'metric'.ljust(width)}  {'value':>16}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>16}  {target}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rtf": rtf, "pipeline": pipe, "cpus": os.cpu_count(),
                               "load_avg_1m": os.getloadavg()[0],
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
