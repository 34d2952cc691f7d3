"""The tts node as a real process with the real Piper voice: streaming, stop, barge-in, gate."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from std_msgs.msg import String
from std_srvs.srv import Trigger

from locara_ros.core import contract as C
from locara_ros.core.audio import MIC_FORMAT, decode
from locara_ros.msg import ReplyChunk, VoiceEvent
from locara_ros.nodes.common import (
    AUDIO_QOS,
    EVENTS_QOS,
    LATCHED_QOS,
    RELIABLE_QOS,
    STREAM_QOS,
    stamp_to_ns,
)
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import NodeProcess

pytestmark = pytest.mark.slow

LONG = ("The first sentence is here. Then a second sentence follows it. A third one comes "
        "after that. And finally the fourth sentence ends the story.")
RATE = 16000


class Client:
    """The test's side of the graph: publishers, collectors and the voice/stop client."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = node = ros.node("tts_test")
        self.say = node.create_publisher(String, C.SAY.name, RELIABLE_QOS)
        self.reply = node.create_publisher(ReplyChunk, C.REPLY.name, STREAM_QOS)
        self.events_pub = node.create_publisher(VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        self.audio = ros.collect(node, AudioDataStamped, C.AUDIO_TTS.name, AUDIO_QOS)
        self.info = ros.collect(node, AudioInfo, C.AUDIO_TTS_INFO.name, LATCHED_QOS)
        self.events = ros.collect(node, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
        self.stop = node.create_client(Trigger, "voice/stop")
        for pub in (self.say, self.reply, self.events_pub):
            ros.wait_for_subscribers(pub, timeout=15)
        ros.wait_for_publishers(node, C.AUDIO_TTS.name, timeout=15)

    def events_of(self, kind: int) -> list:
        return [e for e in self.events.snapshot() if e.type == kind and e.source == "/tts"]

    def wait_event(self, kind: int, count: int = 1, timeout: float = 20.0) -> list:
        return wait_until(lambda: len(self.events_of(kind)) >= count and self.events_of(kind),
                          timeout, what=f"{count} event(s) of type {kind}")

    def audio_seconds(self) -> float:
        return sum(len(m.audio.data) // 2 for m in self.audio.snapshot()) / RATE

    def pcm(self) -> np.ndarray:
        msgs = self.audio.snapshot()
        return decode(b"".join(bytes(m.audio.data) for m in msgs), MIC_FORMAT) if msgs else \
            np.zeros(0, np.float32)

    def chunk(self, utt: str, seq: int, text: str, final: bool = False,
              cancelled: bool = False) -> None:
        self.reply.publish(ReplyChunk(utterance_id=utt, seq=seq, text=text, final=final,
                                      cancelled=cancelled))

    def user_event(self, kind: int, utt: str, stamp_ns: int | None = None) -> None:
        msg = VoiceEvent(type=kind, source="/asr", utterance_id=utt)
        now = self.node.get_clock().now().nanoseconds
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns or now, 1_000_000_000)
        self.events_pub.publish(msg)


def start_tts(procs, **params):
    base = {"play_on_device": False, "output_rate": RATE}
    base.update(params)
    return procs.start(NodeProcess.node("tts", log_dir=procs.log_dir, params=base))


@pytest.fixture(scope="module")
def whisper():
    from faster_whisper import WhisperModel

    from locara_ros.core.models import resolve_whisper
    return WhisperModel(str(resolve_whisper("tiny.en")), device="cpu", compute_type="int8")


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def test_streamed_reply_starts_before_later_sentences_exist(ros, procs, whisper):
    tts = start_tts(procs)
    c = Client(ros)
    [info] = c.info.wait_for(1, timeout=10)
    assert (info.sample_rate, info.channels, info.sample_format) == (RATE, 1, "S16LE")
    for i, tok in enumerate(["Okay,", " I am going", " to the kitchen.", " Then"]):
        c.chunk("utt-7", i, tok)
    # The first sentence is complete, the rest of the reply has not been written yet: audio
    # must flow now, before the later sentences can possibly have been synthesized.
    c.audio.wait_for(1, timeout=15)
    [started] = c.wait_event(VoiceEvent.SPEAKING_STARTED)
    assert (started.utterance_id, started.text) == ("utt-7", "Okay, I am going to the kitchen.")
    assert c.events_of(VoiceEvent.SPEAKING_STOPPED) == []
    for i, tok in enumerate([" I will", " open the door.", " See you", " soon!"], start=4):
        c.chunk("utt-7", i, tok)
    c.chunk("utt-7", 8, "", final=True)
    [stopped] = c.wait_event(VoiceEvent.SPEAKING_STOPPED)
    assert stopped.utterance_id == "utt-7" and stopped.detail == "finished"
    assert stopped.text == ("Okay, I am going to the kitchen. Then I will open the door. "
                            "See you soon!")
    msgs = c.audio.snapshot()
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in msgs]) / 1e9
    sizes = np.array([len(m.audio.data) // 2 for m in msgs]) / RATE
    assert np.all(np.diff(stamps) > 0), "chunk stamps are play times, in order"
    assert np.all(stamps[1:] - (stamps[:-1] + sizes[:-1]) > -2e-3), "no overlapping audio"
    assert np.all(sizes < 0.05), "small chunks, so stopping is quick"
    # It is real speech of the whole reply: Whisper hears it.
    segments, _ = whisper.transcribe(c.pcm(), language="en", beam_size=1)
    heard = words(" ".join(s.text for s in segments))
    for w in ("kitchen", "door", "soon"):
        assert w in heard, f"{w!r} not in {heard}"
    assert tts.alive


def test_voice_stop_stops_now_and_flushes_the_queue(ros, procs):
    tts = start_tts(procs)
    c = Client(ros)
    c.say.publish(String(data=LONG))
    [started] = c.wait_event(VoiceEvent.SPEAKING_STARTED)
    wait_until(lambda: c.audio_seconds() > 1.5, 20, what="1.5 s of speech")
    reply = c.ros.call(c.stop, Trigger.Request(), timeout=10)
    n = len(c.audio.snapshot())
    assert reply.success and "stopped" in reply.message
    [stopped] = c.wait_event(VoiceEvent.SPEAKING_STOPPED)
    assert stopped.detail == "voice/stop" and stopped.utterance_id == started.utterance_id
    assert stopped.text and LONG.startswith(stopped.text) and len(stopped.text) < len(LONG)
    time.sleep(1.5)
    assert len(c.audio.snapshot()) <= n + 3, "audio kept coming after voice/stop"
    # The rest of the long text was flushed: the next text is spoken alone.
    before = c.audio_seconds()
    c.say.publish(String(data="Short and new."))
    [_, again] = c.wait_event(VoiceEvent.SPEAKING_STOPPED, count=2)
    assert again.text == "Short and new." and again.detail == "finished"
    assert c.audio_seconds() - before < 3.0
    nothing = c.ros.call(c.stop, Trigger.Request(), timeout=10)
    assert nothing.success and "nothing" in nothing.message
    assert tts.alive


def test_barge_in_stops_speech_and_reports_what_was_spoken(ros, procs):
    tts = start_tts(procs, barge_in_min_speech=0.2)
    c = Client(ros)
    c.say.publish(String(data=LONG))
    [started] = c.wait_event(VoiceEvent.SPEAKING_STARTED)
    wait_until(lambda: c.audio_seconds() > 1.0, 20, what="1 s of speech")
    # A cough: speech that stops before the minimum duration does not interrupt.
    c.user_event(VoiceEvent.SPEECH_STARTED, "cough-1")
    time.sleep(0.05)
    c.user_event(VoiceEvent.SPEECH_STOPPED, "cough-1")
    time.sleep(0.6)
    assert c.events_of(VoiceEvent.BARGE_IN) == []
    assert c.events_of(VoiceEvent.SPEAKING_STOPPED) == []
    # Real user speech: it goes on past the minimum, the robot stops and says what it said.
    c.user_event(VoiceEvent.SPEECH_STARTED, "user-1")
    [barge] = c.wait_event(VoiceEvent.BARGE_IN, timeout=5)
    n = len(c.audio.snapshot())
    assert barge.utterance_id == started.utterance_id
    assert barge.text and LONG.startswith(barge.text) and len(barge.text) < len(LONG)
    assert "user-1" in barge.detail
    [stopped] = c.wait_event(VoiceEvent.SPEAKING_STOPPED)
    assert stopped.text == barge.text
    time.sleep(1.0)
    assert len(c.audio.snapshot()) <= n + 3, "audio kept coming after barge-in"
    assert tts.alive


def test_cancelled_reply_and_bad_input_keep_the_node_running(ros, procs):
    tts = start_tts(procs, max_text_chars=500)
    c = Client(ros)
    c.chunk("r1", 0, "This reply is cancelled by the parser. It has more.")
    c.wait_event(VoiceEvent.SPEAKING_STARTED)
    c.chunk("r1", 1, "", cancelled=True)
    [stopped] = c.wait_event(VoiceEvent.SPEAKING_STOPPED)
    assert stopped.utterance_id == "r1" and stopped.detail == "reply cancelled"
    c.say.publish(String(data="   "))
    c.say.publish(String(data="word " * 200))
    errors = c.wait_event(VoiceEvent.ERROR, count=2)
    assert "empty" in errors[0].detail and "500" in errors[1].detail
    # Text is never passed through a shell: this is just spoken.
    canary = Path(f"/tmp/lc{os.getpid()}")
    c.say.publish(String(data=f"$(touch {canary}); `touch {canary}`"))
    c.wait_event(VoiceEvent.SPEAKING_STOPPED, count=2, timeout=40)
    assert not canary.exists()
    assert tts.alive


def test_speaker_gate_caps_volume_and_speech_time(ros, procs):
    tts = start_tts(procs, max_volume=0.25, volume=1.0, max_speech_seconds=3.0)
    c = Client(ros)
    c.say.publish(String(data=LONG))
    [err] = c.wait_event(VoiceEvent.ERROR, timeout=30)
    assert "budget" in err.detail
    c.wait_event(VoiceEvent.SPEAKING_STOPPED, timeout=20)
    pcm = c.pcm()
    assert 0.5 < pcm.size / RATE <= 3.05
    assert np.abs(pcm).max() <= 0.25 + 1e-3
    assert np.abs(pcm).max() > 0.1  # still audible
    assert tts.alive


def test_no_audio_device_is_a_clear_start_up_error(procs):
    # This machine has no sound card: with nothing else to output to, the node must refuse to
    # start and say which device failed; with audio/tts still available it runs and says so.
    proc = NodeProcess.node("tts", log_dir=procs.log_dir, label="tts_device_only",
                            params={"play_on_device": True, "publish_audio": False,
                                    "device": "no-such-speaker"})
    with pytest.raises(RuntimeError, match="no-such-speaker"):
        procs.start(proc, ready_timeout=60)
    assert proc.proc.returncode == 1
    both = procs.start(NodeProcess.node("tts", log_dir=procs.log_dir, label="tts_both",
                                        params={"play_on_device": True,
                                                "device": "no-such-speaker"}))
    assert "publishing on audio/tts only" in both.output()


def _set(ros, node, target: str, **values):
    """Set parameters of a running node through its real parameter service."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = node.create_client(SetParameters, f"/{target}/set_parameters")
    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                            for k, v in values.items()])
    return ros.call(client, req, timeout=15).results


def test_volume_and_speaker_enabled_change_while_running(ros, procs):
    tts = start_tts(procs)
    c = Client(ros)
    c.say.publish(String(data="This is the first sentence at full volume."))
    c.wait_event(VoiceEvent.SPEAKING_STOPPED, timeout=30)
    loud = np.abs(c.pcm()).max()
    [res] = _set(ros, c.node, "tts", volume=0.25)
    assert res.successful, res.reason
    c.audio.clear()
    c.say.publish(String(data="This is the first sentence at full volume."))
    c.wait_event(VoiceEvent.SPEAKING_STOPPED, count=2, timeout=30)
    quiet = np.abs(c.pcm()).max()
    assert quiet < 0.4 * loud, (quiet, loud)  # Piper varies a little between renditions
    # Muted: a long text stops at once, and new text is refused with an ERROR event.
    [res] = _set(ros, c.node, "tts", volume=1.0)
    c.say.publish(String(data=LONG))
    c.wait_event(VoiceEvent.SPEAKING_STARTED, count=3, timeout=30)
    [res] = _set(ros, c.node, "tts", speaker_enabled=False)
    assert res.successful
    stopped = c.wait_event(VoiceEvent.SPEAKING_STOPPED, count=3, timeout=10)[-1]
    assert stopped.detail == "speaker disabled"
    n = len(c.events_of(VoiceEvent.ERROR))
    c.say.publish(String(data="You cannot hear me."))
    err = c.wait_event(VoiceEvent.ERROR, count=n + 1, timeout=10)[-1]
    assert "disabled" in err.detail
    # Nonsense is refused with a reason, the node keeps running.
    [bad] = _set(ros, c.node, "tts", volume=-3.0)
    assert not bad.successful and "volume" in bad.reason
    [res] = _set(ros, c.node, "tts", speaker_enabled=True)
    assert res.successful and tts.alive


def test_a_spoken_stop_silences_the_robot_but_not_its_stop_reply(ros, procs):
    """STOP on voice/events (the parser heard "stop"): the speech in progress and everything
    queued are dropped at once; the stop's own reply ("Stopping.") is still spoken."""
    start_tts(procs)
    c = Client(ros)
    c.say.publish(String(data=LONG))
    c.wait_event(VoiceEvent.SPEAKING_STARTED, timeout=30)
    msg = VoiceEvent(type=VoiceEvent.STOP, source="/command_parser", utterance_id="u-stop",
                     text="stop")
    c.events_pub.publish(msg)
    stopped = c.wait_event(VoiceEvent.SPEAKING_STOPPED, timeout=10)[0]
    assert stopped.detail.startswith("stop") and stopped.text != LONG
    c.chunk("u-stop", 0, "Stopping.", final=True)
    said = wait_until(lambda: [e for e in c.events_of(VoiceEvent.SPEAKING_STOPPED)
                               if e.utterance_id == "u-stop"], 30, what="the stop reply")[0]
    assert said.text == "Stopping." and said.detail == "finished"
