"""Per-turn latency bookkeeping for voice/metrics (no rclpy).

A turn is one user utterance (utterance_id) and everything it caused. Each stage is recorded with
the ROS time stamp of the message that shows it happened, stamped by the node where it happened:

  speech_end        Transcript.speech_end (capture time of the last speech sample)
  vad_end           VoiceEvent SPEECH_STOPPED header stamp (when the VAD decided)
  transcript        final Transcript header stamp
  first_reply_token first ReplyChunk with text, header stamp
  command           RobotCommand header stamp
  first_audio       VoiceEvent SPEAKING_STARTED header stamp (first synthesized audio out)
  command_ready     VoiceEvent COMMAND_READY header stamp (a partial already gave the command;
                    may come before speech_end, so its latency can be negative; NaN if none)

Latencies are reported relative to speech_end, in milliseconds, -1 when the stage did not happen.
On one machine all stamps come from one clock. Across machines (off-board) every stamp comes from
the clock of the machine where the stage ran, so an offset between the two clocks adds directly
to the stages measured on the other machine: keep them synchronised (chrony/PTP) to well under
the latencies you care about.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

STAGES = ("vad_end", "transcript", "first_reply_token", "command", "first_audio",
          "command_ready")


@dataclass
class Turn:
    utterance_id: str
    speech_start_ns: int = 0
    speech_end_ns: int = 0
    stages: dict[str, int] = field(default_factory=dict)  # stage -> stamp ns
    reply_done: bool = False
    reply_has_text: bool = False
    speaking_done: bool = False
    created: float = field(default_factory=time.monotonic)

    def latency_ms(self, stage: str, missing: float = -1.0) -> float:
        t = self.stages.get(stage)
        if t is None or not self.speech_end_ns:
            return missing
        return (t - self.speech_end_ns) / 1e6

    @property
    def speech_duration(self) -> float:
        if self.speech_start_ns and self.speech_end_ns:
            return max(0.0, (self.speech_end_ns - self.speech_start_ns) / 1e9)
        return 0.0


class TurnTracker:
    """Collects stage stamps per utterance and says when a turn is complete.

    A turn is complete when its reply finished and the robot stopped speaking it (or the reply
    had nothing to say), or `timeout` seconds after it was first seen (whatever stages happened
    by then are reported).
    """

    def __init__(self, timeout: float = 30.0, max_turns: int = 100) -> None:
        self.timeout = timeout
        self.max_turns = max_turns
        self._turns: dict[str, Turn] = {}

    def _turn(self, utterance_id: str) -> Turn | None:
        if not utterance_id:
            return None
        turn = self._turns.get(utterance_id)
        if turn is None:
            if len(self._turns) >= self.max_turns:  # bounded: drop the oldest
                oldest = min(self._turns.values(), key=lambda t: t.created)
                del self._turns[oldest.utterance_id]
            turn = self._turns[utterance_id] = Turn(utterance_id)
        return turn

    def stage(self, utterance_id: str, stage: str, stamp_ns: int) -> None:
        """Record the first occurrence of a stage."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage}")
        turn = self._turn(utterance_id)
        if turn is not None and stage not in turn.stages and stamp_ns > 0:
            turn.stages[stage] = stamp_ns

    def speech(self, utterance_id: str, start_ns: int, end_ns: int) -> None:
        turn = self._turn(utterance_id)
        if turn is not None:
            turn.speech_start_ns = start_ns or turn.speech_start_ns
            turn.speech_end_ns = end_ns or turn.speech_end_ns

    def reply_text(self, utterance_id: str, stamp_ns: int) -> None:
        """A reply chunk with text: the first one is the first_reply_token stage."""
        self.stage(utterance_id, "first_reply_token", stamp_ns)
        turn = self._turn(utterance_id)
        if turn is not None:
            turn.reply_has_text = True

    def reply_finished(self, utterance_id: str) -> None:
        turn = self._turn(utterance_id)
        if turn is not None:
            turn.reply_done = True

    def speaking_finished(self, utterance_id: str) -> None:
        turn = self._turn(utterance_id)
        if turn is not None:
            turn.speaking_done = True

    def pop_complete(self, now: float | None = None) -> list[Turn]:
        """Turns that are complete (or timed out), removed from the tracker."""
        now = time.monotonic() if now is None else now
        done = []
        for uid, turn in list(self._turns.items()):
            # A reply with text is done once the robot has finished speaking it.
            finished = turn.reply_done and (turn.speaking_done or not turn.reply_has_text)
            if (finished and turn.speech_end_ns) or now - turn.created > self.timeout:
                done.append(self._turns.pop(uid))
        return done
