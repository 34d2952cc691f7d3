"""Launch-file support: turns the topology description (locara_ros.core.topology) into
launch_ros Node actions. Imported only by the files in launch/, which stay thin.

Start-up is ordered the way locara_ros.testing.processes.start_topology orders it: every node
but the microphone starts at once, and mic_capture starts when all of them have said they are
ready (their "[locara:ready]" log line: models loaded, topics and services up), so the first
thing a user says after the launch is ready is heard, parsed and answered. A node that exits
with an error (a model file that does not load, a bad parameter) brings the whole launch down
with its message instead of leaving a robot that hears and never acts.

Each launch description is a scoped group: two launch files included side by side (the
off-board robot and server halves) do not see each other's argument defaults.
"""
from __future__ import annotations

import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    GroupAction,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from locara_ros.core import topology

READY_MARKER = "[locara:ready]"


class _StartUp:
    """Which nodes are ready, the failures seen, and the microphone held back until then."""

    def __init__(self, waiting: set[str], mic: Node | None) -> None:
        self.waiting = set(waiting)
        self.mic = mic
        self.last_error: dict[str, str] = {}
        self.shutting_down = False

    def on_output(self, name: str, event) -> list:
        text = event.text.decode("utf-8", "replace")
        for line in text.splitlines():
            if "start-up failed" in line or "FATAL" in line:
                self.last_error[name] = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if READY_MARKER in text and name in self.waiting:
            self.waiting.discard(name)
            if not self.waiting and self.mic is not None:
                mic, self.mic = self.mic, None
                return [LogInfo(msg="locara_ros: every node is ready; starting mic_capture"),
                        mic]
        return []

    def on_exit(self, name: str, event, _context) -> list:
        code = event.returncode
        if self.shutting_down or code in (0, None) or code < 0:
            return []  # a clean exit, or a signal from a shutdown already under way
        self.shutting_down = True
        reason = (f"locara_ros: node '{name}' exited with code {code}"
                  f"{': ' + self.last_error[name] if name in self.last_error else ''}; "
                  "stopping the launch")
        # raising from the launch makes `ros2 launch` exit non-zero after shutting down
        return [EmitEvent(event=Shutdown(reason=reason)), OpaqueFunction(function=_fail,
                                                                         args=[reason])]


def _fail(_context: LaunchContext, reason: str) -> None:
    raise RuntimeError(reason)


def node_actions(context: LaunchContext) -> list:
    values = {name: LaunchConfiguration(name).perform(context)
              for name in topology.ARGUMENT_DESCRIPTIONS}
    options = topology.TopologyOptions.from_strings(values)
    config_dir = os.path.join(get_package_share_directory("locara_ros"), "config")
    nodes: list[tuple[str, Node]] = []
    for spec in topology.build(options):
        parameters: list = [os.path.join(config_dir, f) for f in spec.params_files]
        if options.params_file:
            parameters.append(options.params_file)
        if spec.params:
            parameters.append(dict(spec.params))
        nodes.append((spec.name, Node(
            package="locara_ros", executable=spec.executable, name=spec.name,
            namespace=options.namespace or None, parameters=parameters,
            remappings=list(spec.remaps.items()), output="screen", emulate_tty=True)))
    mic = next((n for name, n in nodes if name == "mic_capture"), None)
    others = [(name, n) for name, n in nodes if n is not mic]
    start = _StartUp({name for name, _ in others}, mic if others else None)
    actions: list = []
    for name, node in nodes:
        actions.append(RegisterEventHandler(OnProcessIO(
            target_action=node,
            on_stdout=lambda ev, n=name: start.on_output(n, ev),
            on_stderr=lambda ev, n=name: start.on_output(n, ev))))
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=node, on_exit=lambda ev, ctx, n=name: start.on_exit(n, ev, ctx))))
    actions += [n for _, n in others]
    if mic is not None and not others:
        actions.append(mic)
    if options.role in ("all", topology.model_role(options)) \
            and not topology.vision_configured(options):
        actions.append(LogInfo(msg="vlm not started: no vision-language model configured "
                                   "(set vlm_model:=... vlm_mmproj:=... or, off-board over "
                                   "HTTP, vlm_server_url:=...); vision/ask stays unavailable"))
    return actions


def generate(**defaults: str) -> LaunchDescription:
    """A LaunchDescription with every topology argument declared (described), then the nodes,
    in a scoped group."""
    base = topology.argument_defaults()
    base.update(defaults)
    arguments = [DeclareLaunchArgument(name, default_value=base[name], description=text)
                 for name, text in topology.ARGUMENT_DESCRIPTIONS.items()]
    return LaunchDescription([GroupAction(
        [*arguments, OpaqueFunction(function=lambda ctx: node_actions(ctx))], scoped=True)])
