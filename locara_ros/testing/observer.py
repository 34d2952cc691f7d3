"""Watch a running locara_ros graph from the outside, as an application would.

:class:`GraphObserver` subscribes every user-facing topic of the contract (transcripts, commands,
replies, events, metrics, synthesized audio), records what arrives with its arrival time, and
offers waits for tests, benchmarks and the demo. An optional `listener(kind, msg)` sees each
message as it arrives (the demo prints them).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from audio_common_msgs.msg import AudioDataStamped, AudioInfo

from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, TurnMetrics, VoiceEvent
from locara_ros.core import contract as C
from locara_ros.nodes.common import subscription
from locara_ros.testing.inprocess import RosHarness, wait_until

Listener = Callable[[str, Any], None]


class GraphObserver:
    def __init__(self, ros: RosHarness, name: str = "observer", namespace: str = "",
                 listener: Listener | None = None) -> None:
        self.ros = ros
        self.node = ros.node(name, namespace=namespace or "/")
        self.listener = listener
        self.lock = threading.Lock()
        self.partials: list[Transcript] = []
        self.finals: list[Transcript] = []
        self.commands: list[RobotCommand] = []
        self.reply_chunks: list[ReplyChunk] = []
        self.events: list[VoiceEvent] = []
        self.metrics: list[TurnMetrics] = []
        self.audio: list[AudioDataStamped] = []
        self.audio_info: AudioInfo | None = None
        self.arrival: dict[int, float] = {}  # id(msg) -> time.monotonic() at arrival
        subs = [(Transcript, C.TRANSCRIPT_PARTIAL, self.partials, "partial"),
                (Transcript, C.TRANSCRIPT, self.finals, "final"),
                (RobotCommand, C.COMMAND, self.commands, "command"),
                (ReplyChunk, C.REPLY, self.reply_chunks, "reply"),
                (VoiceEvent, C.VOICE_EVENTS, self.events, "event"),
                (TurnMetrics, C.METRICS, self.metrics, "metrics"),
                (AudioDataStamped, C.AUDIO_TTS, self.audio, "audio")]
        for msg_type, ep, store, kind in subs:
            subscription(self.node, ep, msg_type, self._recorder(store, kind))
        subscription(self.node, C.AUDIO_TTS_INFO, AudioInfo, self._on_info)

    def _recorder(self, store: list, kind: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            with self.lock:
                store.append(msg)
                self.arrival[id(msg)] = time.monotonic()
            if self.listener is not None:
                self.listener(kind, msg)
        return record

    def _on_info(self, msg: AudioInfo) -> None:
        self.audio_info = msg

    def arrived(self, msg: Any) -> float:
        return self.arrival[id(msg)]

    # ------------------------------------------------------------------ views
    def spoken_finals(self) -> list[Transcript]:
        with self.lock:
            return [f for f in self.finals if f.text.strip()]

    def reply_text(self, utterance_id: str) -> str:
        with self.lock:
            return "".join(c.text for c in self.reply_chunks if c.utterance_id == utterance_id)

    def reply_done(self, utterance_id: str) -> bool:
        with self.lock:
            return any((c.final or c.cancelled) and c.utterance_id == utterance_id
                       for c in self.reply_chunks)

    def events_of(self, event_type: int) -> list[VoiceEvent]:
        with self.lock:
            return [e for e in self.events if e.type == event_type]

    def audio_seconds(self) -> float:
        with self.lock:
            nbytes = sum(len(m.audio.data) for m in self.audio)
        rate = self.audio_info.sample_rate if self.audio_info else 22050
        return nbytes / 2 / rate

    # ------------------------------------------------------------------ waits
    def wait_finals(self, count: int, timeout: float = 120.0) -> list[Transcript]:
        return wait_until(lambda: len(self.spoken_finals()) >= count and self.spoken_finals(),
                          timeout, what=f"{count} final transcript(s) with text")

    def wait_command(self, where: Callable[[RobotCommand], bool] = lambda c: True,
                     timeout: float = 120.0) -> RobotCommand:
        def found() -> RobotCommand | None:
            with self.lock:
                return next((c for c in self.commands if where(c)), None)
        return wait_until(found, timeout, what="a matching command on voice/command")

    def wait_turns_measured(self, utterance_ids: list[str], timeout: float = 120.0) -> None:
        def done() -> bool:
            with self.lock:
                measured = {m.utterance_id for m in self.metrics}
            return set(utterance_ids) <= measured
        wait_until(done, timeout, what=f"voice/metrics for {utterance_ids}")

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Every utterance the VAD started has its final transcript, and every final with text
        has its voice/metrics (so its command, reply and speech are done)."""
        def done() -> bool:
            with self.lock:
                started = {e.utterance_id for e in self.events
                           if e.type == VoiceEvent.SPEECH_STARTED}
                finished = {f.utterance_id for f in self.finals}
                spoken = {f.utterance_id for f in self.finals if f.text.strip()}
                measured = {m.utterance_id for m in self.metrics}
            return bool(spoken) and started <= finished and spoken <= measured
        wait_until(done, timeout, what="every utterance transcribed, answered and measured")
