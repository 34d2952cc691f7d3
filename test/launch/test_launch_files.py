"""launch_pytest tests: start the real launch files and check the graph.

launch_pytest (and launch, launch_ros) are not on PyPI, so these tests skip where they are not
installed; on a ROS 2 install (`sudo apt install ros-$ROS_DISTRO-launch-pytest`) they run. The same
node sets run in CI through test/test_topologies.py, which starts the executables exactly as
locara_ros.core.topology describes them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installed (not on PyPI); runs on a ROS 2 install")
import launch  # noqa: E402
import launch_ros  # noqa: E402,F401
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

SHARE = Path(get_package_share_directory("locara_ros"))
SAMPLE = str(SHARE / "samples" / "command.wav")


def _include(launch_file: str, **arguments: str):
    return launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(SHARE / "launch" / launch_file)),
        launch_arguments=list(arguments.items()))


def _wait_for_topic_message(msg_type, topic, timeout=120.0):
    import rclpy
    from rclpy.node import Node

    from locara_ros.nodes.common import RELIABLE_QOS
    rclpy.init()
    node = Node("launch_test_listener")
    got = []
    node.create_subscription(msg_type, topic, got.append, RELIABLE_QOS)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not got:
            rclpy.spin_once(node, timeout_sec=0.1)
        return got
    finally:
        node.destroy_node()
        rclpy.shutdown()


@launch_pytest.fixture
def on_robot():
    return launch.LaunchDescription([
        _include("on_robot.launch.py", mic_source="file", mic_file=SAMPLE, tts_output="topic"),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=on_robot)
def test_on_robot_hears_the_sample_and_commands():
    from locara_ros.msg import RobotCommand, Transcript
    transcripts = _wait_for_topic_message(Transcript, "/voice/transcript")
    assert transcripts and "kitchen" in transcripts[0].text.lower()
    commands = _wait_for_topic_message(RobotCommand, "/voice/command")
    assert commands and commands[0].action == "go_to"


@launch_pytest.fixture
def off_board_ros():
    return launch.LaunchDescription([
        _include("off_board_robot.launch.py", mic_source="file", mic_file=SAMPLE,
                 tts_output="topic"),
        _include("off_board_server.launch.py"),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=off_board_ros)
def test_off_board_ros_split_hears_and_commands():
    from locara_ros.msg import RobotCommand
    commands = _wait_for_topic_message(RobotCommand, "/voice/command")
    assert commands and commands[0].action == "go_to"


def test_environment_note():
    assert os.environ.get("ROS_DISTRO"), "launch_pytest present but no ROS 2 install sourced"
