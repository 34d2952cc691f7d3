"""A picture of every turn on a live robot: record its voice topics, draw one lane per node.

  python tools/timeline.py --seconds 60 --out out/timeline     # record a running robot
  python tools/timeline.py --from out/demo/timeline.json        # redraw a recorded run

Subscribes (in the current ROS_DOMAIN_ID and namespace) to voice/events, voice/transcript,
voice/transcript/partial, voice/command and voice/metrics for --seconds (or until Ctrl-C), then
writes timeline.json and timeline.png (locara_ros.timeline: user speech, partial and final
transcripts, end-of-turn decisions, commands, robot speech, barge-ins and stops, with the stage
latencies after the end of speech). Run it with the robot's environment sourced.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="how long to record")
    p.add_argument("--namespace", default="", help="the robot's namespace, if any")
    p.add_argument("--out", default="out/timeline", help="folder for timeline.json/.png")
    p.add_argument("--from", dest="source", default="",
                   help="redraw this timeline.json instead of recording")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")

    from locara_ros import timeline
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.source:
        spans, turns = timeline.load_json(args.source)
    else:
        from locara_ros.testing.inprocess import RosHarness
        from locara_ros.testing.observer import GraphObserver
        ros = RosHarness()
        try:
            graph = GraphObserver(ros, "locara_timeline", namespace=args.namespace)
            print(f"recording the voice topics for {args.seconds:g} s (Ctrl-C ends early)",
                  flush=True)
            deadline = time.monotonic() + args.seconds
            try:
                while time.monotonic() < deadline:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            with graph.lock:
                spans, turns = timeline.spans_from_graph(
                    list(graph.events), list(graph.partials), list(graph.finals),
                    list(graph.commands), list(graph.metrics))
        finally:
            ros.shutdown()
        timeline.save_json(out / "timeline.json", spans, turns)
    if not spans:
        print("nothing was said or heard: no picture (is the robot running in this "
              "ROS_DOMAIN_ID?)", file=sys.stderr)
        return 1
    png = timeline.plot(spans, turns, out / "timeline.png")
    print(f"{len(turns)} turn(s): {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
