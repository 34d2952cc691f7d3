"""Off-board, server side (offboard_mode:=ros): command_parser and vlm on the GPU server in the
robot's ROS domain, with bigger models:

  ros2 launch locara_ros off_board_server.launch.py \
      llm_model:=/models/qwen2.5-3b-instruct-q4_k_m.gguf \
      vlm_model:=/models/moondream2-text-model-f16.gguf \
      vlm_mmproj:=/models/moondream2-mmproj-f16.gguf vlm_chat_handler:=moondream
"""
from locara_ros.launching import generate


def generate_launch_description():
    return generate(topology="off_board", offboard_mode="ros", role="server")
