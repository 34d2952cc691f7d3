#!/usr/bin/env python3
"""End-to-end barge-in latency through the real graph, measured from the mic stream.

    . ./locara_env.sh && python bench/bargein.py [--runs 8] [--modes reference]

Processes: tts (Piper, audio/tts only), asr (Silero VAD + faster-whisper tiny.en, echo_mode) and
the room simulator (locara_ros/testing/room_node.py): the robot's actual audio/tts comes back
into the mic
80 ms late at -9 dB with a reverberation tail, and in every robot turn a person says "stop and
turn left" 2 s after the robot starts (0 dB).

Per run, from the user's speech onset (its known sample time in the room's mic stream):
* decided: the asr's SPEECH_STARTED stamp (capture time of the audio that decided it);
* barge-in: the tts node's BARGE_IN event stamp (when it stopped);
* output stopped: end of the last audio/tts sample played (stamps are play times), i.e. when
  the loudspeaker goes quiet.

Prints a table (p50/p90) and writes out/bench/bargein.json.
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

ROBOT = ("The weather today is sunny and warm. I can see three people in the kitchen. "
         "The battery is charged to eighty percent. My next task is to water the plants in the "
         "garden.")
USER = "stop and turn left"
LEVELS = {"reference": (-9.0, 0.0)}


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def bench_mode(mode: str, runs: int, min_speech: float, user_wav: str) -> dict:
    from audio_common_msgs.msg import AudioDataStamped
    from std_msgs.msg import Header, String
    from locara_ros.testing.room_node import room_process

    from locara_ros.core.transcripts import normalize_text
    from locara_ros.msg import Transcript, VoiceEvent
    from locara_ros.nodes.common import AUDIO_QOS, EVENTS_QOS, RELIABLE_QOS, stamp_to_ns
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness, wait_until
    from locara_ros.testing.processes import NodeProcess, ProcessGroup

    echo_db, user_db = LEVELS[mode]
    lease = DomainLease()
    lease.acquire()
    group = ProcessGroup(tempfile.mkdtemp(prefix=f"bench_bargein_{mode}_"))
    ros = None
    rows = []
    try:
        group.start(NodeProcess.node("tts", log_dir=group.log_dir, params={
            "play_on_device": False, "output_rate": 16000, "barge_in_min_speech": min_speech}))
        group.start(NodeProcess.node("asr", log_dir=group.log_dir, params={
            "echo_mode": mode, "model": "tiny.en", "language": "en",
            "partial_interval": 0.0}), ready_timeout=120)
        room = group.start(room_process(group.log_dir, echo_delay_ms=80.0, echo_gain_db=echo_db,
                                        user_gain_db=user_db, user_offset=2.0, user_turns="all",
                                        user_wav=user_wav))
        ros = RosHarness()
        node = ros.node("bench_bargein")
        say = node.create_publisher(String, C.SAY.name, RELIABLE_QOS)
        events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        finals = ros.collect(node, Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
        audio = ros.collect(node, AudioDataStamped, C.AUDIO_TTS.name, AUDIO_QOS)
        onsets = ros.collect(node, Header, "room/user_onset", RELIABLE_QOS)
        ros.wait_for_subscribers(say, timeout=20)
        room.wait_for_output("loudspeaker connected", timeout=20)
        wait_until(lambda: node.count_subscribers(C.AUDIO_TTS.name) >= 3, 20, what="discovery")
        time.sleep(1.0)

        def of(kind):
            return [e for e in events.snapshot() if e.type == kind]

        for i in range(runs):
            n_stop, n_on = len(of(VoiceEvent.SPEAKING_STOPPED)), len(onsets.snapshot())
            audio.clear()
            say.publish(String(data=ROBOT))
            stop = wait_until(lambda n=n_stop: of(VoiceEvent.SPEAKING_STOPPED)[n:], 90,
                              what="the robot to stop")[0]
            onset = stamp_to_ns(onsets.wait_for(n_on + 1, timeout=10)[n_on].stamp) / 1e9
            time.sleep(0.5)
            row = {"run": i, "stopped_by": stop.detail}
            if stop.detail.startswith("barge-in"):
                barge = [e for e in of(VoiceEvent.BARGE_IN)
                         if e.utterance_id == stop.utterance_id][-1]
                started = [e for e in of(VoiceEvent.SPEECH_STARTED)
                           if e.utterance_id in barge.detail]
                last = max(stamp_to_ns(m.header.stamp) / 1e9 + len(m.audio.data) / 2 / 16000
                           for m in audio.snapshot())
                row.update(output_stopped_ms=(last - onset) * 1000,
                           barge_in_event_ms=(stamp_to_ns(barge.header.stamp) / 1e9 - onset)
                           * 1000)
                if started:
                    row["decided_ms"] = (stamp_to_ns(started[0].header.stamp) / 1e9 - onset) \
                        * 1000
                    uid = started[0].utterance_id
                    try:
                        f = finals.wait_for(1, timeout=60, where=lambda m, u=uid:
                                            m.utterance_id == u)[0]
                        row["heard"] = f.text
                        row["heard_ok"] = normalize_text(f.text) == USER
                    except TimeoutError:
                        row["heard"] = None
            rows.append(row)
            print(f"  {mode} run {i}: " + ", ".join(
                f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v!r}"
                for k, v in row.items() if k != "run"), flush=True)
            time.sleep(1.5)  # a pause between turns (the room's turn_gap is 1 s)
    finally:
        if ros is not None:
            ros.shutdown()
        group.stop_all()
        lease.release()
    ok = [r for r in rows if "output_stopped_ms" in r]
    summary = {"runs": runs, "barge_ins": len(ok), "min_speech_s": min_speech,
               "echo_gain_db": echo_db, "user_gain_db": user_db,
               "transcribed_exactly": sum(1 for r in ok if r.get("heard_ok"))}
    for key in ("decided_ms", "barge_in_event_ms", "output_stopped_ms"):
        vals = [r[key] for r in ok if key in r]
        summary[f"{key}_p50"], summary[f"{key}_p90"] = pct(vals, 50), pct(vals, 90)
    return {"summary": summary, "runs": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--modes", default="reference")
    ap.add_argument("--min-speech", type=float, default=0.2,
                    help="tts barge_in_min_speech [s] (the node's default is 0.2)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "bargein.json"))
    args = ap.parse_args()

    from locara_ros.testing.speech import silence, synthesize, write_wav
    user = np.concatenate([silence(0.1), synthesize(USER, varied=True), silence(0.3)])
    wav = str(write_wav(Path(tempfile.mkdtemp(prefix="bargein_")) / "user.wav", user))
    result = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "modes": {}}
    for mode in args.modes.split(","):
        result["modes"][mode] = bench_mode(mode.strip(), args.runs, args.min_speech, wav)

    print(f"\nbarge-in, user speech onset in the mic stream -> ... [ms] "
          f"(barge_in_min_speech {args.min_speech} s)")
    print(f"{'mode':12s} {'metric':34s} {'p50':>7s} {'p90':>7s}")
    for mode, r in result["modes"].items():
        s = r["summary"]
        for key, label in (("decided_ms", "asr SPEECH_STARTED decided"),
                           ("barge_in_event_ms", "tts BARGE_IN (stop)"),
                           ("output_stopped_ms", "last audio/tts sample played")):
            print(f"{mode:12s} {label:34s} {s[key + '_p50']:7.0f} {s[key + '_p90']:7.0f}")
        print(f"{mode:12s} barge-ins {s['barge_ins']}/{s['runs']}, user transcribed exactly "
              f"{s['transcribed_exactly']}/{s['barge_ins']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
