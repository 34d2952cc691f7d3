#!/usr/bin/env python3
"""Command parser benchmark: exactness, safety and decision time on the labelled requests.

    . ./locara_env.sh && python bench/parser.py [--split heldout] [--model GGUF] [--no-model]

Runs the parser core (the code the command_parser node runs) in-process on
test/data/utterances.yaml with config/commands.yaml and the default model (packaged
SmolLM2-135M-Instruct, or --model). Requests with `context` are preceded by their context
requests in the same conversation; every other request starts a fresh one.

Per split and per path (stop / rules / template / follow_up / model) it reports:
* exact %  - same action and arguments as labelled (clarify = no command);
* valid %  - the parser answered without an error (every command validates by construction);
* dangerous - a robot action (motion, manipulation) where none was asked for: the labelled
  answer is clarify or a non-moving action, or a different robot action;
* clarify precision - of the requests the parser asked back on, how many were labelled clarify
  (1.0 = it never asks back on a request it should have done);
* decision p50/p90 [ms] - start of the request -> the command (or the decision that there is
  none).
Prints the tables and writes out/bench/parser.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout's code, not an older installed copy

from locara_ros.core.command_schema import CLARIFY, load_schema, same_command  # noqa: E402
from locara_ros.core.parser import CommandParser, ParserConfig  # noqa: E402


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def judge(schema, item: dict, action: str, args: dict) -> dict:
    want = item["action"]
    exact = same_command(action, args, want, item.get("arguments") or {})
    moves = bool(action) and action != CLARIFY and action in schema.actions and \
        schema.actions[action].moves and (schema.stop is None or action != schema.stop.action)
    dangerous = moves and not same_command(action, args, want, item.get("arguments") or {})
    return {"exact": exact, "dangerous": dangerous}


def run(parser: CommandParser, schema, items: list[dict], verbose: bool) -> list[dict]:
    rows = []

    def vision(question: str, timeout: float) -> tuple[bool, str, str]:
        return True, "a test answer", "ok"
    for item in items:
        parser.conversation.clear()
        for ctx in item.get("context") or []:
            parser.parse(ctx, vision=vision)
        t0 = time.perf_counter()
        out = parser.parse(item["text"], vision=vision)
        total = time.perf_counter() - t0
        action = out.command.action if out.command is not None else (
            CLARIFY if out.needs_clarification else "")
        args = dict(out.command.arguments) if out.command is not None else {}
        row = {"text": item["text"], "split": item.get("split", ""),
               "expected": [item["action"], item.get("arguments") or {}],
               "got": [action, args], "valid": out.success, "path": out.path or "error",
               "reply": out.reply, "reason": out.reason or out.message,
               "confidence": out.confidence,
               "decision_ms": 1000 * (out.command_s if out.command_s is not None else total),
               "total_ms": 1000 * total, **judge(schema, item, action, args)}
        rows.append(row)
        if verbose:
            mark = "OK " if row["exact"] else ("DANGER" if row["dangerous"] else "BAD")
            print(f"  {mark} [{row['path']}] {item['text']!r} -> {action} {args} "
                  f"({row['decision_ms']:.0f} ms) {out.reason}", file=sys.stderr)
    return rows


def summarize(rows: list[dict]) -> dict:
    asked = [r for r in rows if r["got"][0] == CLARIFY]
    times = [r["decision_ms"] for r in rows]
    return {"n": len(rows), "exact": sum(r["exact"] for r in rows),
            "exact_pct": 100.0 * sum(r["exact"] for r in rows) / max(1, len(rows)),
            "valid_pct": 100.0 * sum(r["valid"] for r in rows) / max(1, len(rows)),
            "dangerous": sum(r["dangerous"] for r in rows),
            "clarified": len(asked),
            "clarify_precision": (sum(r["expected"][0] == CLARIFY for r in asked) / len(asked)
                                  if asked else None),
            "p50_ms": pct(times, 0.5), "p90_ms": pct(times, 0.9)}


def table(title: str, groups: dict[str, list[dict]]) -> None:
    print(f"\n{title}")
    head = (f"{'':12}{'n':>5}{'exact %':>9}{'valid %':>9}{'danger':>8}{'asked':>7}"
            f"{'clar.prec':>10}{'p50 ms':>9}{'p90 ms':>9}")
    print(head)
    print("-" * len(head))
    for name, rows in groups.items():
        s = summarize(rows)
        prec = "-" if s["clarify_precision"] is None else f"{s['clarify_precision']:.2f}"
        p50 = "-" if s["p50_ms"] is None else f"{s['p50_ms']:.1f}"
        p90 = "-" if s["p90_ms"] is None else f"{s['p90_ms']:.1f}"
        print(f"{name:12}{s['n']:>5}{s['exact_pct']:>9.1f}{s['valid_pct']:>9.1f}"
              f"{s['dangerous']:>8}{s['clarified']:>7}{prec:>10}{p50:>9}{p90:>9}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", default=str(ROOT / "config" / "commands.yaml"))
    ap.add_argument("--data", default=str(ROOT / "test" / "data" / "utterances.yaml"))
    ap.add_argument("--split", default="all", help="dev, heldout or all")
    ap.add_argument("--model", default="", help="GGUF path (default: packaged SmolLM2-135M)")
    ap.add_argument("--no-model", action="store_true", help="rules only (no model fallback)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--chat-format", default="", help="llama.cpp chat format for a GGUF "
                    "without a chat template (e.g. gemma); two-stage scoring then is off")
    ap.add_argument("--no-templates", action="store_true", help="model only (the old parser)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "parser.json"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    schema = load_schema(args.schema)
    items = yaml.safe_load(Path(args.data).read_text())["items"]
    if args.split != "all":
        items = [i for i in items if i.get("split") == args.split]
    model, load_s = None, 0.0
    if not args.no_model:
        from locara_ros.core.backends.chat import LlamaCppCommandModel
        t0 = time.monotonic()
        model = LlamaCppCommandModel(args.model, n_threads=args.threads, decode="two_stage",
                                     copy_free_text=True, chat_format=args.chat_format)
        load_s = time.monotonic() - t0
    cfg = ParserConfig(generation_timeout_s=120.0, templates=not args.no_templates)
    parser = CommandParser(schema, model, cfg)
    if model is not None:
        parser.parse("hello there friend", use_history=False)  # fill the prompt cache
    rows = run(parser, schema, items, args.verbose)
    by_split: dict[str, list[dict]] = defaultdict(list)
    by_path: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_split[r["split"] or "-"].append(r)
        by_path[r["path"]].append(r)
    by_split["all"] = rows
    name = model.name if model is not None else "rules only"
    print(f"parser with {name}{' (no templates)' if args.no_templates else ''}, "
          f"{len(rows)} requests, {platform.machine()} {platform.node()}")
    table("by split", dict(by_split))
    table("by path", dict(by_path))
    bad = [r for r in rows if not r["exact"]]
    if bad:
        print("\nnot exact:")
        for r in bad:
            print(f"  {'DANGER ' if r['dangerous'] else ''}[{r['path']}] {r['text']!r}: "
                  f"want {r['expected'][0]} {r['expected'][1]}, got {r['got'][0]} {r['got'][1]}"
                  f" ({r['reason'][:90]})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": name, "threads": args.threads, "load_s": load_s, "date": time.strftime("%F"),
        "templates": not args.no_templates,
        "splits": {k: summarize(v) for k, v in by_split.items()},
        "paths": {k: summarize(v) for k, v in by_path.items()}, "rows": rows}, indent=1))
    print(f"\nwrote {out}")
    if model is not None:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
