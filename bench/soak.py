#!/usr/bin/env python3
"""Soak: the on-robot graph under a steady conversation; per-node memory over time, nothing lost.

    . ./locara_env.sh && python bench/soak.py [--minutes 10] [--every 8]

The on-robot topology (real node processes started exactly as the topology describes them, the
packaged models, tts publishing audio/tts) hears a spoken request every `--every` seconds for
`--minutes` (the file mic source replays Piper-synthesized requests in real time, cycling
through bench/e2e.py's REQUESTS). The resident memory (RSS, with children) of every node is
sampled every `--sample` seconds. Reports per node: RSS after the first minute (models loaded and
warm), at the end, the growth between them and the growth per hour, and whether every request
was transcribed and answered. Prints a table and writes out/bench/soak.json (the time series
included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


class RssSeries:
    """RSS of each process (and its children), every `interval` seconds, in a thread."""

    def __init__(self, procs: dict, interval: float) -> None:
        import psutil
        self.procs = {name: psutil.Process(p.pid) for name, p in procs.items()}
        self.interval = interval
        self.t0 = time.monotonic()
        self.series: list[dict] = []  # {"t": seconds, name: MB, ...}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-series", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil
        while not self._stop.is_set():
            row = {"t": round(time.monotonic() - self.t0, 1)}
            for name, proc in self.procs.items():
                try:
                    rss = sum(p.memory_info().rss for p in [proc, *proc.children(True)])
                except psutil.Error:
                    rss = 0
                row[name] = round(rss / 2**20, 1)
            self.series.append(row)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the conversation")
    ap.add_argument("--every", type=float, default=8.0, help="seconds from request to request")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    args = ap.parse_args()
    if args.minutes <= 0 or args.every < 4 or args.sample <= 0:
        ap.error("--minutes > 0, --every >= 4 (a reply must fit), --sample > 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    from e2e import REQUESTS as KINDS_AND_TEXTS
    from locara_ros.testing.speech import silence, synthesize, write_wav

    from locara_ros.core.topology import TopologyOptions, build
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness
    from locara_ros.testing.observer import GraphObserver
    from locara_ros.testing.processes import ProcessGroup, start_topology

    REQUESTS = [text for _kind, text in KINDS_AND_TEXTS]
    n = max(1, int(args.minutes * 60 / args.every))
    clips = {t: synthesize(t) for t in REQUESTS}
    parts, said = [silence(1.0)], []
    for i in range(n):
        text = REQUESTS[i % len(REQUESTS)]
        said.append(text)
        parts += [clips[text], silence(max(0.5, args.every - clips[text].size / 16000))]
    wav = write_wav(out / "soak_requests.wav", np.concatenate(parts))
    print(f"{n} requests, one every {args.every:g} s ({args.minutes:g} min)", flush=True)

    lease = DomainLease()
    lease.acquire()
    ros = RosHarness()
    group = ProcessGroup(str(out / "soak_logs"))
    try:
        graph = GraphObserver(ros)
        specs = build(TopologyOptions(topology="on_robot", mic_source="file", mic_file=str(wav),
                                      tts_output="topic"))
        procs = start_topology(group, [s for s in specs if s.executable != "mic_capture"],
                               overrides={"asr": {"echo_mode": "off"}})
        rss = RssSeries(procs, args.sample)
        mic = start_topology(group, [s for s in specs if s.executable == "mic_capture"])
        started = time.monotonic()
        mic["mic_capture"].wait_for_output("file source finished",
                                           timeout=args.minutes * 60 * 1.5 + 120)
        try:
            graph.wait_idle(timeout=120)
        except TimeoutError as e:
            print(f"warning: {e}", flush=True)
        rss.stop()
        alive = {name: p.alive for name, p in procs.items()}
        with graph.lock:
            finals = [f for f in graph.finals if f.text.strip()]
            measured = {m.utterance_id for m in graph.metrics}
            commands = len(graph.commands)
    finally:
        group.stop_all()
        ros.shutdown()
        lease.release()

    series = rss.series
    warm = next((row for row in series if row["t"] >= 60.0), series[0])
    last = series[-1]
    hours = max((last["t"] - warm["t"]) / 3600.0, 1e-9)
    nodes = {}
    for name in procs:
        values = [row[name] for row in series if row["t"] >= warm["t"]]
        nodes[name] = {"warm_mb": warm[name], "end_mb": last[name], "max_mb": max(values),
                       "growth_mb": round(last[name] - warm[name], 1),
                       "growth_mb_per_hour": round((last[name] - warm[name]) / hours, 1),
                       "alive": alive[name]}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "minutes": args.minutes, "every_s": args.every,
        "requests": n, "transcribed": len(finals),
        "answered": len({f.utterance_id for f in finals} & measured), "commands": commands,
        "wall_s": round(time.monotonic() - started, 1), "nodes": nodes, "series": series,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1))

    print(f"\nsoak {args.minutes:g} min, {n} requests: {len(finals)} transcribed, "
          f"{result['answered']} answered (turn measured), {commands} commands")
    print(f"{'node':<14}{'warm MB':>9}{'end MB':>9}{'max MB':>9}{'growth':>9}{'MB/h':>9}  alive")
    for name, v in nodes.items():
        print(f"{name:<14}{v['warm_mb']:>9.1f}{v['end_mb']:>9.1f}{v['max_mb']:>9.1f}"
              f"{v['growth_mb']:>9.1f}{v['growth_mb_per_hour']:>9.1f}  {v['alive']}")
    print(f"wrote {out / 'soak.json'}")
    return 0 if all(alive.values()) and len(finals) == n else 1


if __name__ == "__main__":
    sys.exit(main())
