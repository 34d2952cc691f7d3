#!/usr/bin/env python3
"""End-to-end latency of the on-robot graph against a sequential "walkie-talkie" baseline.

    . ./locara_env.sh && python bench/e2e.py [--utterances 20] [--gap 7]

1. Streaming: the on-robot topology (real node processes started exactly as the topology
   describes them, real packaged models, the file mic source replaying Piper-synthesized
   requests in real time, tts publishing audio/tts). Per turn, voice/metrics gives the stage
   latencies from the end of speech (capture time of the last speech sample): VAD end decision,
   final transcript, first reply token, command published, first robot audio. Resident memory
   of every node process is sampled during the run.
2. Sequential baseline, same run, same models, same machine (the graph stopped first): for each
   utterance wait for the whole transcript (faster-whisper on the whole utterance), then the whole
   LLM reply (the same parser, generation to the end), then synthesize the whole reply (Piper, all
   sentences) before the first sample can play. Its latency is counted from the same point: the
   end of speech plus the same VAD stop time (vad_stop_ms), since both need an endpoint.

Prints a table and writes out/bench/e2e.json.
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
sys.path.insert(0, str(ROOT / "test"))

REQUESTS = [
    "Go to the kitchen.", "Turn left.", "Move forward two meters.", "Pick up the cup.",
    "Go to the charging station.", "What do you see?", "Put it on the table.",
    "Turn right ninety degrees.", "Go to the bedroom.", "Say hello to everyone.",
    "Pick up the red ball.", "Move backward one meter.", "Go to the office.",
    "Tell me a joke.", "Go to the front door.", "Pick up the book.", "Turn around.",
    "Go to the garage.", "Say good morning.", "Go to the bathroom.", "Put the bottle down.",
    "Go to the living room.",
]
STAGES = ("vad_end_ms", "transcript_ms", "first_reply_token_ms", "command_ms", "first_audio_ms")


def pct(values, q):
    v = [x for x in values if x is not None and x >= 0]
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


def run_streaming(requests: list[str], gap: float, out: Path) -> tuple[list[dict], dict]:
    from support.speech import conversation, write_wav

    from locara_ros.core.topology import TopologyOptions, build
    from locara_ros.testing.domain import DomainLease
    from locara_ros.testing.inprocess import RosHarness
    from locara_ros.testing.observer import GraphObserver
    from locara_ros.testing.processes import ProcessGroup, start_topology

    wav = write_wav(out / "e2e_requests.wav", conversation(requests, lead=1.0, gap=gap, tail=2.0))
    lease = DomainLease()
    lease.acquire()
    ros = RosHarness()
    group = ProcessGroup(str(out / "e2e_logs"))
    try:
        graph = GraphObserver(ros)
        specs = build(TopologyOptions(topology="on_robot", mic_source="file", mic_file=str(wav),
                                      tts_output="topic"))
        procs = start_topology(group, [s for s in specs if s.executable != "mic_capture"],
                               overrides={"asr": {"echo_mode": "off"}})
        sampler = MemorySampler(procs)
        mic = start_topology(group, [s for s in specs if s.executable == "mic_capture"])
        sampler.procs.update({k: __import__("psutil").Process(v.pid) for k, v in mic.items()})
        sampler.peak.update(dict.fromkeys(mic, 0))
        mic["mic_capture"].wait_for_output("file source finished",
                                           timeout=len(requests) * (gap + 6) + 120)
        graph.wait_idle(timeout=180)
        sampler.stop()
        turns = []
        for m in sorted(graph.metrics, key=lambda m: (m.speech_end.sec, m.speech_end.nanosec)):
            final = next((f for f in graph.finals if f.utterance_id == m.utterance_id), None)
            command = next((c for c in graph.commands if c.utterance_id == m.utterance_id), None)
            turns.append({"utterance_id": m.utterance_id, "text": final.text if final else "",
                          "command": command.action if command else "",
                          **{k: float(getattr(m, k)) for k in STAGES}})
        memory = {"per_node_mb": {k: round(v / 2**20, 1) for k, v in sampler.peak.items()},
                  "stack_peak_mb": round(sampler.peak_total / 2**20, 1)}
        return turns, memory
    finally:
        group.stop_all()
        ros.shutdown()
        lease.release()


def run_baseline(requests: list[str], vad_stop_ms: float) -> list[dict]:
    """Wait for each whole stage before starting the next, with the same models in process."""
    import yaml
    from piper import PiperVoice
    from support.speech import synthesize

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
    for text in requests:
        audio = synthesize(text, varied=True)
        t0 = time.perf_counter()
        heard = asr.transcribe(audio, "en").text
        t1 = time.perf_counter()
        outcome = parser.parse(heard, use_history=False)
        t2 = time.perf_counter()
        reply = outcome.reply or "Okay."
        pcm = [c.audio_float_array for c in voice.synthesize(reply)]
        t3 = time.perf_counter()
        rows.append({"text": heard, "asr_ms": (t1 - t0) * 1000, "llm_ms": (t2 - t1) * 1000,
                     "tts_ms": (t3 - t2) * 1000,
                     "first_audio_ms": vad_stop_ms + (t3 - t0) * 1000,
                     "reply_audio_s": sum(p.size for p in pcm) / voice.config.sample_rate})
    model.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--gap", type=float, default=7.0, help="seconds between requests")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    requests = (REQUESTS * 2)[: args.utterances]

    import yaml
    asr_params = yaml.safe_load((ROOT / "config" / "on_robot.yaml").read_text())[
        "/**/asr"]["ros__parameters"]
    vad_stop_ms = float(asr_params.get("vad_stop_ms", 400.0))

    t = time.monotonic()
    turns, memory = run_streaming(requests, args.gap, out)
    streaming_s = time.monotonic() - t
    baseline = run_baseline(requests, vad_stop_ms)

    stream_first = [r["first_audio_ms"] for r in turns]
    base_first = [r["first_audio_ms"] for r in baseline]
    ratio = pct(stream_first, 50) / pct(base_first, 50)
    rows = [(k.replace("_ms", ""), pct([r[k] for r in turns], 50), pct([r[k] for r in turns], 90))
            for k in STAGES]
    print(f"\nend-to-end, on-robot graph, {len(turns)} turns "
          f"({platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
    print(f"{'stage (from end of speech)':<34}{'p50 ms':>10}{'p90 ms':>10}")
    for name, p50, p90 in rows:
        print(f"{'streaming: ' + name:<34}{p50:>10.0f}{p90:>10.0f}")
    for key in ("asr_ms", "llm_ms", "tts_ms", "first_audio_ms"):
        values = [r[key] for r in baseline]
        print(f"{'sequential: ' + key[:-3]:<34}{pct(values, 50):>10.0f}{pct(values, 90):>10.0f}")
    print(f"first robot audio, streaming / sequential (p50): {ratio:.2f}")
    print(f"resident memory: stack peak {memory['stack_peak_mb']} MB; per node "
          + ", ".join(f"{k} {v} MB" for k, v in memory["per_node_mb"].items()))
    result = {"machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                          "date": time.strftime("%Y-%m-%d")},
              "utterances": len(requests), "turns_measured": len(turns),
              "streaming": {"turns": turns, "p50": {k: pct([r[k] for r in turns], 50)
                                                    for k in STAGES},
                            "p90": {k: pct([r[k] for r in turns], 90) for k in STAGES},
                            "wall_s": streaming_s},
              "sequential": {"turns": baseline,
                             "p50": {k: pct([r[k] for r in baseline], 50)
                                     for k in ("asr_ms", "llm_ms", "tts_ms", "first_audio_ms")},
                             "p90": {k: pct([r[k] for r in baseline], 90)
                                     for k in ("asr_ms", "llm_ms", "tts_ms", "first_audio_ms")}},
              "ratio_first_audio_p50": ratio, "memory": memory, "vad_stop_ms": vad_stop_ms}
    (out / "e2e.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'e2e.json'}")
    return 0 if turns else 1


if __name__ == "__main__":
    sys.exit(main())
