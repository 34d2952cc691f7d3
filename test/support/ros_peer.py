"""A test peer process (not a locara_ros node, not a model): relays messages back to the test so
that cross-process transport of our interfaces can be checked.

  * voice/transcript (Transcript)        -> peer/transcript, unchanged
  * audio/mic (AudioDataStamped)         -> peer/audio, unchanged
  * audio/mic/info (AudioInfo, latched)  -> peer/audio_info (latched), unchanged
  * vision/ask (AskVision): a peer service that reports what it received; it answers with the
    question's words reversed, so the test can tell the request really crossed the process
    boundary. It is not a vision model and never claims to be one (backend="test_peer").
"""
import sys

from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.node import Node

from locara_ros.core import contract as C
from locara_ros.msg import Transcript
from locara_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, announce_ready, run_node
from locara_ros.srv import AskVision


class Peer(Node):
    def __init__(self) -> None:
        super().__init__("test_peer")
        self.t_pub = self.create_publisher(Transcript, "peer/transcript", RELIABLE_QOS)
        self.a_pub = self.create_publisher(AudioDataStamped, "peer/audio", 50)
        self.i_pub = self.create_publisher(AudioInfo, "peer/audio_info", LATCHED_QOS)
        self.create_subscription(Transcript, C.TRANSCRIPT.name, self.t_pub.publish, RELIABLE_QOS)
        self.create_subscription(AudioDataStamped, C.AUDIO_MIC.name, self.a_pub.publish, 50)
        self.create_subscription(AudioInfo, C.AUDIO_MIC_INFO.name, self.i_pub.publish, LATCHED_QOS)
        self.create_service(AskVision, C.VISION_ASK.name, self.on_ask)
        announce_ready(self, "test peer")

    def on_ask(self, request, response):
        response.success = bool(request.question.strip())
        response.message = "ok" if response.success else "empty question"
        response.answer = " ".join(reversed(request.question.split()))
        response.image_stamp.sec = 42
        response.inference_time = float(request.max_age)
        response.backend = "test_peer"
        return response


if __name__ == "__main__":
    sys.exit(run_node(Peer))
