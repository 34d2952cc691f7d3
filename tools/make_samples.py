"""Regenerate the demo samples in samples/ (committed; run again only to change them).

  python tools/make_samples.py [command] [conversation] [scene]   (default: all three)

  samples/command.wav       16 kHz mono S16: two spoken requests made with the packaged Piper
                            voice, 4 s apart: the robot's reply to the first ends before the
                            second starts (the README's launch example and the tests use it)
  samples/conversation.wav  the demo's conversation (CONVERSATION below): a command, a question
                            whose long reply the user deliberately talks over with a new
                            command (a barge-in), a vision question, a request the robot must
                            refuse, and a stop. Gaps are long enough for the replies to play
                            out, except where the barge-in is meant
  samples/scene.png         a 640x480 table-top scene drawn with OpenCV (a red cup, a blue box)
"""
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from locara_ros.testing.speech import conversation, silence, synthesize, write_wav  # noqa: E402

PHRASES = ["Go to the kitchen.", "What do you see?"]
# (what the user says, seconds of silence after it, what the demo prints about it)
CONVERSATION = [
    ("Go to the kitchen.", 4.0, "a robot command, confirmed aloud"),
    ("What can you do?", 2.2, "a question with a long spoken answer ..."),
    ("Go to the charging station.", 4.5, "... talked over on purpose: a BARGE-IN, then the "
                                         "new command"),
    ("What do you see?", 6.0, "a vision question"),
    ("Go to the moon.", 4.5, "a place the robot does not know: it must refuse, not guess"),
    ("Stop.", 2.5, "the stop phrase: stop published at once"),
]
TALKED_OVER = 2  # the request (1-based) whose reply the next one interrupts on purpose


def scene() -> np.ndarray:
    img = np.full((480, 640, 3), (200, 215, 225), np.uint8)  # BGR wall
    cv2.rectangle(img, (0, 300), (640, 480), (60, 90, 140), -1)  # table
    cv2.rectangle(img, (120, 200), (220, 320), (40, 40, 200), -1)  # red cup
    cv2.ellipse(img, (170, 200), (50, 12), 0, 0, 360, (30, 30, 160), -1)
    cv2.rectangle(img, (380, 230), (540, 330), (180, 90, 30), -1)  # blue box
    cv2.putText(img, "locara", (400, 290), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return img


def demo_conversation() -> np.ndarray:
    parts = [silence(0.6)]
    for text, gap, _ in CONVERSATION:
        parts += [synthesize(text), silence(gap)]
    return np.concatenate(parts)


def main(names: list[str]) -> None:
    out = ROOT / "samples"
    out.mkdir(exist_ok=True)
    names = names or ["command", "conversation", "scene"]
    if "command" in names:
        write_wav(out / "command.wav", conversation(PHRASES, lead=0.6, gap=4.0, tail=1.2))
    if "conversation" in names:
        write_wav(out / "conversation.wav", demo_conversation())
    if "scene" in names:
        cv2.imwrite(str(out / "scene.png"), scene())
    print("wrote", ", ".join(names), "in", out)


if __name__ == "__main__":
    main(sys.argv[1:])
