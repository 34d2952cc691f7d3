"""A picture of every turn: what each node did and when, one lane per node (no rclpy).

:func:`spans_from_graph` turns what a :class:`~locara_ros.testing.observer.GraphObserver`
recorded (voice/events, partial and final transcripts, voice/command, voice/metrics) into plain
records, stamped with the messages' own ROS times (when the node decided, not when the message
arrived); :func:`save_json` / :func:`load_json` keep them; :func:`plot` draws them with
matplotlib (headless, imported only here) into a PNG:

    user     speech spans (VAD onset .. VAD end), red marks where the user barged in
    asr      partial transcripts (ticks) and the final transcript (a labelled mark)
    parser   a command ready on a partial, the command published (labelled with its action)
    tts      the robot's speech (SPEAKING_STARTED .. SPEAKING_STOPPED), labelled with its words

and per turn the latencies after the end of speech (voice/metrics): final transcript, command,
first robot audio. Used by tools/demo.py and tools/timeline.py (a live robot).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

LANES = ("user", "asr", "parser", "tts")
COLORS = {"speech": "#4c72b0", "partial": "#8c8c8c", "final": "#2a9d8f", "ready": "#e9c46a",
          "command": "#e76f51", "robot": "#6a4c93", "barge_in": "#d62828", "stop": "#d62828",
          "end_of_turn": "#264653"}


@dataclass
class Span:
    lane: str  # one of LANES
    kind: str  # speech, partial, final, ready, command, robot, barge_in, stop, end_of_turn
    start: float  # seconds (ROS time)
    end: float  # = start for a mark
    label: str = ""
    utterance_id: str = ""


@dataclass
class Turn:
    utterance_id: str
    speech_end: float  # seconds (ROS time)
    transcript_ms: float
    command_ms: float
    first_audio_ms: float


def _t(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def spans_from_graph(events: Iterable[Any], partials: Iterable[Any], finals: Iterable[Any],
                     commands: Iterable[Any], metrics: Iterable[Any]
                     ) -> tuple[list[Span], list[Turn]]:
    """Records from voice/events, voice/transcript(/partial), voice/command, voice/metrics."""
    from locara_ros.msg import VoiceEvent as E  # message constants only, no rclpy
    spans: list[Span] = []
    speech_on: dict[str, float] = {}
    robot_on: dict[str, tuple[float, str]] = {}
    for e in sorted(events, key=lambda m: _t(m.header.stamp)):
        t, uid = _t(e.header.stamp), e.utterance_id
        if e.type == E.SPEECH_STARTED:
            speech_on[uid] = t - max(0.0, float(e.value))  # onset: the VAD decided `value` later
        elif e.type == E.SPEECH_STOPPED and uid in speech_on:
            spans.append(Span("user", "speech", speech_on.pop(uid), t, "", uid))
        elif e.type == E.SPEAKING_STARTED:
            robot_on[uid] = (t, e.text)
        elif e.type == E.SPEAKING_STOPPED and uid in robot_on:
            t0, first = robot_on.pop(uid)
            spans.append(Span("tts", "robot", t0, t, e.text or first, uid))
        elif e.type == E.BARGE_IN:
            spans.append(Span("user", "barge_in", t, t, "barge-in", uid))
        elif e.type == E.STOP:
            spans.append(Span("parser", "stop", t, t, "STOP", uid))
        elif e.type == E.COMMAND_READY:
            spans.append(Span("parser", "ready", t, t, f"ready: {e.text}", uid))
    for uid, t0 in speech_on.items():  # still talking when the record ended
        spans.append(Span("user", "speech", t0, t0, "", uid))
    for uid, (t0, first) in robot_on.items():
        spans.append(Span("tts", "robot", t0, t0, first, uid))
    for p in partials:
        if p.text.strip():
            t = _t(p.header.stamp)
            spans.append(Span("asr", "partial", t, t, p.text, p.utterance_id))
    for f in finals:
        if f.text.strip():
            t = _t(f.header.stamp)
            spans.append(Span("asr", "final", t, t, f'"{f.text.strip()}"', f.utterance_id))
    for c in commands:
        t = _t(c.header.stamp)
        spans.append(Span("parser", "command", t, t, c.action, c.utterance_id))
    turns = [Turn(m.utterance_id, _t(m.speech_end), float(m.transcript_ms),
                  float(m.command_ms), float(m.first_audio_ms)) for m in metrics]
    return spans, turns


def save_json(path: str | Path, spans: list[Span], turns: list[Turn]) -> None:
    Path(path).write_text(json.dumps({"spans": [asdict(s) for s in spans],
                                      "turns": [asdict(t) for t in turns]}, indent=1))


def load_json(path: str | Path) -> tuple[list[Span], list[Turn]]:
    data = json.loads(Path(path).read_text())
    return [Span(**s) for s in data["spans"]], [Turn(**t) for t in data["turns"]]


def _short(text: str, n: int = 28) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def plot(spans: list[Span], turns: list[Turn], path: str | Path, title: str = "") -> Path:
    """Draw the lanes into a PNG at `path` (created); returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not spans:
        raise ValueError("nothing to draw: no events were recorded")
    t0 = min(s.start for s in spans)
    t1 = max(max(s.end for s in spans), max((t.speech_end for t in turns), default=t0))
    width = min(40.0, max(10.0, (t1 - t0) * 0.55))
    fig, ax = plt.subplots(figsize=(width, 5.2))
    y = {lane: len(LANES) - 1 - i for i, lane in enumerate(LANES)}
    for s in spans:
        row, c = y[s.lane], COLORS.get(s.kind, "black")
        a, b = s.start - t0, s.end - t0
        if s.kind in ("speech", "robot"):
            ax.barh(row, max(b - a, 0.02), left=a, height=0.5, color=c, alpha=0.85)
            if s.label:
                ax.text(a + 0.03, row + 0.3, _short(s.label, 40), fontsize=7, va="bottom")
        elif s.kind == "partial":
            ax.plot([a, a], [row - 0.2, row + 0.2], color=c, lw=1)
        else:
            ax.plot([a], [row], marker="v" if s.kind in ("barge_in", "stop") else "o",
                    color=c, ms=7)
            above = s.kind in ("ready", "stop")  # shares its lane with the command's label
            ax.text(a, row + 0.22 if above else row - 0.42, _short(s.label), fontsize=7,
                    ha="center", va="bottom" if above else "top", color=c)
    for t in turns:
        e = t.speech_end - t0
        ax.axvline(e, color=COLORS["end_of_turn"], lw=0.8, ls="--")
        parts = [f"{name} {v:.0f} ms" for name, v in (("transcript", t.transcript_ms),
                                                      ("command", t.command_ms),
                                                      ("audio", t.first_audio_ms)) if v >= 0]
        ax.text(e + 0.03, len(LANES) + 0.55, "end of speech →\n" + "\n".join(parts),
                fontsize=6.5, va="top", color=COLORS["end_of_turn"])
    ax.set_yticks([y[lane] for lane in LANES])
    ax.set_yticklabels(LANES)
    ax.set_ylim(-0.9, len(LANES) + 0.7)
    ax.set_xlim(-0.2, t1 - t0 + 0.8)
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "locara_ros turns", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
