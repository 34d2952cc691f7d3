"""Off-board, robot side: mic_capture, asr and tts stay on the robot (it keeps hearing and
speaking without Wi-Fi).

Parser and vlm as ROS nodes on the server (run off_board_server.launch.py there):
  ros2 launch locara_ros off_board_robot.launch.py
All nodes here, the big models behind OpenAI-compatible servers:
  ros2 launch locara_ros off_board_robot.launch.py offboard_mode:=http \
      llm_server_url:=http://gpu:8080/v1 vlm_server_url:=http://gpu:8081/v1
"""
from locara_ros.launching import generate


def generate_launch_description():
    return generate(topology="off_board", role="robot")
