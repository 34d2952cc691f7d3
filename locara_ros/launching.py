"""Launch-file support: turns the topology description (locara_ros.core.topology) into
launch_ros Node actions. Imported only by the files in launch/, which stay thin.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from locara_ros.core import topology


def node_actions(context: LaunchContext) -> list:
    values = {name: LaunchConfiguration(name).perform(context)
              for name in topology.ARGUMENT_DESCRIPTIONS}
    options = topology.TopologyOptions.from_strings(values)
    config_dir = os.path.join(get_package_share_directory("locara_ros"), "config")
    actions: list = []
    for spec in topology.build(options):
        parameters: list = [os.path.join(config_dir, f) for f in spec.params_files]
        if options.params_file:
            parameters.append(options.params_file)
        if spec.params:
            parameters.append(dict(spec.params))
        actions.append(Node(
            package="locara_ros", executable=spec.executable, name=spec.name,
            namespace=options.namespace or None, parameters=parameters,
            remappings=list(spec.remaps.items()), output="screen", emulate_tty=True))
    if options.role in ("all", topology.model_role(options)) \
            and not topology.vision_configured(options):
        actions.append(LogInfo(msg="vlm not started: no vision-language model configured "
                                   "(set vlm_model:=... vlm_mmproj:=... or, off-board over "
                                   "HTTP, vlm_server_url:=...); vision/ask stays unavailable"))
    return actions


def generate(**defaults: str) -> LaunchDescription:
    """A LaunchDescription with every topology argument declared (described), then the nodes."""
    base = topology.argument_defaults()
    base.update(defaults)
    arguments = [DeclareLaunchArgument(name, default_value=base[name], description=text)
                 for name, text in topology.ARGUMENT_DESCRIPTIONS.items()]
    return LaunchDescription([*arguments,
                              OpaqueFunction(function=lambda ctx: node_actions(ctx))])
