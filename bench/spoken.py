#!/usr/bin/env python3
"""Spoken requests: the labelled requests said by synthetic voices, recognized by Whisper with and
without the robot's words as priming, then parsed.

    . ./locara_env.sh && python bench/spoken.py [--split heldout] [--model tiny.en]

For each labelled request without context (test/data/utterances.yaml) and each voice (Piper
en_US-joe, espeak-ng en-us at 150 and 190 words per minute), the speech (with 0.3 s of silence
around it and -55 dBFS noise, 16 kHz) is transcribed by the packaged Whisper (the asr node's
FasterWhisperTranscriber, greedy) with priming off, with the schema's words as initial_prompt,
and as hotwords (locara_ros.core.intents.recognizer_prompt); the transcript goes through the
command parser (templates + the packaged SmolLM2). Also: 2 s clips of noise alone, to see
whether priming makes Whisper write its prompt into silence.

Reports word error rate, exact command %, and dangerous commands per voice and priming. Writes
out/bench/spoken.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wer(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(edits, reference length) by word-level Levenshtein distance."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)], len(ref)


def espeak(text: str, speed: int) -> np.ndarray:
    import soundfile as sf

    from locara_ros.core.audio import resample
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", f.name, text],
                       check=True)
        data, rate = sf.read(f.name, dtype="float32")
    return resample(data, rate, 16000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "test" / "data" / "utterances.yaml"))
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--primings", default="none,prompt,hotwords")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "spoken.json"))
    args = ap.parse_args()

    from locara_ros.testing.speech import noise, synthesize

    from locara_ros.core.backends.asr import FasterWhisperTranscriber
    from locara_ros.core.backends.chat import LlamaCppCommandModel
    from locara_ros.core.command_schema import CLARIFY, load_schema, same_command
    from locara_ros.core.intents import recognizer_prompt
    from locara_ros.core.models import resolve_whisper
    from locara_ros.core.parser import CommandParser, ParserConfig
    from locara_ros.core.transcripts import normalize_text

    schema = load_schema(ROOT / "config" / "commands.yaml")
    items = [i for i in yaml.safe_load(Path(args.data).read_text())["items"]
             if not i.get("context") and (args.split == "all" or i.get("split") == args.split)]
    words = recognizer_prompt(schema)
    whisper = FasterWhisperTranscriber(resolve_whisper(args.model), label=args.model)
    parser = CommandParser(schema, LlamaCppCommandModel(n_threads=2, decode="two_stage",
                                                        copy_free_text=True),
                           ParserConfig(history_turns=0))
    voices = {"piper": lambda t: synthesize(t, varied=True),
              "espeak-150": lambda t: espeak(t, 150),
              "espeak-190": lambda t: espeak(t, 190)}
    pad = np.zeros(int(0.3 * 16000), np.float32)
    audio = {}
    for voice, make in voices.items():
        for item in items:
            x = np.concatenate([pad, make(item["text"]), pad])
            audio[(voice, item["text"])] = x + noise(x.size / 16000, 16000, -55.0, seed=3)
    rows, table = [], []
    for priming in args.primings.split(","):
        prompt = words if priming == "prompt" else ""
        whisper.hotwords = words if priming == "hotwords" else ""
        for voice in voices:
            edits = total = exact = dangerous = 0
            t0 = time.monotonic()
            for item in items:
                result = whisper.transcribe(audio[(voice, item["text"])], "en", prompt)
                heard = result.text
                e, n = wer(normalize_text(item["text"]).split(), normalize_text(heard).split())
                edits, total = edits + e, total + n
                out = parser.parse(heard, use_history=False)
                action = out.command.action if out.command else (
                    CLARIFY if out.needs_clarification else "")
                args_ = dict(out.command.arguments) if out.command else {}
                ok = same_command(action, args_, item["action"], item.get("arguments") or {})
                moves = action in schema.actions and schema.actions[action].moves and \
                    action != (schema.stop.action if schema.stop else "")
                exact += ok
                dangerous += moves and not ok
                rows.append({"voice": voice, "priming": priming, "text": item["text"],
                             "heard": heard, "confidence": round(result.confidence, 3),
                             "got": [action, args_], "exact": ok, "moves": bool(moves)})
            noise_text = [whisper.transcribe(noise(2.0, 16000, -55.0, seed=s), "en",
                                             prompt).text for s in range(3)]
            table.append({"voice": voice, "priming": priming, "n": len(items),
                          "wer": 100.0 * edits / max(1, total),
                          "exact_pct": 100.0 * exact / len(items), "dangerous": dangerous,
                          "noise_text": noise_text, "seconds": time.monotonic() - t0})
            r = table[-1]
            print(f"{priming:9s} {voice:11s} WER {r['wer']:5.1f} %  exact {r['exact_pct']:5.1f} %"
                  f"  dangerous {dangerous}  noise -> {noise_text}", flush=True)
    print(f"\nspoken {args.split} requests ({len(items)}), Whisper {args.model}, "
          "parser: templates + SmolLM2-135M")
    print(f"{'priming':10s}{'voice':12s}{'WER %':>8s}{'exact %':>9s}{'danger':>8s}")
    for r in table:
        print(f"{r['priming']:10s}{r['voice']:12s}{r['wer']:8.1f}{r['exact_pct']:9.1f}"
              f"{r['dangerous']:8d}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"prompt": words, "table": table, "rows": rows,
                                          "date": time.strftime("%F")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
