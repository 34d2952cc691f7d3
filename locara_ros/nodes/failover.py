"""Failover plumbing shared by the nodes that can use a remote backend (asr, command_parser, vlm).

`with_failover()` wraps a remote backend and its local fallback in
:class:`locara_ros.core.backends.failover.Failover` and reports every switch on `voice/events`
(BACKEND_CHANGED) and on `/diagnostics` (diagnostic_msgs/DiagnosticArray: OK on the primary,
WARN on the fallback, republished every second so monitors see the current state).
"""
from __future__ import annotations

from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from locara_ros.core.backends.failover import Failover
from locara_ros.msg import VoiceEvent
from locara_ros.nodes.common import RELIABLE_QOS, voice_event


def backend_name(backend: Any) -> str:
    """Name of the backend that is answering now (the active one behind a Failover)."""
    active = backend.active if isinstance(backend, Failover) else backend
    return str(getattr(active, "name", type(active).__name__))


def served_by(backend: Any) -> str:
    """Name of the backend that produced this thread's last result."""
    return backend.served_by() if isinstance(backend, Failover) else backend_name(backend)


class FailoverReporter:
    def __init__(self, node: Node, events_pub: Any, what: str) -> None:
        self.node, self.events_pub, self.what = node, events_pub, what
        self.failover: Failover | None = None
        self.diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
        node.create_timer(1.0, self.publish_diagnostics)

    def on_switch(self, active: str, reason: str) -> None:
        level = "primary" if self.failover is None or self.failover.on_primary else "fallback"
        self.node.get_logger().warning(f"{self.what}: now using {active} ({level}): {reason}")
        self.events_pub.publish(voice_event(self.node, VoiceEvent.BACKEND_CHANGED, text=active,
                                            detail=f"{self.what} -> {active} ({level}): "
                                                   f"{reason}"[:500]))
        self.publish_diagnostics()

    def publish_diagnostics(self) -> None:
        if self.failover is None:
            return
        on_primary = self.failover.on_primary
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if on_primary else DiagnosticStatus.WARN,
            name=f"{self.node.get_fully_qualified_name()}: {self.what} backend",
            message="remote backend" if on_primary else "remote unreachable, local fallback",
            hardware_id=self.node.get_name(),
            values=[KeyValue(key="active", value=backend_name(self.failover)),
                    KeyValue(key="primary", value=backend_name(self.failover.primary)),
                    KeyValue(key="fallback", value=backend_name(self.failover.fallback)),
                    KeyValue(key="switches", value=str(len(self.failover.switches)))])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def with_failover(node: Node, events_pub: Any, what: str, primary: Any,
                  make_fallback: Callable[[], Any] | None, *, probe: Callable[[], bool],
                  retry_interval: float) -> Any:
    """`primary` alone when there is no fallback, else a reporting Failover around both."""
    if make_fallback is None:
        return primary
    reporter = FailoverReporter(node, events_pub, what)
    failover = Failover(primary, make_fallback(), probe=probe, retry_interval=retry_interval,
                        on_switch=reporter.on_switch)
    reporter.failover = failover
    return failover
