"""Regenerate the demo samples in samples/ (committed; run again only to change them).

  samples/command.wav  16 kHz mono S16: two spoken requests made with the packaged Piper voice,
                       4 s apart: the robot's reply to the first ends before the second starts
  samples/scene.png    a 640x480 table-top scene drawn with OpenCV (a red cup, a blue box)
"""
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
from support.speech import conversation, write_wav  # noqa: E402

PHRASES = ["Go to the kitchen.", "What do you see?"]


def scene() -> np.ndarray:
    img = np.full((480, 640, 3), (200, 215, 225), np.uint8)  # BGR wall
    cv2.rectangle(img, (0, 300), (640, 480), (60, 90, 140), -1)  # table
    cv2.rectangle(img, (120, 200), (220, 320), (40, 40, 200), -1)  # red cup
    cv2.ellipse(img, (170, 200), (50, 12), 0, 0, 360, (30, 30, 160), -1)
    cv2.rectangle(img, (380, 230), (540, 330), (180, 90, 30), -1)  # blue box
    cv2.putText(img, "locara", (400, 290), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return img


def main() -> None:
    out = ROOT / "samples"
    out.mkdir(exist_ok=True)
    write_wav(out / "command.wav", conversation(PHRASES, lead=0.6, gap=4.0, tail=1.2))
    cv2.imwrite(str(out / "scene.png"), scene())
    print("wrote", out / "command.wav", out / "scene.png")


if __name__ == "__main__":
    main()
