"""mic_capture node: microphone audio -> audio/mic (S16LE mono chunks) + audio/mic/info.

Sources (parameter `source`): a live PortAudio device, a WAV/FLAC file, a Wyoming-protocol
server that network satellites stream to (`wyoming`), or a Wyoming client that connects to a
running satellite or microphone service (`wyoming_client`). See locara_ros.core.mic_sources.
"""
from __future__ import annotations

import array
import threading
import time
from typing import Any

import numpy as np
from audio_common_msgs.msg import AudioDataStamped, AudioInfo

from locara_ros.core import contract as C
from locara_ros.core.audio import AudioFormat, encode_s16le
from locara_ros.core.mic_sources import (
    DeviceSource,
    FileSource,
    MicSource,
    OutputConfig,
    WyomingClientSource,
    WyomingSource,
)
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import (
    announce_ready,
    declare,
    ns_to_stamp,
    publisher,
    run_node,
    voice_event,
)
from locara_ros.nodes.managed import GuardedNode

SOURCES = ("device", "file", "wyoming", "wyoming_client")


# Parameter ranges (inclusive); a value outside stops the node at start-up with the reason.
_LIMITS = {
    "sample_rate": (8000, 384000), "chunk_ms": (5.0, 1000.0), "channel": (-1, 1024),
    "gain_db": (-60.0, 60.0), "lead_silence": (0.0, 3600.0), "trail_silence": (0.0, 3600.0),
    "wait_for_subscribers": (0, 1000), "subscriber_timeout": (0.0, 86400.0),
    "device_sample_rate": (0, 384000), "device_channels": (0, 1024), "block_ms": (1.0, 1000.0),
    "retry_initial": (0.01, 3600.0), "retry_max": (0.01, 86400.0), "wyoming_port": (0, 65535),
    "wyoming_stall_s": (0.1, 3600.0),
}


