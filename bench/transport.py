#!/usr/bin/env python3
"""Audio transport: mic_capture -> another process over DDS, and mic_capture's CPU cost.

    . ./locara_env.sh && python bench/transport.py [--seconds 30] [--chunk-ms 20]

A mic_capture process replays a 16 kHz WAV in real time (file source: each chunk is published
when its last sample would have been captured, stamped with the capture time of its first
sample). This process subscribes audio/mic with the asr node's QoS, exactly as asr does, and for
every chunk records

    latency = arrival (ROS time) - (header.stamp + chunk duration)

i.e. the time from "the chunk is complete at the microphone" to "the consumer has it": the
publisher's conversion and publish, DDS across processes, and the subscriber's executor.
mic_capture CPU = its process CPU time / wall time during the replay (% of one core).
Prints a table and writes out/bench/transport.json.
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
from locara_ros.core import contract as C

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--chunk-ms", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import psutil
    from audio_common_msgs.msg import AudioDataStamped
    from locara_ros.testing.speech import conversation, noise, write_wav

    from locara_ros.nodes.common import AUDIO_QOS, stamp_to_ns
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness, wait_until
    from locara_ros.testing.processes import NodeProcess, ProcessGroup

    speech = conversation(["Go to the kitchen.", "Turn left."], lead=0.5, gap=1.0, tail=0.5)
    reps = int(np.ceil(args.seconds * 16000 / speech.size))
    audio = np.tile(speech, reps)[: int(args.seconds * 16000)] + noise(args.seconds, dbfs=-55)
    wav = write_wav(out / "transport.wav", audio.astype(np.float32))
    chunk_ns = int(args.chunk_ms * 1e6)

    lease = DomainLease()
    lease.acquire()
    ros = RosHarness()
    group = ProcessGroup(str(out / "transport_logs"))
    latencies: list[float] = []
    try:
        node = ros.node("transport_bench")

        def on_chunk(msg: AudioDataStamped) -> None:
            now = node.get_clock().now().nanoseconds
            latencies.append((now - stamp_to_ns(msg.header.stamp) - chunk_ns) / 1e6)
        node.create_subscription(AudioDataStamped, C.AUDIO_MIC.name, on_chunk, AUDIO_QOS)
        mic = group.start(NodeProcess.node("mic_capture", log_dir=group.log_dir, params={
            "source": "file", "file_path": str(wav), "realtime": True,
            "chunk_ms": args.chunk_ms}))
        proc = psutil.Process(mic.pid)
        # CPU over the replay only (not start-up): from the first chunk to the end.
        wait_until(lambda: latencies, 30, what="the first audio/mic chunk")
        c0, t0 = proc.cpu_times(), time.monotonic()
        mic.wait_for_output(r"file source finished", timeout=args.seconds + 60)
        c1, t1 = proc.cpu_times(), time.monotonic()
        cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
        wall_s = t1 - t0
    finally:
        group.stop_all()
        ros.shutdown()
        lease.release()

    # Steady state only: the first second includes discovery and the start of the replay.
    steady = latencies[int(1000 / args.chunk_ms):]
    lat = np.asarray(steady, dtype=float)
    result = {
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d")},
        "chunks": len(latencies), "chunk_ms": args.chunk_ms,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                       "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
        "mic_capture_cpu_percent_of_one_core": 100.0 * cpu_s / wall_s,
    }
    print(f"\naudio transport mic_capture -> subscriber process ({platform.machine()}, "
          f"{os.cpu_count()} cores, {result['machine']['date']}), {len(steady)} chunks of "
          f"{args.chunk_ms:g} ms")
    print(f"{'metric':<42}{'value':>10}")
    for k in ("p50", "p90", "p99", "max"):
        print(f"{'chunk latency ' + k + ' [ms]':<42}{result['latency_ms'][k]:>10.2f}")
    print(f"{'mic_capture CPU [% of one core]':<42}"
          f"{result['mic_capture_cpu_percent_of_one_core']:>10.2f}")
    (out / "transport.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'transport.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
