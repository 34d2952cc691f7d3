#!/usr/bin/env python3
"""Vision benchmark: frame-to-answer latency of the local llama.cpp path, and frame handling cost.

    . ./locara_env.sh && python bench/vision.py [--runs 10] [--model M --mmproj P --handler H]

* frame -> answer: a raw bgr8 camera frame (as the vlm node holds it) -> RGB conversion ->
  resize to the model's input -> JPEG data URI -> llama.cpp image encoder + projector -> text
  generation (--max-tokens, greedy) -> answer string; p50/p90 per image size, in process (the
  code the vlm node's worker runs). Without --model it uses the tiny random-weight VLM of
  locara_ros/testing/tiny_vlm.py, the only VLM available here: its numbers show the pipeline's own
  overhead (conversion, encoding, llama.cpp plumbing), NOT what a real VLM costs. Run it with
  --model/--mmproj pointing at e.g. Moondream2 on the robot for real numbers.
* frame handling per image, per encoding and size: the header check the camera callback does for
  every frame, and the decode/convert/resize done once per question; shown as ms per frame and as
  the share of one core if every frame of a 30 fps camera got that treatment.

Prints tables and writes out/bench/vision.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from locara_ros.core.vision import CompressedFrame, RawFrame, frame_to_rgb, resize_to_fit  # noqa: E402
from locara_ros.testing.camera_publisher import encode, scene  # noqa: E402

SIZES = [(320, 240), (640, 480), (1280, 720), (1920, 1080)]
ENCODINGS = ["bgr8", "rgb8", "rgba8", "mono8", "mono16", "jpeg", "png"]
FPS = 30


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def make_frame(encoding: str, width: int, height: int):
    data, step = encode(scene(width, height), encoding)
    if encoding in ("jpeg", "png"):
        return CompressedFrame(data, encoding)
    return RawFrame(data, width, height, encoding, step)


def time_it(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_frame_handling(runs: int, model_side: int) -> list[dict]:
    rows = []
    for width, height in SIZES:
        for encoding in ENCODINGS:
            frame = make_frame(encoding, width, height)
            check = time_it(frame.check, runs * 10)
            convert = time_it(lambda f=frame: frame_to_rgb(f), runs)
            prepare = time_it(lambda f=frame: resize_to_fit(frame_to_rgb(f), model_side), runs)
            rows.append({
                "size": f"{width}x{height}", "encoding": encoding,
                "check_ms": 1000 * pct(check, 50),
                "convert_ms": 1000 * pct(convert, 50),
                "convert_resize_ms": 1000 * pct(prepare, 50),
                "core_share_at_30fps": pct(prepare, 50) * FPS,
            })
    return rows


def bench_answers(args, model_path: str, mmproj_path: str, handler: str) -> list[dict]:
    from locara_ros.core.backends.vision import LlamaCppVision
    t = time.perf_counter()
    model = LlamaCppVision(model_path, mmproj_path, chat_handler=handler, n_ctx=args.n_ctx,
                           n_threads=args.threads, image_size=args.image_size)
    load_s = time.perf_counter() - t
    rows = []
    try:
        for width, height in SIZES:
            frame = make_frame("bgr8", width, height)

            def frame_to_answer(f=frame):
                return model.answer(frame_to_rgb(f), "What is in front of the robot?",
                                    args.max_tokens)
            lat = time_it(frame_to_answer, args.runs)
            rows.append({"size": f"{width}x{height}", "runs": args.runs,
                         "p50_ms": 1000 * pct(lat, 50), "p90_ms": 1000 * pct(lat, 90),
                         "model_input_side": model.image_size})
    finally:
        model.close()
    for r in rows:
        r["load_s"] = load_s
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--model", default="", help="text GGUF of a real VLM (default: tiny VLM)")
    ap.add_argument("--mmproj", default="")
    ap.add_argument("--handler", default="", help="moondream, qwen25vl, llava15 or mtmd")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--image-size", type=int, default=0, help="0 = the mmproj's input size")
    ap.add_argument("--model-side", type=int, default=384,
                    help="resize target for the frame-handling table (Moondream2: 378)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "vision.json"))
    args = ap.parse_args()

    if args.model:
        model_path, mmproj_path, handler, which = args.model, args.mmproj, args.handler or "mtmd", \
            Path(args.model).name
    else:
        from locara_ros.testing.tiny_vlm import make_tiny_vlm
        cache = Path(tempfile.gettempdir()) / "locara_bench_tiny_vlm"
        model_path, mmproj_path, handler = (str(p) for p in make_tiny_vlm(cache))
        which = "tiny random-weight VLM (pipeline overhead only, not a real model)"

    handling = bench_frame_handling(args.runs, args.model_side)
    print(f"\nframe handling (median of {args.runs} runs; resize to {args.model_side} px; "
          f"'1 core @30fps' = share of one core if every frame were converted)")
    print(f"{'size':>10} {'encoding':>8} {'check ms':>9} {'convert ms':>11} "
          f"{'conv+resize ms':>15} {'1 core @30fps':>14}")
    for r in handling:
        print(f"{r['size']:>10} {r['encoding']:>8} {r['check_ms']:9.4f} {r['convert_ms']:11.2f} "
              f"{r['convert_resize_ms']:15.2f} {100 * r['core_share_at_30fps']:13.1f}%")

    answers = bench_answers(args, model_path, mmproj_path, handler)
    print(f"\nframe -> answer, local llama.cpp ({handler}), model: {which}; "
          f"max_tokens {args.max_tokens}, load {answers[0]['load_s']:.2f} s")
    print(f"{'size':>10} {'p50 ms':>9} {'p90 ms':>9} {'model input':>12}")
    for r in answers:
        print(f"{r['size']:>10} {r['p50_ms']:9.1f} {r['p90_ms']:9.1f} {r['model_input_side']:>12}")

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg()},
        "model": which, "handler": handler, "max_tokens": args.max_tokens,
        "frame_handling": handling, "frame_to_answer": answers,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
