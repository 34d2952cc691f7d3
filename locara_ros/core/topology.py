"""Which nodes run where: the one description that launch files, tests and the demo share.

A topology is a list of :class:`NodeSpec` (executable, node name, role, parameter files,
parameters, remaps) built from :class:`TopologyOptions`. The launch files in ``launch/`` turn the
specs into ``launch_ros`` Node actions; the CI integration tests and ``tools/demo.sh`` start the
very same executables with the very same parameters and remaps as processes. Nothing here imports
rclpy or launch.

Topologies:

Every topology also runs ``turn_metrics`` (voice/metrics) on the robot.

* ``on_robot`` - all five nodes on the robot with the small packaged models.
* ``off_board`` with ``offboard_mode=ros`` - the robot runs mic_capture, asr and tts (it keeps
  hearing and speaking without Wi-Fi); the server runs command_parser and vlm in the same ROS
  domain (role ``server``), with bigger models given by path.
* ``off_board`` with ``offboard_mode=http`` - all nodes on the robot; command_parser, vlm (and
  optionally asr) use OpenAI-compatible servers (llama-server, vLLM, LiteLLM, a faster-whisper
  server) on the server machine, with local fallbacks (see README, Failover).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

TOPOLOGIES = ("on_robot", "off_board")
OFFBOARD_MODES = ("ros", "http")
ROLES = ("all", "robot", "server")


@dataclass(frozen=True)
class NodeSpec:
    executable: str  # in lib/locara_ros/
    name: str  # node name
    role: str  # "robot" or "server": the machine it runs on
    params_files: tuple[str, ...] = ()  # file names under share/locara_ros/config/
    params: Mapping[str, Any] = field(default_factory=dict)  # applied after the files
    remaps: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopologyOptions:
    """Everything a launch argument can set. Field docs are the launch arguments' descriptions."""

    topology: str = "on_robot"
    offboard_mode: str = "ros"
    role: str = "all"
    namespace: str = ""
    params_file: str = ""
    mic_source: str = "device"
    mic_file: str = ""
    mic_device: str = ""
    mic_uri: str = ""
    camera_topic: str = "camera/image_raw"
    whisper_model: str = ""
    llm_model: str = ""
    vlm_model: str = ""
    vlm_mmproj: str = ""
    vlm_chat_handler: str = ""
    llm_server_url: str = ""
    vlm_server_url: str = ""
    asr_server_url: str = ""
    tts_output: str = ""

    def __post_init__(self) -> None:
        for name, allowed in (("topology", TOPOLOGIES), ("offboard_mode", OFFBOARD_MODES),
                              ("role", ROLES), ("tts_output", ("", "device", "topic"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got '{getattr(self, name)}'")

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> TopologyOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown topology option(s): {', '.join(sorted(unknown))}")
        return cls(**dict(values))


ARGUMENT_DESCRIPTIONS: dict[str, str] = {
    "topology": "on_robot (everything on the robot) or off_board (heavy models on a LAN server)",
    "offboard_mode": "off_board only: 'ros' = parser and vlm run as ROS nodes on the server "
                     "(role:=server there); 'http' = they run on the robot and call "
                     "OpenAI-compatible servers (llm_server_url, vlm_server_url)",
    "role": "which machine this launch is for: all, robot or server",
    "namespace": "ROS namespace for every node and topic (empty = root)",
    "params_file": "extra parameters YAML applied after the topology's config file",
    "mic_source": "mic_capture source: device (PortAudio), file, wyoming (satellites connect "
                  "to the robot) or wyoming_client (the robot connects to mic_uri)",
    "mic_file": "WAV/FLAC file to replay when mic_source:=file",
    "mic_device": "PortAudio device name or index when mic_source:=device (empty = default)",
    "mic_uri": "Wyoming satellite or microphone service, tcp://host:port, when "
               "mic_source:=wyoming_client",
    "camera_topic": "sensor_msgs/Image topic the vlm node watches (…/compressed is derived)",
    "whisper_model": "Whisper model for asr: tiny.en, base or a CTranslate2 directory",
    "llm_model": "GGUF file for command_parser (empty = packaged SmolLM2-135M)",
    "vlm_model": "vision-language GGUF for vlm (required for a local vlm: none is packaged)",
    "vlm_mmproj": "mmproj GGUF matching vlm_model",
    "vlm_chat_handler": "llama.cpp chat handler for vlm_model: moondream, qwen25vl, llava15, mtmd",
    "llm_server_url": "OpenAI-compatible server for command_parser, e.g. http://gpu:8080/v1",
    "vlm_server_url": "OpenAI-compatible server for vlm, e.g. http://gpu:8081/v1",
    "asr_server_url": "optional OpenAI-compatible transcription server; the local Whisper stays "
                      "as fallback",
    "tts_output": "tts output: device (play on the PortAudio device, and publish audio/tts) or "
                  "topic (only publish audio/tts, for a speaker elsewhere); empty = config file",
}
assert set(ARGUMENT_DESCRIPTIONS) == {f.name for f in fields(TopologyOptions)}


def argument_defaults() -> dict[str, str]:
    return {f.name: str(f.default) for f in fields(TopologyOptions)}


def _drop_empty(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v not in ("", None)}


def model_role(o: TopologyOptions) -> str:
    """Where command_parser and vlm run: the server only in off-board ROS mode."""
    return "server" if o.topology == "off_board" and o.offboard_mode == "ros" else "robot"


def vision_configured(o: TopologyOptions) -> bool:
    """The vlm node runs only with a model: none is packaged (see README, vlm node)."""
    http = o.topology == "off_board" and o.offboard_mode == "http"
    return bool(o.vlm_server_url if http else o.vlm_model)


def build(options: TopologyOptions) -> list[NodeSpec]:
    """The nodes to start for these options, in start order."""
    o = options
    http = o.topology == "off_board" and o.offboard_mode == "http"
    config = {
        "on_robot": "on_robot.yaml",
        "off_board": "off_board_http.yaml" if http else "off_board.yaml",
    }[o.topology]
    files = (config,)

    mic = NodeSpec("mic_capture", "mic_capture", "robot", files, _drop_empty({
        "source": o.mic_source, "file_path": o.mic_file, "device": o.mic_device,
        "wyoming_uri": o.mic_uri,
    }))
    asr_params: dict[str, Any] = {"model": o.whisper_model}
    if o.asr_server_url:
        asr_params.update(backend="openai", server_url=o.asr_server_url,
                          fallback="faster_whisper")
    asr = NodeSpec("asr", "asr", "robot", files, _drop_empty(asr_params))
    tts_params = {"device": {"play_on_device": True}, "topic": {"play_on_device": False},
                  "": {}}[o.tts_output]
    tts = NodeSpec("tts", "tts", "robot", files, tts_params)

    parser_params: dict[str, Any] = {"model_path": o.llm_model}
    vlm_params: dict[str, Any] = {"model_path": o.vlm_model, "mmproj_path": o.vlm_mmproj,
                                  "chat_handler": o.vlm_chat_handler}
    if http:
        parser_params.update(server_url=o.llm_server_url)
        vlm_params.update(server_url=o.vlm_server_url,
                          fallback="llama_cpp" if o.vlm_model and o.vlm_mmproj else "")
    parser_role = model_role(o)
    parser = NodeSpec("command_parser", "command_parser", parser_role, files,
                      _drop_empty(parser_params))
    camera_remaps = {}
    if o.camera_topic and o.camera_topic != "camera/image_raw":
        camera_remaps = {"camera/image_raw": o.camera_topic,
                         "camera/image_raw/compressed": f"{o.camera_topic}/compressed"}
    vlm = NodeSpec("vlm", "vlm", parser_role, files, _drop_empty(vlm_params), camera_remaps)

    metrics = NodeSpec("turn_metrics", "turn_metrics", "robot", files)
    # Consumers first, the microphone last: a file source starts replaying as soon as it is up.
    specs = [metrics, asr, parser, tts]
    if vision_configured(o):
        specs.append(vlm)
    specs.append(mic)
    if o.role != "all":
        specs = [s for s in specs if s.role == o.role]
    return specs
