"""Feed audio into a graph as a microphone would: audio/mic chunks paced in real time."""
from __future__ import annotations

import array
import time

import numpy as np
from audio_common_msgs.msg import AudioDataStamped, AudioInfo

from locara_ros.core import contract as C
from locara_ros.core.audio import encode_s16le
from locara_ros.nodes.common import publisher


class MicFeeder:
    """In-process publisher of audio/mic (+ latched audio/mic/info), 16 kHz S16LE mono."""

    def __init__(self, ros, name: str = "mic_feeder", rate: int = 16000,
                 chunk_ms: float = 20.0) -> None:
        self.node = ros.node(name)
        self.ros, self.rate = ros, rate
        self.chunk = int(rate * chunk_ms / 1000)
        self.info = publisher(self.node, C.AUDIO_MIC_INFO, AudioInfo)
        self.pub = publisher(self.node, C.AUDIO_MIC, AudioDataStamped)
        self.info.publish(AudioInfo(channels=1, sample_rate=rate, sample_format="S16LE",
                                    bitrate=rate * 16, coding_format="wave"))

    def wait_connected(self, timeout: float = 20.0) -> None:
        self.ros.wait_for_subscribers(self.pub, timeout=timeout)
        time.sleep(0.3)  # let the latched info arrive first

    def play(self, audio: np.ndarray) -> None:
        """Publish float32 mono audio in real time, stamped with the capture time."""
        t0 = time.monotonic()
        for k, i in enumerate(range(0, audio.size, self.chunk)):
            msg = AudioDataStamped()
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.header.frame_id = "mic"
            msg.audio.data = array.array("B", encode_s16le(audio[i:i + self.chunk]))
            self.pub.publish(msg)
            time.sleep(max(0.0, t0 + (k + 1) * self.chunk / self.rate - time.monotonic()))
