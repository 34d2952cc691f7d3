"""A camera stand-in process for tests and benchmarks: publishes OpenCV-drawn frames.

It is a real rclpy node in its own process (not a locara_ros node, not a model). It waits until
someone subscribes, publishes --count frames in one encoding with stamps
(sec = --stamp-sec + i, nanosec = 0), logs the ready marker with the last stamp, and then stays
up (so best-effort samples are not lost at exit) until it is stopped.

    camera_publisher.py --encoding bgr8 --width 64 --height 48 --count 3 --stamp-sec 1000
    camera_publisher.py --encoding jpeg ...          # sensor_msgs/CompressedImage
    camera_publisher.py --encoding 32FC1 ...         # an encoding the vlm node must drop
    camera_publisher.py --encoding rgb8 --fault size # data shorter than step x height

The drawing and encoding functions are importable, so tests can build the same frames.
"""
from __future__ import annotations

from locara_ros.core import contract as C
import argparse
import sys
import time

import cv2
import numpy as np

COMPRESSED = ("jpeg", "png")


def scene(width: int, height: int, variant: int = 0) -> np.ndarray:
    """A deterministic RGB test picture: black and white patches (so grey versions span the full
    0..255 range), coloured shapes, and a variant-dependent disc position."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:, : width // 2] = (30, 60, 200)
    img[: height // 2, width // 2:] = (220, 40, 40)
    img[height // 2:, width // 2:] = (40, 180, 60)
    img[: max(1, height // 8), : max(1, width // 8)] = (255, 255, 255)
    img[-max(1, height // 8):, -max(1, width // 8):] = (0, 0, 0)
    cx = (width // 4 + variant * width // 7) % width
    cv2.circle(img, (cx, height // 2), max(2, min(width, height) // 5), (250, 230, 20), -1)
    cv2.rectangle(img, (width // 8, height // 8), (width // 3, height // 3), (128, 0, 128), -1)
    return img


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG of a few hundred bytes whose header declares width x height pixels (a
    decompression bomb for the vlm's pixel limit)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(bytes(1 + 3 * width) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def encode(rgb: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False
           ) -> tuple[bytes, int]:
    """(data, step) of an RGB picture in a sensor_msgs/Image encoding, rows padded by `pad`
    bytes; for 'jpeg'/'png' the compressed bytes (step 0)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), 0
    if encoding == "png":
        return cv2.imencode(".png", bgr)[1].tobytes(), 0
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    pixels = {
        "rgb8": lambda: rgb,
        "bgr8": lambda: bgr,
        "rgba8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
        "bgra8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
        "mono8": lambda: gray,
        "mono16": lambda: (gray.astype(np.uint16) * 257).astype(">u2" if bigendian else "<u2"),
    }.get(encoding, lambda: rgb)()  # unknown encodings: RGB bytes under a wrong label
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(rgb.shape[0], -1)
    if pad:
        rows = np.hstack([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)])
    return rows.tobytes(), rows.shape[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoding", default="rgb8")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--period", type=float, default=0.05, help="seconds between frames")
    ap.add_argument("--stamp-sec", type=int, default=1000)
    ap.add_argument("--variant", type=int, default=0, help="scene variant (moves the disc)")
    ap.add_argument("--pad", type=int, default=0, help="row padding bytes (step > width)")
    ap.add_argument("--bigendian", action="store_true")
    ap.add_argument("--fault", choices=("none", "size", "corrupt"), default="none",
                    help="size: data shorter than step x height; corrupt: JPEG body zeroed")
    ap.add_argument("--hold", action="store_true",
                    help="after the frames, resend the last one every 0.25 s until stopped")
    ap.add_argument("--namespace", default="", help="prefix of the default topic")
    ap.add_argument("--topic", default="",
                    help="default [NAMESPACE/]camera/image_raw[/compressed]")
    args = ap.parse_args(argv)

    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image

    from locara_ros.nodes.common import READY_MARKER, SENSOR_QOS

    rclpy.init()
    node = Node("camera_publisher")
    compressed = args.encoding in COMPRESSED
    topic = args.topic or (C.CAMERA_COMPRESSED.name if compressed else C.CAMERA.name)
    if args.namespace and not args.topic:
        topic = f"{args.namespace.rstrip('/')}/{topic}"
    pub = node.create_publisher(CompressedImage if compressed else Image, topic, SENSOR_QOS)
    log = node.get_logger()
    data, step = encode(scene(args.width, args.height, args.variant), args.encoding,
                        pad=args.pad, bigendian=args.bigendian)
    if args.fault == "size":
        data = data[: len(data) - max(1, step // 2)]
    elif args.fault == "corrupt":
        # headers intact (its size is readable, so the cheap check passes), scan data zeroed
        scan = data.index(b"\xff\xda") + 4
        data = data[:scan] + bytes(len(data) - scan)
    if compressed:
        msg = CompressedImage(format=args.encoding, data=data)
    else:
        msg = Image(width=args.width, height=args.height, encoding=args.encoding, step=step,
                    is_bigendian=int(args.bigendian), data=data)
    msg.header.frame_id = "camera"

    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            log.error(f"nobody subscribed to {pub.topic_name} in 30 s")
            return 1
        time.sleep(0.02)
    time.sleep(0.2)  # let the subscriber finish matching before the first sample
    t0 = time.monotonic()
    for i in range(args.count):
        msg.header.stamp.sec, msg.header.stamp.nanosec = args.stamp_sec + i, 0
        pub.publish(msg)
        if i + 1 < args.count and args.period > 0:
            time.sleep(args.period)
    elapsed = time.monotonic() - t0
    log.info(f"published {args.count} {args.encoding} frames {args.width}x{args.height} "
             f"({len(data)} bytes each) on {pub.topic_name} in {elapsed:.2f} s, last stamp "
             f"{args.stamp_sec + args.count - 1} [{READY_MARKER}]")
    # Camera samples are best effort: on a loaded machine the subscriber may still be matching
    # when the burst goes out and lose all of it. With --hold, like a camera, keep sending (the
    # last frame, same stamp) until stopped, so the frame under test arrives.
    try:
        while rclpy.ok():
            time.sleep(0.25)
            if args.hold:
                pub.publish(msg)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
