"""The launch files' graphs in CI: the node executables started exactly as
locara_ros.core.topology describes each topology (same parameter files, parameters and remaps as
launch/*.launch.py), running whole conversations with the real packaged models.

* on_robot: a spoken command WAV in -> transcript -> command -> spoken reply audio out; a
  vision/ask from a planner process; a spoken vision question answered through the vlm node.
* off_board, ROS mode: robot side and server side in separate process groups, one ROS domain.
* off_board, HTTP mode: real OpenAI-compatible servers (llama-cpp-python's server with the
  packaged SmolLM2, and with the tiny VLM); spoken commands decided by the templates (no server
  needed), a request that needs the model answered by the server, and by the local fallback
  after the server is killed mid-conversation.

Vision runs the tiny random-weight VLM (locara_ros/testing/tiny_vlm.py): no VLM weights are
packaged,
so its answers are noise; the tests check the machinery (frames in, answers out), not meaning.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage
from support import servers
from locara_ros.testing.speech import conversation, write_wav
from locara_ros.testing.tiny_vlm import make_tiny_vlm

from locara_ros.core import contract as C
from locara_ros.core.topology import TopologyOptions, build
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import SENSOR_QOS
from locara_ros.srv import AskVision
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.observer import GraphObserver
from locara_ros.testing.processes import NodeProcess, ProcessGroup, start_topology

pytestmark = pytest.mark.slow

# A replayed file has no loudspeaker in the loop (nothing to cancel); a random VLM's words are
# noise, so keep them short.
OVERRIDES = {"asr": {"echo_mode": "off"}, "vlm": {"max_tokens": 8},
             "command_parser": {"threads": 1}}


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def command_wav(tmp_path_factory):
    """A command, then a vision question, as a user would say them."""
    path = tmp_path_factory.mktemp("wav") / "conversation.wav"
    return str(write_wav(path, conversation(["Go to the kitchen.", "What do you see?"],
                                            lead=0.8, gap=4.0, tail=1.5)))


class Camera:
    """The camera driver's part: JPEG frames on camera/image_raw/compressed at 5 fps."""

    def __init__(self, ros, namespace: str = "") -> None:
        img = np.zeros((240, 320, 3), np.uint8)
        cv2.rectangle(img, (40, 60), (140, 200), (40, 40, 200), -1)
        self.node = ros.node("test_camera", namespace=namespace or "/")
        self.msg = CompressedImage(format="jpeg",
                                   data=cv2.imencode(".jpg", img)[1].tobytes())
        self.pub = self.node.create_publisher(CompressedImage, C.CAMERA_COMPRESSED.name,
                                              SENSOR_QOS)
        self.node.create_timer(0.2, self.tick)

    def tick(self) -> None:
        self.msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(self.msg)


def assert_conversation(graph: GraphObserver) -> None:
    """The sample conversation happened: both utterances heard, the command published with
    schema-valid arguments, both replies spoken as audio/tts, every turn measured."""
    wait_until(lambda: len(graph.spoken_finals()) >= 2, 240, what="both utterances heard")
    graph.wait_idle(timeout=240)
    texts = [f.text.lower() for f in graph.spoken_finals()]
    assert len(texts) == 2 and "kitchen" in texts[0] and "see" in texts[1], texts
    command = graph.wait_command(lambda c: c.action == "go_to", timeout=30)
    assert json.loads(command.arguments_json) == {"place": "kitchen"}
    first, second = graph.spoken_finals()
    assert command.utterance_id == first.utterance_id
    assert graph.reply_text(first.utterance_id).strip()
    # The vision question: answered from the vlm node (not the "can't see" fallback).
    vision_reply = graph.reply_text(second.utterance_id)
    assert vision_reply.strip() and "can't see" not in vision_reply.lower(), vision_reply
    spoken = graph.events_of(VoiceEvent.SPEAKING_STARTED)
    assert {e.utterance_id for e in spoken} >= {first.utterance_id, second.utterance_id}
    assert graph.audio_seconds() > 0.5
    metrics = {m.utterance_id: m for m in graph.metrics}
    assert metrics[first.utterance_id].transcript_ms > 0
    assert metrics[first.utterance_id].command_ms > 0
    assert metrics[first.utterance_id].first_audio_ms > 0


def ask_from_planner_process(procs, support_dir, namespace: str = "") -> str:
    args = ["What is on the table?", "--timeout", "90"]
    if namespace:
        args += ["--ros-args", "-r", f"__ns:={namespace}"]
    planner = procs.add(NodeProcess.python(str(support_dir / "planner.py"), *args,
                                           log_dir=procs.log_dir, label="planner",
                                           ready_pattern=None)).start()
    assert planner.proc.wait(120) == 0, planner.output()
    return planner.output()


