"""Lifecycle (managed) nodes: the model nodes load in configure and serve only while active.

`ManagedNode` is an ``rclpy.lifecycle.Node`` (the API Humble has) with one rule for every model
node (asr, command_parser, tts, vlm):

* the constructor only declares and validates parameters (cheap: `ros2 param` works at once);
* **configure** runs the node's ``setup()``: loads the models (a failure fails the transition and
  logs the file and the reason), creates publishers, subscriptions, services, timers and starts
  the worker threads;
* **activate** opens the gate: until then (and after **deactivate**) incoming messages are
  dropped, counted and logged once, service calls are answered ``success=false`` with the state,
  and timers do nothing; the ready log line (with the load time) is written on activation;
* a callback that raises is logged (throttled) and, for a service, answered ``success=false``
  with the error: an exception out of a callback would end rclpy's executor and the node;
* **cleanup** (and **shutdown**) runs the node's ``teardown()`` (stops workers, frees the models)
  and destroys everything ``setup()`` created, so configure can run again.

With the ``autostart`` parameter (default true) the node configures and activates itself as soon
as it is built, so ``ros2 launch``, ``ros2 run`` and the tests get a working node without a
lifecycle manager; a failed configure then exits the process with code 1 and the reason. With
``autostart:=false`` the node waits in *unconfigured* for ``ros2 lifecycle set``.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.node import Node

from locara_ros.nodes.common import announce_ready, declare

SUCCESS = TransitionCallbackReturn.SUCCESS
# deactivate and cleanup wait this long for callbacks already running (pause() ends the long ones)
DRAIN_TIMEOUT_S = 10.0
FAILURE = TransitionCallbackReturn.FAILURE


def _refuse(response: Any, message: str) -> Any:
    if hasattr(response, "success"):
        response.success = False
    if hasattr(response, "message"):
        response.message = message
    return response


class CallbackGuard:
    """Mixin for rclpy nodes: a callback that raises is logged (throttled) and, for a service,
    answered ``success=false`` with the error. An exception out of a callback would end rclpy's
    executor, and with it the node."""

    _callback_failures = 0

    def _failed(self, what: str, e: Exception) -> str:
        """A callback raised: log it (throttled) and keep the node running."""
        self._callback_failures += 1
        text = f"{what} failed: {type(e).__name__}: {e}"
        self.get_logger().error(f"{text} ({self._callback_failures} callback failure(s) so far)",
                                throttle_duration_sec=2.0)
        return text

    def _guard(self, what: str, callback: Callable) -> Callable:
        """`callback`, its failures logged, never fatal (ManagedNode: the ungated callbacks, state
        that must not be missed and a stop that must always work, run in every state)."""
        @functools.wraps(callback)
        def run(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as e:  # noqa: BLE001 - logged, never fatal
                text = self._failed(what, e)
                return _refuse(args[-1], text) if len(args) == 2 else None
        return run


class GuardedNode(CallbackGuard, Node):
    """A plain (not managed) node whose subscription, service and timer callbacks are guarded:
    mic_capture and turn_metrics."""

    def create_subscription(self, msg_type, topic, callback, *args, **kw):
        return super().create_subscription(msg_type, topic,
                                           self._guard(f"message on {topic}", callback),
                                           *args, **kw)

    def create_service(self, srv_type, srv_name, callback, *args, **kw):
        return super().create_service(srv_type, srv_name,
                                      self._guard(f"call to {srv_name}", callback), *args, **kw)

    def create_timer(self, period, callback, *args, **kw):
        return super().create_timer(period, self._guard("timer", callback), *args, **kw)


class ManagedNode(CallbackGuard, LifecycleNode):
    """Base of the model nodes. Subclasses implement ``setup()`` and ``teardown()``."""

    def __init__(self, name: str) -> None:
        self._tracking = False
        self._entities: list[tuple[str, Any]] = []
        self._gate_lock = threading.Lock()
        self._active = False
        self._refused_while_inactive = 0
        self._callback_failures = 0
        self._in_flight = 0  # gated callbacks running now (cleanup waits for them)
        self._idle = threading.Condition(self._gate_lock)
        super().__init__(name)
        self.kind = name  # the node's kind, whatever it is renamed to (core.naming)
        self.autostart = bool(declare(
            self, "autostart", True, "configure and activate at start-up (false: wait in "
            "'unconfigured' for `ros2 lifecycle set <node> configure` / `activate`)"))
        self.configured = False
        self.configure_error = ""
        self._ready: tuple[str, float | None] = (name, None)

    # ---------------------------------------------------------------- what subclasses provide
    def setup(self) -> tuple[str, float | None]:
        """Load models, create the node's interfaces and threads; return (ready text, load s)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Stop threads and free models (called once per successful or failed setup)."""

    def pause(self) -> None:
        """deactivate: stop work already under way (speech playing, a generation, an utterance)
        so nothing more comes out of an inactive node."""

    # ---------------------------------------------------------------- state
    @property
    def active(self) -> bool:
        return self._active

    def state_label(self) -> str:
        try:
            return str(self._state_machine.current_state[1])
        except Exception:  # noqa: BLE001 - only for messages
            return "active" if self._active else "inactive"

    def start(self) -> bool:
        """autostart: configure, then activate. False (configure_error says why) on failure."""
        if self.trigger_configure() != SUCCESS:
            return False
        if self.trigger_activate() != SUCCESS:
            self.configure_error = self.configure_error or "activate failed"
            return False
        return True

    # ---------------------------------------------------------------- transitions
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        self.configure_error = ""
        self._tracking = True
        try:
            self._ready = self.setup()
        except Exception as e:  # noqa: BLE001 - a failed load fails the transition with why
            self.configure_error = str(e) or type(e).__name__
            self.get_logger().error(f"configure failed: {self.configure_error}")
            self._tracking = False
            self._release(failed_setup=True)
            return FAILURE
        finally:
            self._tracking = False
        self.configured = True
        self.get_logger().info(f"configured in {time.monotonic() - t0:.2f} s "
                               f"(state inactive until activate)")
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        with self._gate_lock:
            self._active = True
        what, load_seconds = self._ready
        announce_ready(self, what, load_seconds)
        return SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._gate_lock:
            self._active = False
        self._call_quietly(self.pause, "pause")
        busy = self._drain(DRAIN_TIMEOUT_S)
        self.get_logger().info("deactivated: input is dropped and calls are refused until "
                               "activate" + (f" ({busy} callback(s) still running)" if busy
                                             else ""))
        return SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: models freed (configure loads them again)")
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def close(self) -> None:
        """run_node's last call (the executor has stopped): free what is still loaded."""
        self._release(pause=False)

    def _release(self, failed_setup: bool = False, pause: bool = True) -> None:
        with self._gate_lock:
            was_active, self._active = self._active, False
        if was_active and pause:
            self._call_quietly(self.pause, "pause")
        if self.configured or failed_setup:
            self._drain(DRAIN_TIMEOUT_S)  # callbacks still using what teardown frees
            self._call_quietly(self.teardown, "teardown")
        self.configured = False
        entities, self._entities = self._entities, []
        for kind, entity in reversed(entities):
            try:
                getattr(self, f"destroy_{kind}")(entity)
            except Exception:  # noqa: BLE001 - the context may already be gone at exit
                pass

    def _call_quietly(self, fn: Callable[[], None], what: str) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a partial setup may not tear down cleanly
            self.get_logger().warning(f"{what}: {type(e).__name__}: {e}")

    def _drain(self, timeout: float) -> int:
        """Wait until no gated callback runs (they were let in while active); the number still
        running when the time is up."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
            return self._in_flight

    def _enter(self) -> bool:
        with self._gate_lock:
            if not self._active:
                return False
            self._in_flight += 1
            return True

    def _leave(self) -> None:
        with self._gate_lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    # ---------------------------------------------------------------- gated interfaces
    def _note_inactive(self, what: str) -> None:
        self._refused_while_inactive += 1
        self.get_logger().warning(
            f"{what} while {self.state_label()}: ignored ({self._refused_while_inactive} so far; "
            f"`ros2 lifecycle set {self.get_name()} activate`)", throttle_duration_sec=5.0)

    def _gate(self, kind: str, name: str, callback: Callable) -> Callable:
        if kind == "service":
            @functools.wraps(callback)
            def serve(request: Any, response: Any) -> Any:
                if not self._enter():
                    self._note_inactive(f"call to {name}")
                    return _refuse(response, f"node {self.get_name()} is "
                                             f"{self.state_label()}, not active")
                try:
                    return callback(request, response)
                except Exception as e:  # noqa: BLE001 - answered, never fatal
                    return _refuse(response, self._failed(f"call to {name}", e))
                finally:
                    self._leave()
            return serve
        if kind == "timer":
            @functools.wraps(callback)
            def tick() -> None:
                if not self._enter():
                    return
                try:
                    callback()
                except Exception as e:  # noqa: BLE001 - logged, never fatal
                    self._failed("timer", e)
                finally:
                    self._leave()
            return tick

        @functools.wraps(callback)
        def receive(msg: Any) -> None:
            if not self._enter():
                self._note_inactive(f"message on {name}")
                return
            try:
                callback(msg)
            except Exception as e:  # noqa: BLE001 - logged, never fatal
                self._failed(f"message on {name}", e)
            finally:
                self._leave()
        return receive

    def _track(self, kind: str, entity: Any) -> Any:
        if getattr(self, "_tracking", False):
            self._entities.append((kind, entity))
        return entity

    def create_subscription(self, msg_type, topic, callback, *args, gated: bool = True, **kw):
        """gated=False: delivered in every state (latched formats, state events that must not
        be missed: a latched sample arrives once, when configure subscribes)."""
        if getattr(self, "_tracking", False):
            callback = (self._gate("subscription", topic, callback) if gated
                        else self._guard(f"message on {topic}", callback))
        return self._track("subscription",
                           super().create_subscription(msg_type, topic, callback, *args, **kw))

    def create_service(self, srv_type, srv_name, callback, *args, gated: bool = True, **kw):
        if getattr(self, "_tracking", False):
            callback = (self._gate("service", srv_name, callback) if gated
                        else self._guard(f"call to {srv_name}", callback))
        return self._track("service",
                           super().create_service(srv_type, srv_name, callback, *args, **kw))

    def create_timer(self, period, callback, *args, **kw):
        if getattr(self, "_tracking", False):
            callback = self._gate("timer", "", callback)
        return self._track("timer", super().create_timer(period, callback, *args, **kw))

    def create_publisher(self, *args, **kw):
        return self._track("publisher", super().create_publisher(*args, **kw))

    def create_client(self, *args, **kw):
        return self._track("client", super().create_client(*args, **kw))
