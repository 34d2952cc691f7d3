#!/usr/bin/env python3
"""Command parser benchmark: exact-match accuracy, schema validity and latency on the labelled set.

Runs the parser core (the same code the command_parser node runs) in-process on
test/data/utterances.yaml with the default model (packaged SmolLM2-135M-Instruct, or --model),
once per prompt/decoding variant, and prints a table; JSON goes to out/bench/parser.json.

Latency columns: "first token" = start of the request -> first reply text; "command" = start ->
validated command (or the decision that there is none). The stop fast path is rule-based (0 ms)
and is counted in accuracy but not in the latency percentiles.

    python bench/parser.py                       # all variants
    python bench/parser.py --variants default,no_few_shot --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout's code, not an older installed copy

from locara_ros.core.backends.chat import LlamaCppCommandModel  # noqa: E402
from locara_ros.core.command_schema import CLARIFY, load_schema, same_command  # noqa: E402
from locara_ros.core.parser import CommandParser, ParserConfig  # noqa: E402

# name -> ParserConfig changes ("parser") and LlamaCppCommandModel settings ("model"). Every
# variant starts from BASE (the shipped defaults of the node); "grammar_*" are the one-pass
# decoding the parser used before two-stage decoding.
BASE_MODEL = {"constrained": True, "decode": "two_stage", "copy_free_text": True,
              "min_action_prob": 0.0, "action_score": "mean"}
VARIANTS: dict[str, dict[str, dict]] = {
    "default": {},
    "grammar": {"model": {"decode": "grammar", "copy_free_text": False}},
    "grammar_copy": {"model": {"decode": "grammar"}},
    "two_stage_no_copy": {"model": {"copy_free_text": False}},
    "two_stage_sum": {"model": {"action_score": "sum"}},
    "all_examples": {"parser": {"few_shot_select": "all"}},
    "similar_8": {"parser": {"few_shot_select": "similar", "few_shot": 8}},
    "no_few_shot": {"parser": {"few_shot": 0, "few_shot_select": "all"}},
    "spoken_numbers": {"parser": {"normalize_numbers": False}},
    "unconstrained": {"model": {"constrained": False}},
    "template_reply": {"parser": {"reply_source": "template"}},
}


def load_items(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["items"]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_variant(name: str, model: LlamaCppCommandModel, schema, items: list[dict],
                verbose: bool) -> dict:
    settings = {**BASE_MODEL, **VARIANTS[name].get("model", {})}
    for key, value in settings.items():
        setattr(model, key, value)
    cfg = replace(ParserConfig(history_turns=0, generation_timeout_s=120.0),
                  **VARIANTS[name].get("parser", {}))
    parser = CommandParser(schema, model, cfg)
    parser.parse("hello", use_history=False)  # fill the prompt cache, as the node does
    rows = []
    for item in items:
        t0 = time.monotonic()
        out = parser.parse(item["text"], use_history=False,
                           vision=lambda q, t: (True, "a test answer", "ok"))
        total = time.monotonic() - t0
        action = out.command.action if out.command is not None else (
            CLARIFY if out.needs_clarification else "")
        args = dict(out.command.arguments) if out.command is not None else {}
        valid = out.success  # success => the output validated against the schema
        ok = same_command(action, args, item["action"], item.get("arguments") or {})
        rows.append({"text": item["text"], "expected": [item["action"], item.get("arguments")],
                     "got": [action, args], "valid": valid, "exact": ok,
                     "fast_path": out.origin == "fast_path", "message": out.message,
                     "first_reply_s": out.first_reply_s, "command_s": out.command_s,
                     "confidence": out.confidence,
                     "total_s": total})
        if verbose:
            print(f"  {'OK ' if ok else 'BAD'} {item['text']!r} -> {action} {args} "
                  f"p={out.confidence:.2f} ({total:.2f} s)", file=sys.stderr)
    llm = [r for r in rows if not r["fast_path"]]
    first = [r["first_reply_s"] for r in llm if r["first_reply_s"] is not None]
    cmd = [r["command_s"] for r in llm if r["command_s"] is not None]
    return {
        "variant": name, "config": asdict(cfg), "model": settings,
        "n": len(rows), "valid": sum(r["valid"] for r in rows),
        "exact": sum(r["exact"] for r in rows),
        "accuracy": sum(r["exact"] for r in rows) / len(rows),
        "first_token_p50_ms": _ms(pct(first, 0.5)), "first_token_p90_ms": _ms(pct(first, 0.9)),
        "command_p50_ms": _ms(pct(cmd, 0.5)), "command_p90_ms": _ms(pct(cmd, 0.9)),
        "mean_total_s": statistics.fmean(r["total_s"] for r in llm) if llm else None,
        "rows": rows,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", default=str(ROOT / "config" / "commands.yaml"))
    ap.add_argument("--data", default=str(ROOT / "test" / "data" / "utterances.yaml"))
    ap.add_argument("--model", default="", help="GGUF path (default: packaged SmolLM2-135M)")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads (0 = llama.cpp's default; 1 suits a shared CPU)")
    ap.add_argument("--variants", default="default",
                    help=f"comma-separated, or 'all': {', '.join(VARIANTS)}")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "parser.json"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    schema = load_schema(args.schema)
    items = load_items(Path(args.data))
    t0 = time.monotonic()
    model = LlamaCppCommandModel(args.model, n_threads=args.threads)
    load_s = time.monotonic() - t0
    results = []
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            ap.error(f"unknown variant {name}; known: {', '.join(VARIANTS)}")
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results.append(run_variant(name, model, schema, items, args.verbose))
        r = results[-1]
        print(f"[bench] {name}: {r['exact']}/{r['n']} exact, {r['valid']}/{r['n']} valid, "
              f"command p50 {r['command_p50_ms']} ms", file=sys.stderr, flush=True)

    header = (f"{'variant':<16}{'valid':>8}{'exact':>8}{'acc %':>8}{'1st tok p50':>13}"
              f"{'p90':>8}{'command p50':>13}{'p90':>8}")
    print(f"model {model.name}, {len(items)} utterances, load {load_s:.2f} s")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['variant']:<16}{r['valid']:>4}/{r['n']:<3}{r['exact']:>5}/{r['n']:<3}"
              f"{100 * r['accuracy']:>7.1f}{_f(r['first_token_p50_ms']):>13}"
              f"{_f(r['first_token_p90_ms']):>8}{_f(r['command_p50_ms']):>13}"
              f"{_f(r['command_p90_ms']):>8}")
    print("latencies in ms, LLM path only (fast-path stops excluded)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model.name, "threads": args.threads,
                               "load_s": load_s, "results": results}, indent=1))
    print(f"wrote {out}")
    model.close()
    return 0


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    sys.exit(main())
