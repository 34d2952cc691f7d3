#!/usr/bin/env python3
"""Echo cancelling at the start of a turn and over it, on rooms a real robot has.

    . ./locara_env.sh && python bench/echo.py [--renditions 3] [--out out/bench/echo.json]

For every room (loudspeaker -> mic delay 40/80/150 ms x echo gain -15/-9/-3 dB, a 40 ms
reverberation tail at -10 dB, noise at -60 dBFS; locara_ros.testing.room) and every rendition
(Piper speaks differently each time): a fresh EchoGuard("reference") hears turn 1 (the robot
alone) and turn 2 (the user says "stop and turn left" 2 s in, at the robot's level; the robot
stops 0.45 s later, as a barge-in would). Chunks, stamps and reference timing are fed the way
the asr node feeds them; the real Silero VAD listens to the output.

Reported per room (mean over renditions; `self` = speech starts on the robot's own voice,
summed): ERLE over the first 500 ms of turn 1 and of turn 2 and over the whole of turn 1; the
user's speech start after their onset; what Whisper base hears in the output around the user
(double talk: their words must survive). Writes out/bench/echo.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ROBOT = ("The weather today is sunny and warm. I can see three people in the kitchen. "
         "The battery is charged to eighty percent. My next task is to water the plants.")
USER = "stop and turn left"
DELAYS = (40, 80, 150)
GAINS = (-15.0, -9.0, -3.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renditions", type=int, default=3)
    ap.add_argument("--residual-gate-db", type=float, default=None,
                    help="EchoGuard residual_gate_db (default: the guard's; 0 = off)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "echo.json"))
    args = ap.parse_args()

    from locara_ros.testing.speech import synthesize

    from locara_ros.core.backends.asr import FasterWhisperTranscriber
    from locara_ros.core.echo import EchoGuard, erle_db
    from locara_ros.core.models import resolve_whisper
    from locara_ros.core.transcripts import normalize_text
    from locara_ros.core.vad import Segmenter, SileroVad, VadConfig
    from locara_ros.testing.room import RATE, EchoRun

    whisper = FasterWhisperTranscriber(resolve_whisper("base"), label="base")
    vad = SileroVad()
    user = synthesize(USER, varied=True)
    robots = [synthesize(ROBOT, varied=True) for _ in range(args.renditions)]
    rows = []
    started = time.monotonic()
    for delay in DELAYS:
        for gain in GAINS:
            acc: dict[str, list] = {"erle_t1_500ms": [], "erle_t1": [], "erle_t2_500ms": [],
                                    "user_start_ms": [], "heard": [], "cpu_rtf": [],
                                    "vad_max_t1": []}
            self_starts = 0
            for robot in robots:
                run = EchoRun([robot, robot], delay_ms=delay, gain_db=gain, user=user,
                              user_turn=1, user_offset_s=2.0, stop_after_user_s=0.45)
                extra = ({} if args.residual_gate_db is None
                         else {"residual_gate_db": args.residual_gate_db})
                guard = EchoGuard("reference", RATE, **extra)
                vad.reset()
                t = time.perf_counter()
                out, starts = run.run(guard, Segmenter(vad, VadConfig()))
                acc["cpu_rtf"].append((time.perf_counter() - t) / (run.mic.size / RATE))
                at = run.user_at
                mine = [s for s in starts if at - int(0.1 * RATE) <= s <= at + RATE]
                self_starts += len(starts) - len(mine)
                acc["user_start_ms"].append((mine[0] - at) * 1000 / RATE if mine else None)
                for key, sl in (("erle_t1_500ms", run.turn(0, 0.5)), ("erle_t1", run.turn(0)),
                                ("erle_t2_500ms", run.turn(1, 0.5))):
                    acc[key].append(erle_db(run.mic[sl], out[sl]))
                # the VAD's highest score on the robot's voice alone (turn 1; 0.5 is speech)
                t1 = out[run.turn_starts[0]:run.turn_ends[0] + RATE // 2]
                vad.reset()
                acc["vad_max_t1"].append(max(vad(t1[i:i + 512])
                                             for i in range(0, t1.size - 512, 512)))
                seg = out[at - int(0.3 * RATE):at + user.size + int(0.3 * RATE)]
                acc["heard"].append(normalize_text(whisper.transcribe(seg, "en").text))
            starts_ok = [v for v in acc["user_start_ms"] if v is not None]
            row = {"delay_ms": delay, "gain_db": gain, "self_starts": self_starts,
                   "user_detected": f"{len(starts_ok)}/{len(robots)}",
                   "user_start_ms": float(np.mean(starts_ok)) if starts_ok else None,
                   "user_words_exact": sum(h == USER for h in acc["heard"]),
                   "heard": acc["heard"], "vad_max_t1": float(np.max(acc["vad_max_t1"]))}
            for key in ("erle_t1_500ms", "erle_t1", "erle_t2_500ms", "cpu_rtf"):
                row[key] = float(np.mean(acc[key]))
            rows.append(row)
            print(f"{delay:4d} ms {gain:6.1f} dB  t1 500ms {row['erle_t1_500ms']:5.1f} dB  "
                  f"t1 {row['erle_t1']:5.1f} dB  t2 500ms {row['erle_t2_500ms']:5.1f} dB  "
                  f"self {self_starts} (max VAD {row['vad_max_t1']:.2f})  "
                  f"user {row['user_detected']} "
                  f"{row['user_start_ms'] or float('nan'):4.0f} ms  heard {acc['heard']}",
                  flush=True)
    result = {"rows": rows, "renditions": args.renditions,
              "residual_gate_db": args.residual_gate_db, "seconds": time.monotonic() - started,
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'delay':>6s} {'gain':>6s} {'ERLE t1 500ms':>14s} {'ERLE t1':>8s} "
          f"{'ERLE t2 500ms':>14s} {'self':>5s} {'max VAD':>8s} {'user heard':>11s} "
          f"{'onset->start':>13s} {'exact words':>12s}")
    for r in rows:
        print(f"{r['delay_ms']:4d}ms {r['gain_db']:5.0f}dB {r['erle_t1_500ms']:13.1f} "
              f"{r['erle_t1']:8.1f} {r['erle_t2_500ms']:14.1f} {r['self_starts']:5d} "
              f"{r['vad_max_t1']:8.2f} "
              f"{r['user_detected']:>11s} {r['user_start_ms'] or float('nan'):11.0f}ms "
              f"{r['user_words_exact']:>9d}/{args.renditions}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
