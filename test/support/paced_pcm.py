"""Stands in for `arecord -r 16000 -c 1 -f S16_LE -t raw` (this machine has no sound card):
writes a raw S16LE mono 16 kHz file to stdout in real time, again and again with `gap` seconds
of silence between, until stdout closes. Used as a stock wyoming-satellite's --mic-command.

    python paced_pcm.py FILE.raw [GAP_SECONDS]
"""
from __future__ import annotations

import sys
import time

RATE, CHUNK = 16000, 1024  # samples; wyoming-satellite's default --mic-command-samples-per-chunk


def main() -> int:
    pcm = open(sys.argv[1], "rb").read()
    gap = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    pcm += bytes(int(gap * RATE) * 2)
    step = CHUNK * 2
    out = sys.stdout.buffer
    t0, k = time.monotonic(), 0
    try:
        while True:
            for i in range(0, len(pcm) - step + 1, step):
                out.write(pcm[i:i + step])
                out.flush()
                k += 1
                time.sleep(max(0.0, t0 + k * CHUNK / RATE - time.monotonic()))
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
