"""In-process ROS nodes for tests: a private rclpy context spun by an executor thread."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Collector:
    """Subscription that stores every message with its arrival time (time.monotonic())."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> None:
        self.messages: list[Any] = []
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self.subscription = node.create_subscription(msg_type, topic, self._on_msg, qos)

    def _on_msg(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)
            self.arrivals.append(time.monotonic())

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int = 1, timeout: float = 10.0,
                 where: Callable[[Any], bool] | None = None) -> list[Any]:
        """Wait until `count` messages (matching `where`, if given) have arrived; return them."""
        def matching() -> list[Any]:
            msgs = self.snapshot()
            return [m for m in msgs if where is None or where(m)]
        return wait_until(lambda: len(matching()) >= count and matching(), timeout,
                          what=f"{count} message(s) on {self.subscription.topic_name}")

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.arrivals.clear()


class RosHarness:
    """A private context with a multi-threaded executor running on a background thread.

    Nodes made with :meth:`node` are spun by it; use :class:`Collector` for subscriptions and
    ``call_async`` + :func:`wait_until` for services (never a blocking ``call`` from a callback).
    """

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, name="ros-harness-executor")
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:
            if self.context.ok():
                raise

    def node(self, name: str, **kwargs: Any) -> Node:
        node = Node(name, context=self.context, **kwargs)
        self.add(node)
        return node

    def add(self, node: Node) -> Node:
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def collect(self, node: Node, msg_type: type, topic: str,
                qos: QoSProfile | int = 10) -> Collector:
        return Collector(node, msg_type, topic, qos)

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        """Call a service from the test thread (not a callback) and wait for the response."""
        wait_until(lambda: client.service_is_ready(), timeout,
                   what=f"service {client.srv_name}")
        if not getattr(client, "_locara_settled", False):
            # service_is_ready() says the request can reach the server, not that the server has
            # matched this client's response reader yet; until it has, DDS drops the response
            # (seen in CI: the first voice/parse call of a fresh client never answered). Once
            # per client, give the reverse path a moment.
            time.sleep(1.0)
            client._locara_settled = True
        future = client.call_async(request)
        wait_until(future.done, timeout, what=f"response from {client.srv_name}")
        return future.result()

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout: float = 10.0) -> None:
        wait_until(lambda: publisher.get_subscription_count() >= count, timeout,
                   what=f"{count} subscriber(s) on {publisher.topic_name}")

    def wait_for_publishers(self, node: Node, topic: str, count: int = 1,
                            timeout: float = 10.0) -> None:
        wait_until(lambda: node.count_publishers(topic) >= count, timeout,
                   what=f"{count} publisher(s) on {topic}")

    def shutdown(self) -> None:
        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self._nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(5.0)
        self.executor.shutdown()