class MicCaptureNode(GuardedNode):
    def __init__(self) -> None:
        super().__init__("mic_capture")
        p = self._declare_parameters()
        self.frame_id = p["frame_id"]
        self.out = OutputConfig(sample_rate=int(p["sample_rate"]), chunk_ms=float(p["chunk_ms"]),
                                channel=int(p["channel"]), gain_db=float(p["gain_db"]))
        self.fmt = AudioFormat(self.out.sample_rate, 1, "S16LE")  # validates the rate

        self.audio_pub = publisher(self, C.AUDIO_MIC, AudioDataStamped)
        self.info_pub = publisher(self, C.AUDIO_MIC_INFO, AudioInfo)
        self.events_pub = publisher(self, C.VOICE_EVENTS, VoiceEvent)
        self.info_pub.publish(AudioInfo(channels=1, sample_rate=self.fmt.sample_rate,
                                        sample_format="S16LE", bitrate=self.fmt.bitrate,
                                        coding_format="wave"))
        self.chunks_published = 0
        self._closing = threading.Event()
        self._starter: threading.Thread | None = None

        clock = self._now_ns
        kind = p["source"]
        if kind == "file":
            if not p["file_path"]:
                raise ValueError("source 'file' needs the file_path parameter")
            self.source: MicSource = FileSource(
                p["file_path"], self.out, self._publish, realtime=p["realtime"], loop=p["loop"],
                lead_silence=p["lead_silence"], trail_silence=p["trail_silence"],
                on_finished=self._file_finished, on_error=self._error, clock=clock)
            what = self.source.describe()
        elif kind == "device":
            self.source = DeviceSource(
                p["device"], self.out, self._publish, native_rate=p["device_sample_rate"],
                channels=p["device_channels"], block_ms=p["block_ms"],
                retry_initial=p["retry_initial"], retry_max=p["retry_max"],
                on_error=self._error, on_open=self._info, clock=clock)
            what = f"device '{p['device'] or 'default'}'"
        elif kind == "wyoming_client":
            if not p["wyoming_uri"]:
                raise ValueError("source 'wyoming_client' needs the wyoming_uri parameter "
                                 "(tcp://host:port of the satellite or microphone service)")
            self.source = WyomingClientSource(
                p["wyoming_uri"], self.out, self._publish, mode=p["wyoming_mode"],
                retry_initial=p["retry_initial"], retry_max=p["retry_max"],
                stall_s=p["wyoming_stall_s"], on_error=self._error, on_client=self._info,
                clock=clock)
            what = self.source.describe()
        else:
            self.source = WyomingSource(p["wyoming_host"], p["wyoming_port"], self.out,
                                        self._publish, on_error=self._error,
                                        on_client=self._info, clock=clock)
            what = f"wyoming server on {p['wyoming_host']}:{p['wyoming_port']}"

        # Log once from this thread before the source's thread can: the first log calls of a
        # logger from two threads at once lost this node's INFO lines, ready line included
        # (2 busy loops beside it: 1 start in 13 never logged ready; fresh-clone CI once).
        self.get_logger().info(f"starting the {kind} source")
        services = [str(x) for x in (p["wait_for_services"] or [])]
        if kind == "file" and (p["wait_for_subscribers"] > 0 or services):
            # A replay should not start into the void: wait until the recognizer listens, and
            # whoever acts on what it hears.
            self._starter = threading.Thread(
                target=self._start_when_heard,
                args=(int(p["wait_for_subscribers"]), services,
                      float(p["subscriber_timeout"])),
                name="mic-starter", daemon=True)
            self._starter.start()
        else:
            self.source.start()
        if kind == "wyoming":
            self.source.listening.wait(5.0)
            if self.source.listening.is_set():
                what = f"wyoming server on {p['wyoming_host']}:{self.source.bound_port}"
        announce_ready(self, f"mic_capture ({what} -> {self.out.sample_rate} Hz mono, "
                             f"{self.out.chunk_ms:g} ms chunks)")

    def _declare_parameters(self) -> dict[str, Any]:
        d = {}

        def param(name, default, description):
            # read at start-up only: read-only, so `ros2 param set` says so
            d[name] = declare(self, name, default, description, limits=_LIMITS.get(name))

        param("source", "device", "device (PortAudio), file (WAV/FLAC), wyoming (a server that "
              "satellites stream to) or wyoming_client (connects to a satellite or mic service)")
        param("sample_rate", 16000, "output rate of audio/mic [Hz]")
        param("chunk_ms", 20.0, "length of each audio/mic chunk [ms]")
        param("channel", -1, "input channel to use; -1 mixes all channels")
        param("gain_db", 0.0, "gain applied before conversion [dB]")
        param("frame_id", "mic", "header.frame_id of audio/mic")
        param("file_path", "", "file: WAV/FLAC to replay")
        param("realtime", True, "file: replay in real time (false: as fast as possible)")
        param("loop", False, "file: start over at the end (false: stay up, publish nothing)")
        param("lead_silence", 0.0, "file: seconds of silence before the file")
        param("trail_silence", 0.0, "file: seconds of silence after the file")
        param("wait_for_subscribers", 1, "file: wait for this many audio/mic subscribers "
                                         "before replaying (0 = start at once)")
        param("wait_for_services", [C.PARSE.name], "file: also wait until these services are "
              "offered (the command parser, which may start later or on another machine), so "
              "a replayed request is not lost at start-up; [] = do not wait")
        param("subscriber_timeout", 120.0, "file: replay anyway after waiting this long [s]")
        param("device", "", "device: PortAudio device name (substring) or index; empty = default")
        param("device_sample_rate", 0, "device: capture rate; 0 = the device's default rate")
        param("device_channels", 0, "device: channels to open; 0 = all input channels")
        param("block_ms", 20.0, "device: PortAudio block length [ms]")
        param("retry_initial", 1.0, "device, wyoming_client: first retry delay after a failure "
              "or a lost connection [s]")
        param("retry_max", 30.0, "device, wyoming_client: longest retry delay (doubling "
              "backoff) [s]")
        param("wyoming_host", "0.0.0.0", "wyoming: address to listen on")
        param("wyoming_port", 10700, "wyoming: TCP port to listen on (0 = any free port)")
        param("wyoming_uri", "", "wyoming_client: the peer to connect to, tcp://host:port "
              "(a wyoming-satellite listens on 10700) or unix:///path")
        param("wyoming_mode", "auto", "wyoming_client: auto (ask with describe), satellite "
              "(send run-satellite, then receive its audio) or mic (audio streams at once)")
        param("wyoming_stall_s", 5.0, "wyoming_client, mic peers: no audio for this long = "
              "connection lost, reconnect [s]")
        if d["source"] not in SOURCES:
            raise ValueError(f"source '{d['source']}' is not one of {', '.join(SOURCES)}")
        if d["wyoming_mode"] not in WyomingClientSource.MODES:
            raise ValueError(f"wyoming_mode '{d['wyoming_mode']}' is not one of "
                             f"{', '.join(WyomingClientSource.MODES)}")
        if d["chunk_ms"] <= 0:
            raise ValueError("chunk_ms must be > 0")
        return d

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _start_when_heard(self, count: int, services: list[str], timeout: float) -> None:
        from rclpy.expand_topic_name import expand_topic_name
        deadline = time.monotonic() + timeout
        wanted = {expand_topic_name(s, self.get_name(), self.get_namespace()): s
                  for s in services if s}

        def missing() -> list[str]:
            out = [] if self.audio_pub.get_subscription_count() >= count else [
                "audio/mic (a subscriber)"]
            offered = {name for name, _types in self.get_service_names_and_types()}
            return out + [f"{s} (the service)" for full, s in wanted.items()
                          if full not in offered]
        while not self._closing.is_set() and time.monotonic() < deadline:
            if not missing():
                break
            self._closing.wait(0.05)
        else:
            if not self._closing.is_set():
                self.get_logger().warn(f"still no {', '.join(missing())} after {timeout:.0f} s; "
                                       "replaying anyway")
        if not self._closing.is_set():
            time.sleep(0.2)  # let the new subscriber's reader finish matching
            self.source.start()

    # ------------------------------------------------------------------ callbacks (source thread)
    def _publish(self, chunk: np.ndarray, stamp_ns: int) -> None:
        msg = AudioDataStamped()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = self.frame_id
        msg.audio.data = array.array("B", encode_s16le(chunk))
        self.audio_pub.publish(msg)
        self.chunks_published += 1

    def _file_finished(self) -> None:
        self.get_logger().info(f"file source finished ({self.chunks_published} chunks "
                               "published); staying up")

    def _info(self, text: str) -> None:
        self.get_logger().info(text)

    def _error(self, text: str) -> None:
        self.get_logger().error(text)
        try:
            self.events_pub.publish(voice_event(self, VoiceEvent.ERROR, detail=text[:500]))
        except Exception:  # noqa: BLE001 - during shutdown the publisher may be gone
            pass

    def close(self) -> None:
        self._closing.set()
        if self._starter is not None:
            self._starter.join(5.0)
        self.source.stop()


def main(args=None) -> int:
    return run_node(MicCaptureNode, args)
