"""Shared plumbing for locara_ros nodes: QoS profiles, parameters, ready log, main()."""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
from typing import Any, Callable, Sequence

import rclpy
import rclpy.exceptions
import rclpy.logging
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from locara_ros.core import contract, naming

# A declared type that does not match the value given (the same class on every distro we run;
# looked up so an rclpy without it still imports this module).
InvalidParameterTypeException = getattr(rclpy.exceptions, "InvalidParameterTypeException",
                                        InvalidParameterValueException)

# The marker test helpers wait for (locara_ros.testing.processes.READY_MARKER).
READY_MARKER = "locara:ready"

def qos_profile(q: contract.Qos) -> QoSProfile:
    """The rclpy profile for a contract QoS description."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=q.depth,
                      reliability=(ReliabilityPolicy.RELIABLE if q.reliable
                                   else ReliabilityPolicy.BEST_EFFORT),
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if q.transient_local
                                  else DurabilityPolicy.VOLATILE))


# The contract's profiles (locara_ros.core.contract says why each is what it is).
SENSOR_QOS = qos_profile(contract.SENSOR)
AUDIO_QOS = qos_profile(contract.AUDIO)
MIC_AUDIO_QOS = qos_profile(contract.MIC_AUDIO)
LATCHED_QOS = qos_profile(contract.LATCHED)
RELIABLE_QOS = qos_profile(contract.RELIABLE)
EVENTS_QOS = qos_profile(contract.EVENTS)
SERVICE_QOS = qos_profile(contract.SERVICE)
STREAM_QOS = qos_profile(contract.STREAM)


def interface_name(cls: type) -> str:
    """"pkg/msg/Name" of a generated message or service class."""
    parts = cls.__module__.split(".")
    return f"{parts[0]}/{parts[1]}/{cls.__name__}"


def _checked(ep: contract.Endpoint, cls: type, name: str | None = None) -> tuple[str, QoSProfile]:
    if interface_name(cls) != ep.type:
        raise TypeError(f"{ep.name}: the contract says {ep.type}, the node uses "
                        f"{interface_name(cls)}")
    return name or ep.name, qos_profile(ep.qos)


def publisher(node: Node, ep: contract.Endpoint, msg_type: type, **kw: Any):
    """A publisher on a contract topic, with the contract's QoS (type checked)."""
    name, qos = _checked(ep, msg_type)
    return node.create_publisher(msg_type, name, qos, **kw)


def subscription(node: Node, ep: contract.Endpoint, msg_type: type, callback: Callable,
                 name: str | None = None, **kw: Any):
    """A subscription to a contract topic (`name` overrides the contract's, e.g. a parameter)."""
    topic, qos = _checked(ep, msg_type, name)
    return node.create_subscription(msg_type, topic, callback, qos, **kw)


def service(node: Node, ep: contract.Endpoint, srv_type: type, callback: Callable, **kw: Any):
    name, qos = _checked(ep, srv_type)
    return node.create_service(srv_type, name, callback, qos_profile=qos, **kw)


def client(node: Node, ep: contract.Endpoint, srv_type: type, **kw: Any):
    name, qos = _checked(ep, srv_type)
    return node.create_client(srv_type, name, qos_profile=qos, **kw)


def declare(node: Node, name: str, default: Any, description: str, *,
            read_only: bool = True, limits: tuple[float, float] | None = None,
            choices: Sequence[str] | None = None) -> Any:
    """Declare one parameter with a description, validate its value and return it.

    Parameters are read-only unless the node applies changes at run time (``read_only=False``):
    ``ros2 param set`` on one that is only read at start-up is refused instead of reporting a
    success that changes nothing. ``limits`` (inclusive; ints or floats, as the default) go into
    the descriptor, so rclpy refuses values outside them, NaN and infinity both at start-up and on
    a later set; float parameters without limits must still be finite. ``choices`` are the
    allowed strings. A bad value raises ``ValueError`` naming the parameter, the value and what
    is allowed, so the node stops at start-up with the reason.
    """
    old = naming.renamed(getattr(node, "kind", node.get_name())).get(name)
    if old is not None:  # renamed (locara_ros.core.naming): the old name still works
        before = _declare(node, old, default, f"old name of `{name}` (still read; use `{name}`)",
                          read_only, limits, choices)
        # a value given only under the old name becomes the new one's (ros2 param get shows it)
        value = _declare(node, name, before, description, read_only, limits, choices)
        if before != default and value == before:
            node.get_logger().warning(f"parameter {old} was renamed {name}: using {old}="
                                      f"{before!r} (rename it in your parameters)")
        elif before != default:
            node.get_logger().warning(f"parameters {name}={value!r} and its old name {old}="
                                      f"{before!r} both given: using {name}")
        return value
    return _declare(node, name, default, description, read_only, limits, choices)


