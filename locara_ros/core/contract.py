"""The interface contract of locara_ros: every topic and service with its name, type and QoS.

Nodes, ``locara_ros.testing``, the demo, the benchmarks and the tests take names from here (no
string literals), ``locara_ros.nodes.common`` builds the rclpy QoS profiles from these
descriptions, and a test checks that the README's interface table is :func:`markdown_table`.
No rclpy here: types are ROS interface names ("pkg/msg/Name"); ``nodes.common.publisher`` and
friends check at start-up that a node uses the type the contract names.

Names are relative, so a launch namespace moves them all.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Qos:
    """A QoS profile in words: history keep-last `depth`, reliability, durability."""

    name: str  # the profile's name in locara_ros.nodes.common
    depth: int
    reliable: bool = True
    transient_local: bool = False
    why: str = ""

    def describe(self) -> str:
        return (f"{'reliable' if self.reliable else 'best effort'}, depth {self.depth}"
                + (", transient-local" if self.transient_local else ""))


# Audio chunks between our own nodes on one machine: reliable (no holes in the PCM the recognizer
# sees) but shallow, so a stalled subscriber drops old chunks instead of blocking the publisher.
AUDIO = Qos("AUDIO_QOS", 50, why="no holes in the PCM; a stalled reader drops old chunks")
# The microphone: as AUDIO, but deep enough that the recognizer, starved for seconds on a busy
# 2-core machine (models loading next to it), loses no speech: a reader's keep-last cache of 50
# 20-ms chunks is 1 s, and CI lost the first words of a request that way.
MIC_AUDIO = Qos("MIC_AUDIO_QOS", 250, why="a reader starved for 5 s (20-ms chunks) loses no speech")
# "info" topics (AudioInfo): latched, so late joiners learn the format.
LATCHED = Qos("LATCHED_QOS", 1, transient_local=True, why="late joiners learn the format")
# Transcripts, commands: reliable, a few deep.
RELIABLE = Qos("RELIABLE_QOS", 10)
# voice/events: the control lane; deeper so a burst of events is never dropped.
EVENTS = Qos("EVENTS_QOS", 50, why="a burst of events is never dropped")
# voice/reply token stream: every chunk matters for the sentence splitter.
STREAM = Qos("STREAM_QOS", 200, why="every token chunk matters")
# Camera frames: best effort, keep only the newest (qos_profile_sensor_data keeps 5): the vlm uses
# the newest frame only, and each older one held is up to 6 MB (full HD) in the middleware.
SENSOR = Qos("SENSOR_QOS", 1, reliable=False,
             why="only the newest frame is used; older ones are MBs each")
# Services: a burst of concurrent calls must all reach the node to be answered (with a result,
# or "busy"); the default depth of 10 silently drops the rest.
SERVICE = Qos("SERVICE_QOS", 100, why="every concurrent call reaches the node and is answered")


@dataclass(frozen=True)
class Endpoint:
    """One topic or service of the graph."""

    name: str
    type: str  # ROS interface name: "locara_ros/msg/Transcript", "std_srvs/srv/Trigger"
    qos: Qos
    flow: str  # who talks to whom, for people

    @property
    def is_service(self) -> bool:
        return "/srv/" in self.type


AUDIO_MIC = Endpoint("audio/mic", "audio_common_msgs/msg/AudioDataStamped", MIC_AUDIO,
                     "mic_capture → asr")
AUDIO_MIC_INFO = Endpoint("audio/mic/info", "audio_common_msgs/msg/AudioInfo", LATCHED,
                          "mic_capture → asr")
AUDIO_MIC_RAW = Endpoint("audio/mic/raw", "audio_common_msgs/msg/AudioData", MIC_AUDIO,
                         "an unstamped driver → asr (asr's `audio_data_topic`)")
VOICE_EVENTS = Endpoint("voice/events", "locara_ros/msg/VoiceEvent", EVENTS, "all ↔ all")
TRANSCRIPT = Endpoint("voice/transcript", "locara_ros/msg/Transcript", RELIABLE,
                      "asr → command_parser, turn_metrics, planners")
TRANSCRIPT_PARTIAL = Endpoint("voice/transcript/partial", "locara_ros/msg/Transcript", RELIABLE,
                              "asr → command_parser, anyone")
COMMAND = Endpoint("voice/command", "locara_ros/msg/RobotCommand", RELIABLE,
                   "command_parser → planners, turn_metrics")
REPLY = Endpoint("voice/reply", "locara_ros/msg/ReplyChunk", STREAM,
                 "command_parser → tts, turn_metrics")
SAY = Endpoint("voice/say", "std_msgs/msg/String", RELIABLE, "anyone → tts")
AUDIO_TTS = Endpoint("audio/tts", "audio_common_msgs/msg/AudioDataStamped", AUDIO,
                     "tts → a loudspeaker node, asr (echo reference)")
AUDIO_TTS_INFO = Endpoint("audio/tts/info", "audio_common_msgs/msg/AudioInfo", LATCHED,
                          "tts → asr, anyone")
METRICS = Endpoint("voice/metrics", "locara_ros/msg/TurnMetrics", RELIABLE,
                   "turn_metrics → anyone")
CAMERA = Endpoint("camera/image_raw", "sensor_msgs/msg/Image", SENSOR, "camera → vlm")
CAMERA_COMPRESSED = Endpoint("camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                             SENSOR, "camera → vlm")
VISION_ASK = Endpoint("vision/ask", "locara_ros/srv/AskVision", SERVICE,
                      "planners, command_parser → vlm")
PARSE = Endpoint("voice/parse", "locara_ros/srv/ParseCommand", SERVICE,
                 "anyone → command_parser")
STOP_SPEAKING = Endpoint("voice/stop", "std_srvs/srv/Trigger", SERVICE, "anyone → tts")

ALL: tuple[Endpoint, ...] = (
    AUDIO_MIC, AUDIO_MIC_INFO, AUDIO_MIC_RAW, VOICE_EVENTS, TRANSCRIPT, TRANSCRIPT_PARTIAL,
    COMMAND, REPLY, SAY, AUDIO_TTS, AUDIO_TTS_INFO, METRICS, CAMERA, CAMERA_COMPRESSED,
    VISION_ASK, PARSE, STOP_SPEAKING,
)


def markdown_table() -> str:
    """The README's interface table (a test keeps them equal)."""
    rows = ["| name | type | from → to | QoS |", "|---|---|---|---|"]
    for e in ALL:
        qos = f"service, queue {e.qos.depth}" if e.is_service else e.qos.describe()
        rows.append(f"| `{e.name}` | {e.type} | {e.flow} | {qos} (`{e.qos.name}`) |")
    return "\n".join(rows)
