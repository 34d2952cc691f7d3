"""A planner stand-in process (not a locara_ros node): asks vision/ask once, as a robot planner
would, prints the response fields and exits 0 on success=true, 1 otherwise.

    planner.py "What is on the table?" [--timeout 60] [--max-age 0]
"""
from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.node import Node

from locara_ros.core import contract as C
from locara_ros.srv import AskVision


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("question")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--max-age", type=float, default=0.0)
    args, ros_args = p.parse_known_args()
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = Node("planner")
    client = node.create_client(AskVision, C.VISION_ASK.name)
    deadline = time.monotonic() + args.timeout
    try:
        while not client.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                print("planner: vision/ask not available", flush=True)
                return 1
        future = client.call_async(AskVision.Request(question=args.question,
                                                     max_age=args.max_age))
        rclpy.spin_until_future_complete(node, future,
                                         timeout_sec=max(0.1, deadline - time.monotonic()))
        if not future.done():
            print("planner: no response in time", flush=True)
            return 1
        r = future.result()
        print(f"planner: success={r.success} message={r.message!r} backend={r.backend!r} "
              f"image_stamp={r.image_stamp.sec}.{r.image_stamp.nanosec:09d} "
              f"answer={r.answer!r}", flush=True)
        return 0 if r.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
