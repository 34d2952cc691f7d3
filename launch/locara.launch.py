"""Any locara_ros topology, chosen by arguments:

  ros2 launch locara_ros locara.launch.py topology:=off_board role:=robot

The node set, parameters and remaps come from locara_ros.core.topology (shared with the CI
integration tests and the demo); run `ros2 launch locara_ros locara.launch.py --show-args`.
"""
from locara_ros.launching import generate


def generate_launch_description():
    return generate()
