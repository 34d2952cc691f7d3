"""Foundation: our interfaces and audio_common_msgs cross process boundaries intact."""
from __future__ import annotations

import pytest
from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from std_msgs.msg import Header  # noqa: F401  (the messages embed it)

from locara_ros.core import contract as C
from locara_ros.msg import ReplyChunk, RobotCommand, Transcript, TurnMetrics, VoiceEvent
from locara_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS
from locara_ros.srv import AskVision, ParseCommand
from locara_ros.testing.processes import NodeProcess


@pytest.fixture
def peer(procs, support_dir):
    return procs.start(NodeProcess.python(str(support_dir / "ros_peer.py"),
                                          log_dir=procs.log_dir, label="peer"))


def test_interfaces_have_the_contract_fields():
    t = Transcript(utterance_id="u1", text="hello", is_final=True, confidence=0.9, language="en")
    assert (t.utterance_id, t.text, t.is_final) == ("u1", "hello", True)
    assert {"speech_start", "speech_end", "audio_duration", "inference_time", "backend"} <= set(
        Transcript.get_fields_and_field_types())
    assert VoiceEvent.SPEECH_STARTED != VoiceEvent.SPEECH_STOPPED
    assert len({VoiceEvent.SPEECH_STARTED, VoiceEvent.SPEECH_STOPPED, VoiceEvent.SPEAKING_STARTED,
                VoiceEvent.SPEAKING_STOPPED, VoiceEvent.BARGE_IN, VoiceEvent.BACKEND_CHANGED,
                VoiceEvent.ERROR, VoiceEvent.CANCELLED}) == 8
    assert RobotCommand.get_fields_and_field_types()["arguments_json"] == "string"
    assert ReplyChunk.get_fields_and_field_types()["seq"] == "uint32"
    assert "first_audio_ms" in TurnMetrics.get_fields_and_field_types()
    assert AskVision.Response.get_fields_and_field_types()["image_stamp"] == \
        "builtin_interfaces/Time"
    assert ParseCommand.Response.get_fields_and_field_types()["command"] == \
        "locara_ros/RobotCommand"


def test_audio_common_msgs_fields_match_ros_drivers():
    # Field names and types decide the ROS 2 type hash: they must equal ros-drivers/audio_common.
    assert AudioData.get_fields_and_field_types() == {"data": "sequence<uint8>"}
    assert AudioDataStamped.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "audio": "audio_common_msgs/AudioData"}
    assert AudioInfo.get_fields_and_field_types() == {
        "channels": "uint8", "sample_rate": "uint32", "sample_format": "string",
        "bitrate": "uint32", "coding_format": "string"}


def test_transcript_round_trip_between_processes(ros, peer):
    node = ros.node("transport_test")
    pub = node.create_publisher(Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    got = ros.collect(node, Transcript, "peer/transcript", RELIABLE_QOS)
    ros.wait_for_subscribers(pub)
    ros.wait_for_publishers(node, "peer/transcript")
    sent = Transcript(utterance_id="utt-1", text="go to the kitchen", is_final=True,
                      confidence=0.75, language="en", audio_duration=1.25, backend="test")
    sent.speech_start.sec, sent.speech_end.sec, sent.speech_end.nanosec = 10, 11, 500
    pub.publish(sent)
    [echo] = got.wait_for(1, timeout=10)
    assert echo == sent


def test_ask_vision_service_between_processes(ros, peer):
    node = ros.node("ask_test")
    client = node.create_client(AskVision, C.VISION_ASK.name)
    reply = ros.call(client, AskVision.Request(question="what is on the table", max_age=0.5))
    assert reply.success and reply.message == "ok"
    assert reply.answer == "table the on is what"
    assert reply.image_stamp.sec == 42 and reply.inference_time == pytest.approx(0.5)
    assert reply.backend == "test_peer"
    empty = ros.call(client, AskVision.Request(question="  "))
    assert not empty.success and empty.message == "empty question"


def test_audio_data_stamped_and_latched_info_between_processes(ros, peer):
    node = ros.node("audio_test")
    info_pub = node.create_publisher(AudioInfo, C.AUDIO_MIC_INFO.name, LATCHED_QOS)
    # Published before anyone listens: transient-local must still deliver it through the peer.
    info_pub.publish(AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE",
                               bitrate=256000, coding_format="wave"))
    audio_pub = node.create_publisher(AudioDataStamped, C.AUDIO_MIC.name, 50)
    infos = ros.collect(node, AudioInfo, "peer/audio_info", LATCHED_QOS)
    chunks = ros.collect(node, AudioDataStamped, "peer/audio", 50)
    [info] = infos.wait_for(1, timeout=10)
    assert (info.sample_rate, info.sample_format, info.coding_format) == (16000, "S16LE", "wave")
    ros.wait_for_subscribers(audio_pub)
    ros.wait_for_publishers(node, "peer/audio")
    sent = []
    for i in range(20):
        msg = AudioDataStamped()
        msg.header.stamp.sec, msg.header.frame_id = i, "mic"
        msg.audio.data = bytes([(i + k) % 256 for k in range(640)])  # 20 ms of S16LE at 16 kHz
        audio_pub.publish(msg)
        sent.append(msg)
    received = chunks.wait_for(20, timeout=10)
    assert [m.header.stamp.sec for m in received] == list(range(20))
    assert [bytes(m.audio.data) for m in received] == [bytes(m.audio.data) for m in sent]