def _declare(node: Node, name: str, default: Any, description: str, read_only: bool,
             limits: tuple[float, float] | None, choices: Sequence[str] | None) -> Any:
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if limits is not None:
        lo, hi = limits
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f"limits need a numeric parameter, {name} is {type(default)}")
        if isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi),
                                                     step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(lo), to_value=float(hi), step=0.0)]
        descriptor.additional_constraints = f"in [{lo}, {hi}]"
    if choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(choices)
    if isinstance(default, list) and not default:
        # An empty list has no element type; declare it as a string array.
        descriptor.type = Parameter.Type.STRING_ARRAY.value
        return node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor).value or []
    try:
        value = node.declare_parameter(name, default, descriptor).value
    except (InvalidParameterValueException, InvalidParameterTypeException) as e:
        allowed = f" (allowed: {descriptor.additional_constraints})" \
            if descriptor.additional_constraints else ""
        raise ValueError(f"parameter {name}: {e}{allowed}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"parameter {name} must be a finite number, got {value}")
    if choices is not None and value not in choices:
        raise ValueError(f"parameter {name} must be one of {', '.join(choices)}; "
                         f"got '{value}'")
    return value


def default_schema_path() -> str:
    """share/locara_ros/config/commands.yaml of the installed package."""
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory("locara_ros"), "config", "commands.yaml")


def declare_settings(node: Node, cls: type) -> Any:
    """Declare every field of a settings dataclass (locara_ros.core.settings) as a parameter,
    validate, and return the filled-in settings (ValueError names what is wrong)."""
    values = {s.name: declare(node, s.name, s.default, s.description, read_only=not s.dynamic,
                              limits=s.limits, choices=s.choices) for s in cls.specs()}
    settings = cls(**values)
    settings.check()
    return settings


def announce_ready(node: Node, what: str, load_seconds: float | None = None) -> None:
    """The one log line that says a node is up (tests and users wait for it)."""
    timing = f" (models loaded in {load_seconds:.2f} s)" if load_seconds is not None else ""
    node.get_logger().info(f"{what} ready{timing} [{READY_MARKER}]")


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, msg_type: type | None = None) -> Any:
    from builtin_interfaces.msg import Time
    t = (msg_type or Time)()
    t.sec, t.nanosec = divmod(int(ns), 1_000_000_000)
    return t


class _RosLogHandler(logging.Handler):
    """Python logging from locara_ros.core (the echo path found, a filter converged, a request
    not grounded) into the node's ROS log, so it lands where the node's own lines do."""

    def __init__(self, node_name: str = "locara_ros") -> None:
        super().__init__(logging.INFO)
        self.node_name = node_name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = rclpy.logging.get_logger(f"{self.node_name}.{record.name.split('.')[-1]}")
            text = record.getMessage()
            if record.levelno >= logging.ERROR:
                logger.error(text)
            elif record.levelno >= logging.WARNING:
                (getattr(logger, "warning", None) or logger.warn)(text)
            else:
                logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)


def lower_thread_priority(nice: int) -> str:
    """Give the calling thread (and the threads it starts, e.g. llama.cpp's compute threads)
    a lower CPU priority: on a busy CPU the recognizer, the stop lane and the tts come first.
    Linux only (per-thread nice); returns what was done, for the log."""
    if nice <= 0:
        return "normal priority"
    if not sys.platform.startswith("linux"):
        return f"normal priority (nice per thread is Linux only; {sys.platform})"
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
        return f"nice {os.getpriority(os.PRIO_PROCESS, tid)}"
    except OSError as e:
        return f"normal priority (setpriority failed: {e})"


def _route_core_logging() -> _RosLogHandler:
    core = logging.getLogger("locara_ros")
    for h in core.handlers:
        if isinstance(h, _RosLogHandler):
            return h
    handler = _RosLogHandler()
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False
    return handler


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None,
             num_threads: int = 4) -> int:
    """main() for every node: init, build, spin a multi-threaded executor, clean shutdown.

    A node whose constructor raises (e.g. a model that fails to load) logs the reason and exits
    with code 1, so `ros2 launch` and the test helpers see it at start-up.
    """
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node = None
    code = 0
    try:
        try:
            handler = _route_core_logging()
            node = factory()
            handler.node_name = node.get_name()
        except Exception as e:  # noqa: BLE001 - report any start-up failure and exit non-zero
            rclpy.logging.get_logger("locara_ros").fatal(f"start-up failed: {e}")
            return 1
        start = getattr(node, "start", None)  # a lifecycle node (nodes.managed.ManagedNode)
        if callable(start):
            if getattr(node, "autostart", False):
                if not start():
                    node.get_logger().fatal(f"start-up failed: {node.configure_error}")
                    return 1
            else:
                node.get_logger().info(
                    f"autostart is false: waiting in 'unconfigured' for `ros2 lifecycle set "
                    f"{node.get_fully_qualified_name()} configure` (then activate)")
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError:  # rclpy's RCLError: a wait set made as SIGINT shut the context
            if rclpy.ok():  # (seen once in a launch's shutdown); anything else is a failure
                raise
        finally:
            executor.shutdown()
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return code


def voice_event(node: Node, event_type: int, *, utterance_id: str = "", text: str = "",
                detail: str = "", value: float = 0.0, stamp_ns: int | None = None) -> Any:
    """A VoiceEvent from this node (stamp: now, or the given capture time)."""
    from locara_ros.msg import VoiceEvent
    msg = VoiceEvent(type=event_type, source=node.get_fully_qualified_name(),
                     utterance_id=utterance_id, text=text, detail=detail, value=float(value))
    if stamp_ns is None:
        msg.header.stamp = node.get_clock().now().to_msg()
    else:
        msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg
