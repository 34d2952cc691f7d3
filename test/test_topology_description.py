"""The topology description that launch files, the demo and the CI graph tests share."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from locara_ros.core import contract as C
from locara_ros.core.topology import (
    ARGUMENT_DESCRIPTIONS,
    TopologyOptions,
    argument_defaults,
    build,
)

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def names(specs, role=None):
    return [s.executable for s in specs if role is None or s.role == role]


def test_on_robot_runs_everything_on_the_robot_microphone_last():
    specs = build(TopologyOptions(mic_source="file", mic_file="/tmp/x.wav",
                                  vlm_model="/m/v.gguf", vlm_mmproj="/m/p.gguf"))
    assert names(specs) == ["turn_metrics", "asr", "command_parser", "tts", "vlm", "mic_capture"]
    assert {s.role for s in specs} == {"robot"}
    mic = specs[-1]
    assert mic.params == {"source": "file", "file_path": "/tmp/x.wav"}
    assert all(s.params_files == ("on_robot.yaml",) for s in specs)


def test_no_vision_model_means_no_vlm_node():
    assert "vlm" not in names(build(TopologyOptions()))


def test_off_board_ros_splits_robot_and_server():
    opts = dict(topology="off_board", offboard_mode="ros", vlm_model="/m/v.gguf")
    robot = build(TopologyOptions(role="robot", **opts))
    server = build(TopologyOptions(role="server", **opts))
    assert names(robot) == ["turn_metrics", "asr", "tts", "mic_capture"]
    assert names(server) == ["command_parser", "vlm"]
    assert all(s.params_files == ("off_board.yaml",) for s in robot + server)


def test_off_board_http_keeps_models_on_robot_behind_servers():
    specs = build(TopologyOptions(topology="off_board", offboard_mode="http", role="robot",
                                  llm_server_url="http://gpu:8080/v1",
                                  vlm_server_url="http://gpu:8081/v1",
                                  camera_topic="front/image"))
    by = {s.executable: s for s in specs}
    assert set(by) == {"turn_metrics", "asr", "command_parser", "tts", "vlm", "mic_capture"}
    assert by["command_parser"].params["server_url"] == "http://gpu:8080/v1"
    assert by["vlm"].params["server_url"] == "http://gpu:8081/v1"
    assert "fallback" not in by["vlm"].params  # no local VLM given: nothing to fall back to
    assert by["vlm"].remaps == {C.CAMERA.name: "front/image",
                                C.CAMERA_COMPRESSED.name: "front/image/compressed"}
    assert all(s.params_files == ("off_board_http.yaml",) for s in specs)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="topology must be one of"):
        TopologyOptions(topology="cloud")
    with pytest.raises(ValueError, match="unknown topology option"):
        TopologyOptions.from_strings({"colour": "red"})


def test_every_launch_argument_is_described():
    assert set(ARGUMENT_DESCRIPTIONS) == set(argument_defaults())
    assert all(len(text) > 15 for text in ARGUMENT_DESCRIPTIONS.values())


@pytest.mark.parametrize("launch_file,expected", [
    ("on_robot.launch.py", {"topology": "on_robot"}),
    ("off_board_robot.launch.py", {"topology": "off_board", "role": "robot"}),
    ("off_board_server.launch.py", {"topology": "off_board", "offboard_mode": "ros",
                                    "role": "server"}),
    ("locara.launch.py", {}),
])
def test_launch_files_are_thin_over_the_topology(launch_file, expected):
    """Parsed, not run (launch is not installable here): each file only calls generate()."""
    tree = ast.parse((LAUNCH_DIR / launch_file).read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in funcs] == ["generate_launch_description"]
    [ret] = [n for n in ast.walk(funcs[0]) if isinstance(n, ast.Return)]
    assert isinstance(ret.value, ast.Call) and ret.value.func.id == "generate"
    kwargs = {k.arg: ast.literal_eval(k.value) for k in ret.value.keywords}
    assert kwargs == expected
    assert set(kwargs) <= set(ARGUMENT_DESCRIPTIONS)
