#!/usr/bin/env python3
"""A voice e-stop measured like one: is every stop phrase heard, and how soon is `stop` out?

    . ./locara_env.sh && python bench/stop.py [--voices piper,espeak-150,espeak-190]
        [--conditions idle,load,echo] [--forms alone,sentence] [--phrases all]

The on-robot nodes (asr, command_parser, tts; the shipped config, echo cancelling on) as real
processes. Each of the shipped schema's stop phrases is said by each voice (the packaged Piper
voice; espeak-ng en-us at 150 and 190 words per minute), alone ("halt") and at the end of a
sentence ("that is enough, halt"), in these conditions:

* idle  - the graph has nothing else to do; the phrase is published as the microphone
  (audio/mic, 20 ms chunks in real time) with silence around it;
* load  - the same, while 20 clients keep voice/parse calls that need the model going (the
  model is busy all the time; calls refused as busy are retried after 0.5 s);
* echo  - the robot is talking (a long voice/say) and the phrase comes through the room
  simulator (locara_ros/testing/room_node.py: the robot's own audio/tts 80 ms late at -9 dB
  plus the user)
  2.5 s into its speech; the asr cancels the echo. A first robot turn with no user lets the
  canceller learn the echo path (it gates the mic in the robot's first seconds after start-up).
  The room plays a user clip only in the robot turn the bench arms (room/user_next), so the
  robot's own spoken replies ("Stopping.") get none.

Per phrase: recall (stop published on voice/command for that utterance) and latency from the end
of the spoken word (capture time of the last voiced sample in the mic stream) to the stop's
header stamp (both ROS time on this machine). Also, in the echo condition, stops triggered by the
robot's own voice saying a stop phrase ("I will stop now. Halt is a word.") with no user: must be
0. Prints a table (p50/p90/max per voice and condition) and writes out/bench/stop.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from spoken import espeak  # noqa: E402 - espeak-ng at a given speed, 16 kHz float32
from locara_ros.core import contract as C  # noqa: E402

NS = 1_000_000_000
ROBOT_TALK = ("Let me tell you about my day. I went to the kitchen and looked at the table. "
              "Then I drove to the living room and waited by the sofa for a while.")
SELF_STOP = ("I will stop now. Halt is a word I know. Freeze, stop, and wait are others. "
             "Do not move is one more.")


def voiced_end(x: np.ndarray, rate: int = 16000) -> int:
    """Index just after the last 10 ms frame within 30 dB of the loudest."""
    n = rate // 100
    frames = x[:x.size // n * n].reshape(-1, n)
    db = 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12)
    voiced = np.nonzero(db >= db.max() - 30)[0]
    return int(voiced[-1] + 1) * n if voiced.size else x.size


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if v else float("nan")


class Graph:
    def __init__(self, log_dir: str, with_room: bool, user_wavs: str = "",
                 overrides: dict | None = None) -> None:
        from audio_common_msgs.msg import AudioDataStamped  # noqa: F401
        from std_msgs.msg import Header, String

        from locara_ros.core.topology import TopologyOptions, build
        from locara_ros.msg import RobotCommand, Transcript, VoiceEvent
        from locara_ros.nodes.common import EVENTS_QOS, RELIABLE_QOS
        from locara_ros.srv import ParseCommand
        from locara_ros.testing.inprocess import RosHarness
        from locara_ros.testing.processes import ProcessGroup, start_topology
        self.ros = RosHarness()
        self.group = ProcessGroup(log_dir)
        specs = [s for s in build(TopologyOptions(topology="on_robot", tts_output="topic"))
                 if s.executable in ("asr", "command_parser", "tts")]
        try:
            start_topology(self.group, specs, overrides=overrides)
        except BaseException:
            self.close()  # the harness's spinning thread would keep the bench alive
            raise
        node = self.node = self.ros.node("stop_bench")
        self.commands = self.ros.collect(node, RobotCommand, C.COMMAND.name, RELIABLE_QOS)
        self.finals = self.ros.collect(node, Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
        self.partials = self.ros.collect(node, Transcript, C.TRANSCRIPT_PARTIAL.name,
                                         RELIABLE_QOS)
        self.events = self.ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        self.say = node.create_publisher(String, C.SAY.name, RELIABLE_QOS)
        self.parse = node.create_client(ParseCommand, C.PARSE.name)
        self.room = None
        if with_room:
            from locara_ros.testing.room_node import room_process
            from std_msgs.msg import Int32
            # the user talks only in the robot turns the bench arms (room/user_next): the robot's
            # own replies ("Stopping.") are turns too, and must not get a user clip
            self.room = self.group.start(room_process(
                self.group.log_dir, echo_delay_ms=80.0, echo_gain_db=-9.0, user_offset=2.5,
                user_wav=user_wavs, user_turns="request"))
            self.ends = self.ros.collect(node, Header, "room/user_end", RELIABLE_QOS)
            self.user_next = node.create_publisher(Int32, "room/user_next", RELIABLE_QOS)
            self.room.wait_for_output("loudspeaker connected", timeout=30)
        else:
            from locara_ros.testing.feed import MicFeeder
            self.feeder = MicFeeder(self.ros)
            self.feeder.wait_connected()
        self.ros.wait_for_subscribers(self.say, timeout=30)
        time.sleep(1.0)

    def stops_after(self, t_ns: int) -> list:
        return [c for c in self.commands.snapshot() if c.action == "stop"
                and c.header.stamp.sec * NS + c.header.stamp.nanosec >= t_ns]

    def heard(self, t_ns: int) -> str:
        """What the recognizer made of the audio after t_ns: the finals, else the last partial."""
        def after(msgs: list) -> list[str]:
            return [m.text.strip() for m in msgs
                    if m.header.stamp.sec * NS + m.header.stamp.nanosec >= t_ns]
        finals = after(self.finals.snapshot())
        if finals:
            return " | ".join(finals)
        partials = after(self.partials.snapshot())
        return f"(partial) {partials[-1]}" if partials else "(nothing)"

    def close(self) -> None:
        self.ros.shutdown()
        self.group.stop_all()


def loader(graph: Graph, stop: threading.Event) -> None:
    """20 clients, each keeping a voice/parse call that needs the model going: the model is
    busy all the time. A call refused as busy is retried after 0.5 s (a client that retried at
    once would measure a denial-of-service flood of refusals, not a busy robot)."""
    from locara_ros.srv import ParseCommand

    def one(i: int) -> None:
        while not stop.is_set():
            future = graph.parse.call_async(ParseCommand.Request(
                text=f"kindly get yourself over into the kitchen area number {i}"))
            t0 = time.monotonic()
            while not future.done() and time.monotonic() - t0 < 90 and not stop.is_set():
                time.sleep(0.05)
            result = future.result() if future.done() else None
            if result is not None and not result.success and "busy" in result.message:
                stop.wait(0.5)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    stop.wait()


def _shown(row: dict) -> str:
    if row["latency_ms"] is None:
        return f"MISSED (heard {row['transcript']!r})"
    return f"{row['latency_ms']:.0f} ms"


def run_direct(graph: Graph, clips: list[dict], condition: str) -> list[dict]:
    rows = []
    for clip in clips:
        audio = np.concatenate([np.zeros(8000, np.float32), clip["audio"],
                                np.zeros(16000 * 2, np.float32)])
        t0 = graph.node.get_clock().now().nanoseconds
        graph.feeder.play(audio)
        end_ns = t0 + (8000 + clip["end"]) * NS // 16000
        time.sleep(1.0)
        stops = graph.stops_after(t0)
        rows.append({**{k: v for k, v in clip.items() if k not in ("audio",)},
                     "condition": condition, "heard": bool(stops),
                     "transcript": graph.heard(t0),
                     "latency_ms": ((stops[0].header.stamp.sec * NS + stops[0].header.stamp
                                     .nanosec - end_ns) / 1e6) if stops else None})
        print(f"  {condition:5s} {clip['voice']:11s} {clip['form']:8s} {clip['text']!r}: "
              f"{_shown(rows[-1])}", flush=True)
    return rows


def _speaking_stopped(graph: Graph) -> int:
    from locara_ros.msg import VoiceEvent
    return len([e for e in graph.events.snapshot() if e.type == VoiceEvent.SPEAKING_STOPPED])


def _wait_quiet(graph: Graph, quiet_s: float = 2.0, timeout: float = 90.0) -> None:
    """Until the robot has been silent for quiet_s (its reply to a missed stop included), so the
    room starts a new turn with the next voice/say."""
    from locara_ros.msg import VoiceEvent
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = [e for e in graph.events.snapshot()
              if e.type in (VoiceEvent.SPEAKING_STARTED, VoiceEvent.SPEAKING_STOPPED)]
        started = sum(e.type == VoiceEvent.SPEAKING_STARTED for e in ev)
        if started <= len(ev) - started:  # every start has its stop
            last = max((e.header.stamp.sec * NS + e.header.stamp.nanosec for e in ev), default=0)
            if graph.node.get_clock().now().nanoseconds - last >= quiet_s * NS:
                return
        time.sleep(0.1)
    raise TimeoutError("the robot did not fall silent")


def _robot_turn(graph: Graph, text: str) -> None:
    """The robot says `text`; returns once it stopped (finished or stopped) and the room's turn
    gap has passed."""
    from std_msgs.msg import String

    from locara_ros.testing.inprocess import wait_until
    n = _speaking_stopped(graph)
    graph.say.publish(String(data=text))
    wait_until(lambda: _speaking_stopped(graph) > n, 60, what="the robot's turn to end")
    _wait_quiet(graph)


def run_echo(graph: Graph, clips: list[dict]) -> list[dict]:
    from std_msgs.msg import String
    # Turn 1: the robot alone (the room's user for it is silence). The echo canceller learns the
    # echo path in the robot's first seconds of speech and gates the mic until then, as after
    # any start-up; the stops are measured from turn 2 on.
    _robot_turn(graph, ROBOT_TALK)
    from std_msgs.msg import Int32
    rows = []
    for i, clip in enumerate(clips):
        n = len(graph.ends.snapshot())
        m = _speaking_stopped(graph)
        graph.user_next.publish(Int32(data=i))  # the user says clip i in the next robot turn
        time.sleep(0.3)
        t0 = graph.node.get_clock().now().nanoseconds
        graph.say.publish(String(data=ROBOT_TALK))
        end = graph.ends.wait_for(n + 1, timeout=30)[n]
        end_ns = end.stamp.sec * NS + end.stamp.nanosec
        # the room announces the user's end of speech when the turn starts: wait past it
        time.sleep(max(0.0, (end_ns - graph.node.get_clock().now().nanoseconds) / NS) + 3.0)
        stops = graph.stops_after(t0)
        rows.append({**{k: v for k, v in clip.items() if k not in ("audio",)},
                     "condition": "echo", "heard": bool(stops),
                     "transcript": graph.heard(end_ns - 3 * NS),
                     "latency_ms": ((stops[0].header.stamp.sec * NS + stops[0].header.stamp
                                     .nanosec - end_ns) / 1e6) if stops else None})
        print(f"  echo  {clip['voice']:11s} {clip['form']:8s} {clip['text']!r}: "
              f"{_shown(rows[-1])}", flush=True)
        from locara_ros.testing.inprocess import wait_until
        # the robot's speech (if not stopped), any reply, and the room's turn gap are over
        wait_until(lambda m=m: _speaking_stopped(graph) > m, 60, what="the robot's turn to end")
        _wait_quiet(graph)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", default="piper,espeak-150,espeak-190")
    ap.add_argument("--conditions", default="idle,load,echo")
    ap.add_argument("--forms", default="alone,sentence")
    ap.add_argument("--phrases", default="all", help="all, or comma-separated phrases")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override a node parameter (YAML value), e.g. asr.echo_mode=off")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "stop.json"))
    args = ap.parse_args()
    import yaml
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        node_name, _, param = key.partition(".")
        # YAML, except the words YAML 1.1 turns into booleans (echo_mode=off is a string)
        parsed = value if value.lower() in ("on", "off", "yes", "no") else yaml.safe_load(value)
        overrides.setdefault(node_name, {})[param] = parsed

    from locara_ros.testing.speech import synthesize, write_wav

    from locara_ros.core.command_schema import load_schema
    from locara_ros.testing.domain import DomainLease
    schema = load_schema(ROOT / "config" / "commands.yaml")
    assert schema.stop is not None
    phrases = list(schema.stop.phrases) if args.phrases == "all" else args.phrases.split(",")
    makers = {"piper": synthesize, "espeak-150": lambda t: espeak(t, 150),
              "espeak-190": lambda t: espeak(t, 190)}
    forms = {"alone": "{}", "sentence": "that is enough, {}"}
    clips = []
    for voice in args.voices.split(","):
        for form in args.forms.split(","):
            for phrase in phrases:
                text = forms[form].format(phrase)
                audio = makers[voice](text)
                clips.append({"voice": voice, "form": form, "phrase": phrase, "text": text,
                              "audio": audio, "end": voiced_end(audio)})
    lease = DomainLease()
    lease.acquire()
    rows, self_stops = [], None
    tmp = Path(tempfile.mkdtemp(prefix="bench_stop_"))
    try:
        conditions = args.conditions.split(",")
        if "idle" in conditions or "load" in conditions:
            graph = Graph(str(tmp / "direct"), with_room=False, overrides=overrides)
            try:
                if "idle" in conditions:
                    rows += run_direct(graph, clips, "idle")
                if "load" in conditions:
                    stop = threading.Event()
                    t = threading.Thread(target=loader, args=(graph, stop), daemon=True)
                    t.start()
                    time.sleep(2.0)
                    rows += run_direct(graph, clips, "load")
                    stop.set()
            finally:
                graph.close()
        if "echo" in conditions:
            wavs = []
            for i, clip in enumerate(clips):
                wavs.append(str(write_wav(tmp / f"user{i}.wav", clip["audio"])))
            graph = Graph(str(tmp / "echo"), with_room=True, user_wavs=",".join(wavs),
                          overrides=overrides)
            try:
                rows += run_echo(graph, clips)
                # the robot says stop phrases itself, no user: nothing may stop it
                from std_msgs.msg import String
                t0 = graph.node.get_clock().now().nanoseconds
                for _ in range(3):
                    n = len([e for e in graph.events.snapshot() if e.type == 4])
                    graph.say.publish(String(data=SELF_STOP))
                    from locara_ros.testing.inprocess import wait_until
                    wait_until(lambda n=n: len([e for e in graph.events.snapshot()
                                                if e.type == 4]) > n, 60, what="speech end")
                    time.sleep(1.5)
                self_stops = len(graph.stops_after(t0))
            finally:
                graph.close()
    finally:
        lease.release()

    print(f"\nstop phrases ({len(phrases)}), {time.strftime('%F')}")
    print(f"{'condition':10s}{'voice':12s}{'form':10s}{'recall':>9s}{'p50 ms':>9s}"
          f"{'p90 ms':>9s}{'max ms':>9s}")
    table = []
    keys = sorted({(r["condition"], r["voice"], r["form"]) for r in rows})
    for cond, voice, form in keys:
        sel = [r for r in rows if (r["condition"], r["voice"], r["form"]) == (cond, voice, form)]
        lat = [r["latency_ms"] for r in sel if r["latency_ms"] is not None]
        table.append({"condition": cond, "voice": voice, "form": form,
                      "recall": sum(r["heard"] for r in sel) / len(sel),
                      "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                      "max_ms": max(lat) if lat else float("nan"),
                      "missed": [r["text"] for r in sel if not r["heard"]]})
        t = table[-1]
        print(f"{cond:10s}{voice:12s}{form:10s}{100 * t['recall']:8.0f}%{t['p50_ms']:9.0f}"
              f"{t['p90_ms']:9.0f}{t['max_ms']:9.0f}  missed: {t['missed']}")
    if self_stops is not None:
        print(f"stops triggered by the robot's own voice saying stop phrases: {self_stops}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"table": table, "rows": rows,
                                          "self_stops": self_stops}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