def test_on_robot_conversation_and_planner_vision(ros, procs, support_dir, command_wav,
                                                  tiny_vlm):
    text, mmproj, handler = (str(x) for x in tiny_vlm)
    specs = build(TopologyOptions(topology="on_robot", mic_source="file", mic_file=command_wav,
                                  tts_output="topic", vlm_model=text, vlm_mmproj=mmproj,
                                  vlm_chat_handler=handler))
    assert [s.executable for s in specs] == ["turn_metrics", "asr", "command_parser", "tts",
                                             "vlm", "mic_capture"]
    graph = GraphObserver(ros)
    Camera(ros)
    start_topology(procs, specs, overrides=OVERRIDES)
    assert_conversation(graph)
    out = ask_from_planner_process(procs, support_dir)
    assert "success=True" in out and "backend='llama_cpp:llava15'" in out


def test_off_board_ros_split_robot_and_server(ros, procs, tmp_path, command_wav, tiny_vlm):
    """Robot and server sides in separate process groups (each node in its own session), in one
    ROS domain: the robot keeps mic/asr/tts, the server runs the parser and the vlm."""
    text, mmproj, handler = (str(x) for x in tiny_vlm)
    options = dict(topology="off_board", offboard_mode="ros", mic_source="file",
                   mic_file=command_wav, tts_output="topic", vlm_model=text, vlm_mmproj=mmproj,
                   vlm_chat_handler=handler)
    robot = build(TopologyOptions(role="robot", **options))
    server = build(TopologyOptions(role="server", **options))
    assert {s.executable for s in server} == {"command_parser", "vlm"}
    graph = GraphObserver(ros)
    Camera(ros)
    server_group = ProcessGroup(str(tmp_path / "server_logs"))
    try:
        start_topology(server_group, server, overrides=OVERRIDES)
        start_topology(procs, robot, overrides=OVERRIDES)
        assert_conversation(graph)
    except BaseException:
        print(server_group.logs())
        raise
    finally:
        server_group.stop_all()


def test_off_board_http_with_real_servers_and_failover(ros, procs, tmp_path, tiny_vlm):
    """Parser and vlm on the robot, calling real OpenAI-compatible servers. The LLM server is
    killed between two spoken commands: the second is still understood (local fallback), the
    switch is announced, and nothing is lost."""
    text, mmproj, handler = (str(x) for x in tiny_vlm)
    llm, llm_url = servers.llama_server(procs.log_dir, label="llm-server")
    procs.add(llm)
    clip = ("--clip_model_path", mmproj, "--chat_format", "llava-1-5", "--n_threads", "1")
    vlm_server, vlm_url = servers.llama_server(procs.log_dir, model=text, extra=clip,
                                               label="vlm-server")
    procs.add(vlm_server)
    wav = str(write_wav(tmp_path / "two_commands.wav", conversation(
        ["Go to the kitchen.", "Go to the bathroom."], lead=0.8, gap=12.0, tail=1.5)))
    specs = build(TopologyOptions(topology="off_board", offboard_mode="http", mic_source="file",
                                  mic_file=wav, tts_output="topic", llm_server_url=llm_url,
                                  vlm_server_url=vlm_url, vlm_model=text, vlm_mmproj=mmproj,
                                  vlm_chat_handler=handler))
    by = {s.executable: s for s in specs}
    assert by["command_parser"].params["server_url"] == llm_url
    assert by["vlm"].params == {"server_url": vlm_url, "fallback": "llama_cpp",
                                "model_path": text, "mmproj_path": mmproj,
                                "chat_handler": handler}
    graph = GraphObserver(ros)
    Camera(ros)
    # Both servers share this machine's 2 cores with the robot's nodes: allow slow answers (on a
    # real LAN server the config's 10 s is ample). A dead server is still detected at once.
    overrides = dict(OVERRIDES, command_parser={"threads": 1, "server_timeout": 120.0,
                                                "generation_timeout_s": 150.0})
    start_topology(procs, specs, overrides=overrides)

    from locara_ros.srv import ParseCommand
    asker = ros.node("http_asker")
    parse = asker.create_client(ParseCommand, C.PARSE.name)

    def ask_model():  # no template decides this request: the parser's model does
        return ros.call(parse, ParseCommand.Request(
            text="kindly get yourself over into the kitchen area"), timeout=150).command

    first = graph.wait_command(lambda c: c.action == "go_to", timeout=120)
    assert first.origin == "template"  # the common phrasings need no server at all
    served = ask_model()
    assert served.origin == f"llm:openai:{llm_url}", served
    llm.kill()  # the server machine goes away mid-conversation
    second = graph.wait_command(lambda c: c.action == "go_to" and c is not first, timeout=120)
    assert json.loads(second.arguments_json) == {"place": "bathroom"}
    fallback = ask_model()
    assert fallback.origin.startswith("llm:llama_cpp:"), fallback.origin
    assert fallback.action in ("go_to", "")  # the same model answers, or asks back
    changed = wait_until(lambda: graph.events_of(VoiceEvent.BACKEND_CHANGED), 10,
                         what="BACKEND_CHANGED")
    assert any("command_parser" in e.detail and "fallback" in e.detail for e in changed)
    graph.wait_idle(timeout=120)
    assert len(graph.spoken_finals()) == 2

    # The vlm node uses its server too (a real OpenAI-compatible request with the frame).
    reply = ros.call(asker.create_client(AskVision, C.VISION_ASK.name),
                     AskVision.Request(question="What is here?"), timeout=90)
    assert reply.success and reply.backend == f"openai:{vlm_url}", reply
