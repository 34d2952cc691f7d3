#!/usr/bin/env python3
"""End-to-end latency of the on-robot graph, per turn kind, against a sequential baseline.

    . ./locara_env.sh && python bench/e2e.py [--turns 40] [--barge-ins 6] [--voices piper,espeak]

1. Streaming: the on-robot topology as real node processes started exactly as the topology
   describes them (asr, command_parser, tts publishing audio/tts, turn_metrics; vlm with the
   tiny random-weight test model unless --vlm-model is given: vision turns then measure the
   pipeline around a near-free model). The bench is the microphone: it publishes audio/mic in
   real time (20 ms chunks, stamped at capture), one request at a time, and waits until the
   robot's reply has finished and the robot has been silent for a moment before the next (no
   accidental barge-in). Requests mix three kinds: robot commands, vision questions and
   questions the model answers, spoken by the packaged Piper voice and by espeak-ng (150 and 190
   words per minute) in turn. Per turn, voice/metrics gives the stage latencies from the end of
   speech (capture time of the last speech sample): VAD end decision, final transcript, command
   published, first reply token, first robot audio. Resident memory of every node is sampled.
2. Barge-in: after --barge-ins model-answer turns, a command is spoken 0.6 s after the robot
   starts its answer; measured: user speech onset (capture time of its first voiced sample) ->
   the robot stopped (SPEAKING_STOPPED stamp), p50/p90.
3. Sequential "walkie-talkie" baseline, same run, same audio, same models and the same parser
   (the graph stopped first): the whole transcript, then the parser's whole decision and reply,
   then the whole reply synthesized before the first sample can play, plus the same VAD stop
   time (vad_stop_ms), since both need an endpoint. Vision turns have no sequential figure (the
   vlm is not in that process).

Prints tables and writes out/bench/e2e.json.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

NS = 1_000_000_000
# (kind, request). Not the parser's labelled sets: everyday phrasings of each schema action.
REQUESTS = [
    ("command", "Go to the kitchen."), ("command", "Turn left ninety degrees."),
    ("answer", "Tell me a joke."), ("command", "Move forward two meters."),
    ("vision", "What do you see?"), ("command", "Pick up the red ball."),
    ("command", "Go to the charging station."), ("answer", "What can you do?"),
    ("command", "Turn right."), ("vision", "Is the door open?"),
    ("command", "Go to the bedroom."), ("command", "Move backward one meter."),
    ("answer", "How are you today?"), ("command", "Put the cup on the table."),
    ("vision", "How many people are in the room?"), ("command", "Go to the front door."),
    ("command", "Turn around."), ("answer", "Who made you?"),
    ("command", "Take a picture."), ("vision", "What color is the ball?"),
    ("command", "Go to the living room."), ("command", "Drive forward half a meter."),
    ("answer", "What is your name?"), ("command", "Pick up the book."),
    ("vision", "Describe what is in front of you."), ("command", "Go to the office."),
    ("command", "Rotate clockwise forty five degrees."), ("answer", "Tell me something fun."),
    ("command", "Go back to the dock."), ("vision", "Is anyone there?"),
    ("command", "Turn left."), ("command", "Go to the garage."),
    ("answer", "What time do you usually charge?"), ("command", "Move forward one meter."),
    ("vision", "What is on the table?"), ("command", "Go to the bathroom."),
    ("command", "Pick up the bottle."), ("answer", "Say something nice."),
    ("command", "Turn right forty five degrees."), ("vision", "Do you see a cup?"),
]
BARGE_IN_REQUEST = "Go to the kitchen."
STAGES = ("vad_end_ms", "transcript_ms", "first_reply_token_ms", "command_ms", "first_audio_ms")


def pct(values, q):
    v = [x for x in values if x is not None and x >= 0 and x == x]
    return float(np.percentile(v, q)) if v else float("nan")


class MemorySampler:
    """Peak resident memory (RSS) of each node process, sampled every 0.5 s."""

    def __init__(self, procs: dict) -> None:
        import psutil
        self.procs = {name: psutil.Process(p.pid) for name, p in procs.items()}
        self.peak: dict[str, int] = dict.fromkeys(self.procs, 0)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            total = 0
            for name, proc in self.procs.items():
                try:
                    rss = sum(p.memory_info().rss for p in [proc, *proc.children(True)])
                except Exception:  # noqa: BLE001 - a process that exited counts as 0
                    rss = 0
                self.peak[name] = max(self.peak[name], rss)
                total += rss
            self.peak_total = max(self.peak_total, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def voiced_span(x: np.ndarray, rate: int = 16000) -> tuple[int, int]:
    """First and last+1 sample of the 10 ms frames within 30 dB of the loudest."""
    n = rate // 100
    frames = x[:x.size // n * n].reshape(-1, n)
    db = 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12)
    voiced = np.nonzero(db >= db.max() - 30)[0]
    return (int(voiced[0]) * n, int(voiced[-1] + 1) * n) if voiced.size else (0, x.size)


def make_clips(turns: int, voices: list[str]) -> list[dict]:
    """The requests, each said by the next voice in turn (Piper; espeak-ng 150 / 190 wpm)."""
    from spoken import espeak
    from locara_ros.testing.speech import synthesize
    cycle = []
    for v in voices:
        cycle += ["piper"] if v == "piper" else ["espeak-150", "espeak-190"]
    clips = []
    for k in range(turns):
        kind, text = REQUESTS[k % len(REQUESTS)]
        voice = cycle[k % len(cycle)]
        audio = (synthesize(text, varied=True) if voice == "piper"
                 else espeak(text, int(voice.split("-")[1])))
        clips.append({"kind": kind, "text": text, "voice": voice, "audio": audio})
    return clips


def _stamp_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


class Bench:
    """The graph, and the bench as its microphone and observer."""

    def __init__(self, out: Path, vlm: tuple[str, str, str], sets: dict) -> None:
        from locara_ros.testing.feed import MicFeeder
        from locara_ros.testing.tiny_vlm import make_tiny_vlm

        from locara_ros.core.topology import TopologyOptions, build
        from locara_ros.testing.domain import DomainLease
        from locara_ros.testing.inprocess import RosHarness
        from locara_ros.testing.observer import GraphObserver
        from locara_ros.testing.processes import ProcessGroup, start_topology

        model, mmproj, handler = vlm
        overrides: dict = {"asr": {"echo_mode": "off"}}  # no loudspeaker: audio/tts is a topic
        self.random_vlm = not model
        if self.random_vlm:
            model, mmproj, handler = (str(x) for x in make_tiny_vlm(out / "tiny_vlm"))
            overrides["vlm"] = {"max_tokens": 12}  # noise: keep its answers short
        for node, params in sets.items():
            overrides.setdefault(node, {}).update(params)
        self.lease = DomainLease()
        self.lease.acquire()
        self.ros = RosHarness()
        self.group = ProcessGroup(str(out / "e2e_logs"))
        try:
            self.graph = GraphObserver(self.ros)
            specs = [s for s in build(TopologyOptions(
                topology="on_robot", tts_output="topic", vlm_model=model, vlm_mmproj=mmproj,
                vlm_chat_handler=handler)) if s.executable != "mic_capture"]
            self.procs = start_topology(self.group, specs, overrides=overrides)
            self.feeder = MicFeeder(self.ros, "e2e_mic")
            self.feeder.wait_connected()
            self._camera()
        except BaseException:
            self.close()
            raise
        self.sampler = MemorySampler(self.procs)

    def _camera(self) -> None:
        """A camera frame for the vlm (a still test image, resent every second)."""
        import cv2
        from sensor_msgs.msg import Image

        from locara_ros.core import contract as C
        from locara_ros.nodes.common import publisher
        node = self.ros.node("e2e_camera")
        pub = publisher(node, C.CAMERA, Image)
        frame = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(frame, (100, 80), (220, 200), (0, 0, 255), -1)
        msg = Image(height=240, width=320, encoding="bgr8", step=960, data=frame.tobytes())
        node.create_timer(1.0, lambda: pub.publish(msg))

    def now_ns(self) -> int:
        return self.feeder.node.get_clock().now().nanoseconds

    def speaking(self) -> tuple[int, int, int]:
        """(SPEAKING_STARTED count, SPEAKING_STOPPED count, last stamp of either)."""
        from locara_ros.msg import VoiceEvent
        ev = [e for e in self.graph.events if e.type in (VoiceEvent.SPEAKING_STARTED,
                                                         VoiceEvent.SPEAKING_STOPPED)]
        started = sum(e.type == VoiceEvent.SPEAKING_STARTED for e in ev)
        return started, len(ev) - started, max((_stamp_ns(e.header.stamp) for e in ev),
                                               default=0)

    def wait_quiet(self, quiet_s: float = 1.0, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started, stopped, last = self.speaking()
            if started <= stopped and self.now_ns() - last >= quiet_s * NS:
                return
            time.sleep(0.05)
        raise TimeoutError("the robot did not fall silent")

    def turn(self, clip: dict, timeout: float = 60.0) -> dict:
        """Say one request; wait for its metrics and the end of the robot's reply."""
        audio = np.concatenate([np.zeros(4800, np.float32), clip["audio"],
                                np.zeros(16000, np.float32)])
        t0 = self.now_ns()
        self.feeder.play(audio)
        row = self._result(clip, t0, timeout)
        self.wait_quiet()
        return row

    def _result(self, clip: dict, t0: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        final = None
        while time.monotonic() < deadline:
            final = next((f for f in list(self.graph.finals) if f.text.strip()
                          and _stamp_ns(f.header.stamp) >= t0), None)
            metrics = final and next((m for m in list(self.graph.metrics)
                                      if m.utterance_id == final.utterance_id), None)
            if metrics:
                command = next((c for c in list(self.graph.commands)
                                if c.utterance_id == final.utterance_id), None)
                row = {**{k: v for k, v in clip.items() if k != "audio"},
                       "heard": final.text.strip(), "utterance_id": final.utterance_id,
                       "action": command.action if command else "",
                       **{k: float(getattr(metrics, k)) for k in STAGES}}
                print(f"  {clip['kind']:7s} {clip['voice']:10s} {clip['text']!r:40s} -> "
                      f"{row['action'] or '(reply)':10s} first audio "
                      f"{row['first_audio_ms']:.0f} ms", flush=True)
                return row
            time.sleep(0.05)
        print(f"  {clip['kind']:7s} {clip['voice']:10s} {clip['text']!r}: NO TURN "
              f"(heard {final.text if final else None!r})", flush=True)
        return {**{k: v for k, v in clip.items() if k != "audio"}, "heard": "",
                "utterance_id": "", "action": "", **dict.fromkeys(STAGES, float("nan"))}

    def barge_in(self, question: dict, command: dict) -> dict:
        """A model answer, talked over by a command 0.6 s after the robot starts speaking."""
        from locara_ros.msg import VoiceEvent
        started, stopped, _ = self.speaking()
        audio = np.concatenate([np.zeros(4800, np.float32), question["audio"],
                                np.zeros(8000, np.float32)])
        self.feeder.play(audio)
        deadline = time.monotonic() + 30
        while self.speaking()[0] <= started and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.speaking()[0] <= started:
            self.wait_quiet()
            return {"text": question["text"], "onset_to_stopped_ms": None,
                    "note": "the robot never started answering"}
        time.sleep(0.6)
        if self.speaking()[1] > stopped:
            self.wait_quiet()
            return {"text": question["text"], "onset_to_stopped_ms": None,
                    "note": "the answer was over in 0.6 s"}
        onset = voiced_span(command["audio"])[0]
        t0 = self.now_ns()
        self.feeder.play(np.concatenate([command["audio"], np.zeros(16000, np.float32)]))
        onset_ns = t0 + onset * NS // 16000
        stops = [e for e in list(self.graph.events) if e.type == VoiceEvent.SPEAKING_STOPPED
                 and _stamp_ns(e.header.stamp) >= t0]
        barged = [e for e in list(self.graph.events) if e.type == VoiceEvent.BARGE_IN
                  and _stamp_ns(e.header.stamp) >= t0]
        row = {"text": question["text"], "voice": command["voice"],
               "onset_to_stopped_ms": ((_stamp_ns(stops[0].header.stamp) - onset_ns) / 1e6
                                       if stops and barged else None),
               "note": "" if barged else "no barge-in"}
        print(f"  barge-in {command['voice']:10s} over {question['text']!r}: "
              f"{row['onset_to_stopped_ms'] if row['onset_to_stopped_ms'] is None else round(row['onset_to_stopped_ms'])} ms "  # noqa: E501
              f"{row['note']}", flush=True)
        self._result(command, t0, 30)
        self.wait_quiet()
        return row

    def close(self) -> None:
        if hasattr(self, "sampler"):
            self.sampler.stop()
        self.group.stop_all()
        self.ros.shutdown()
        self.lease.release()


def run_baseline(clips: list[dict], vad_stop_ms: float) -> list[dict]:
    """Wait for each whole stage before starting the next, with the same models in process and
    the same audio."""
    import yaml
    from piper import PiperVoice

    from locara_ros.core.backends.asr import FasterWhisperTranscriber
    from locara_ros.core.backends.chat import LlamaCppCommandModel
    from locara_ros.core.command_schema import load_schema
    from locara_ros.core.models import resolve_piper_voice, resolve_whisper
    from locara_ros.core.parser import CommandParser, ParserConfig

    config = yaml.safe_load((ROOT / "config" / "on_robot.yaml").read_text())
    parser_params = config["/**/command_parser"]["ros__parameters"]
    asr = FasterWhisperTranscriber(resolve_whisper("tiny.en"), compute_type="int8", beam_size=1)
    # The node's defaults (nodes/command_parser.py) and the topology's parameters.
    model = LlamaCppCommandModel("", n_ctx=int(parser_params.get("n_ctx", 2048)),
                                 decode=parser_params.get("decode", "two_stage"),
                                 action_score=parser_params.get("action_score", "mean"),
                                 copy_free_text=bool(parser_params.get("copy_free_text", True)))
    parser = CommandParser(load_schema(str(ROOT / "config" / "commands.yaml")), model,
                           ParserConfig(reply_source=parser_params.get("reply_source", "model")))
    voice = PiperVoice.load(str(resolve_piper_voice()[0]))
    parser.parse("hello", use_history=False)  # warm the prompt cache, as the node does
    rows = []
    for clip in clips:
        if clip["kind"] == "vision":
            continue  # no vlm in process: a sequential figure would leave out its cost
        t0 = time.perf_counter()
        heard = asr.transcribe(clip["audio"], "en").text
        t1 = time.perf_counter()
        outcome = parser.parse(heard, use_history=False)
        t2 = time.perf_counter()
        reply = outcome.reply or "Okay."
        pcm = [c.audio_float_array for c in voice.synthesize(reply)]
        t3 = time.perf_counter()
        rows.append({"kind": clip["kind"], "voice": clip["voice"], "text": heard,
                     "asr_ms": (t1 - t0) * 1000, "llm_ms": (t2 - t1) * 1000,
                     "tts_ms": (t3 - t2) * 1000,
                     "first_audio_ms": vad_stop_ms + (t3 - t0) * 1000,
                     "reply_audio_s": sum(p.size for p in pcm) / voice.config.sample_rate})
    model.close()
    return rows


def by_kind(rows: list[dict], keys: tuple[str, ...]) -> dict:
    out = {}
    for kind in ("command", "vision", "answer", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        out[kind] = {"n": len(sel), **{k: {"p50": pct([r[k] for r in sel], 50),
                                           "p90": pct([r[k] for r in sel], 90)} for k in keys}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--barge-ins", type=int, default=6)
    ap.add_argument("--voices", default="piper,espeak", help="piper, espeak (150 and 190 wpm)")
    ap.add_argument("--vlm-model", default="")
    ap.add_argument("--vlm-mmproj", default="")
    ap.add_argument("--vlm-chat-handler", default="")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override a node parameter (repeatable), e.g. asr.threads=1")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]

    import yaml
    asr_params = yaml.safe_load((ROOT / "config" / "on_robot.yaml").read_text())[
        "/**/asr"]["ros__parameters"]
    vad_stop_ms = float(asr_params.get("vad_stop_ms", 400.0))
    clips = make_clips(args.turns, voices)
    answers = [c for c in make_clips(len(REQUESTS), voices) if c["kind"] == "answer"]
    barge_command = make_clips(1, ["piper"])[0]
    barge_command.update(kind="command", text=BARGE_IN_REQUEST)
    from locara_ros.testing.speech import synthesize
    barge_command["audio"] = synthesize(BARGE_IN_REQUEST)

    t = time.monotonic()
    sets: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        node, _, param = key.partition(".")
        sets.setdefault(node, {})[param] = yaml.safe_load(value)
    bench = Bench(out, (args.vlm_model, args.vlm_mmproj, args.vlm_chat_handler), sets)
    try:
        print(f"{len(clips)} turns, one at a time:", flush=True)
        turns = [bench.turn(c) for c in clips]
        print(f"{args.barge_ins} barge-ins:", flush=True)
        barge = [bench.barge_in(answers[k % len(answers)], barge_command)
                 for k in range(args.barge_ins)]
        memory = {"per_node_mb": {k: round(v / 2**20, 1) for k, v in bench.sampler.peak.items()},
                  "stack_peak_mb": round(bench.sampler.peak_total / 2**20, 1)}
        random_vlm = bench.random_vlm
    finally:
        bench.close()
    streaming_s = time.monotonic() - t
    print("sequential baseline ...", flush=True)
    baseline = run_baseline(clips, vad_stop_ms)

    stream = by_kind([r for r in turns if r["utterance_id"]], STAGES)
    seq_keys = ("asr_ms", "llm_ms", "tts_ms", "first_audio_ms")
    seq = by_kind(baseline, seq_keys)
    b = [r["onset_to_stopped_ms"] for r in barge if r["onset_to_stopped_ms"] is not None]
    print(f"\nend-to-end, on-robot graph, {len(turns)} turns ({sum(bool(r['utterance_id']) for r in turns)} measured), voices {', '.join(voices)} "  # noqa: E501
          f"({platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})"
          + (" - vision: random-weight test vlm" if random_vlm else ""))
    print(f"{'stage (from end of speech), p50/p90 ms':<42}" + "".join(
        f"{k + ' (' + str(stream[k]['n']) + ')':>18}" for k in ("command", "vision", "answer",
                                                                  "all")))
    for key in STAGES:
        print(f"{'streaming: ' + key[:-3]:<42}" + "".join(
            f"{stream[k][key]['p50']:>9.0f}/{stream[k][key]['p90']:<8.0f}"
            for k in ("command", "vision", "answer", "all")))
    for key in seq_keys:
        print(f"{'sequential: ' + key[:-3]:<42}" + "".join(
            f"{seq[k][key]['p50']:>9.0f}/{seq[k][key]['p90']:<8.0f}"
            for k in ("command", "vision", "answer", "all")))
    ratios = {k: stream[k]["first_audio_ms"]["p50"] / seq[k]["first_audio_ms"]["p50"]
              for k in ("command", "answer")}
    print("first robot audio, streaming / sequential (p50): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(f"barge-in, user speech onset -> robot stopped: {len(b)}/{len(barge)} measured, "
          f"p50 {pct(b, 50):.0f} ms, p90 {pct(b, 90):.0f} ms")
    print(f"resident memory: stack peak {memory['stack_peak_mb']} MB; per node "
          + ", ".join(f"{k} {v} MB" for k, v in memory["per_node_mb"].items()))
    result = {"machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                          "date": time.strftime("%Y-%m-%d")},
              "voices": voices, "random_vlm": random_vlm, "set": args.set,
              "vad_stop_ms": vad_stop_ms,
              "streaming": {"turns": turns, "by_kind": stream, "wall_s": streaming_s},
              "sequential": {"turns": baseline, "by_kind": seq},
              "ratio_first_audio_p50": ratios,
              "barge_in": {"rows": barge, "p50_ms": pct(b, 50), "p90_ms": pct(b, 90)},
              "memory": memory}
    (out / "e2e.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out / 'e2e.json'}")
    return 0 if any(r["utterance_id"] for r in turns) else 1


if __name__ == "__main__":
    sys.exit(main())
