"""README command 1, the demo, run as a user runs it (minus the set-up): the shipped conversation
through the on-robot graph, every capability once, and the picture of its turns."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_shows_each_capability_once(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    record = json.loads((out / "conversation.json").read_text())
    said = [t["text"] for t in record["transcripts"]]
    assert len(said) == 6, said
    commands = [(c["action"], c["arguments"]) for c in record["commands"]]
    # the command, the one given over the robot's answer, the stop; nothing for the moon
    assert ("go_to", {"place": "kitchen"}) in commands, commands
    assert ("go_to", {"place": "charging_station"}) in commands, commands
    assert commands[-1][0] == "stop", commands
    assert not any("moon" in json.dumps(args) for _, args in commands), commands
    replies = " | ".join(record["replies"].values())
    assert "no vision model is running" in replies, replies
    assert "moon" in replies, replies  # the refusal names what it does not know
    # the planned barge-in: the second request's answer is talked over, and announced
    assert any(uid.endswith("-0002") for uid in record["barge_ins"]), record["barge_ins"]
    assert "(deliberate: the sample talks over the robot here)" in log
    # vision/ask ran on the random-weight model, printed as noise and never spoken
    assert record["vision"] and record["vision"]["success"] and record["vision"]["noise"]
    answer = record["vision"]["answer"].strip()
    assert not answer or answer not in replies
    assert "[random-weight test model: noise]" in log
    assert (out / "timeline.png").stat().st_size > 10_000
    assert (out / "robot_speech.wav").stat().st_size > 0
