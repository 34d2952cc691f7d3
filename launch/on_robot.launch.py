"""Everything on the robot with small local models: `ros2 launch locara_ros on_robot.launch.py`.

Arguments (see --show-args): mic_source, mic_file, whisper_model, llm_model, vlm_model,
vlm_mmproj, vlm_chat_handler, namespace, params_file, ...
"""
from locara_ros.launching import generate


def generate_launch_description():
    return generate(topology="on_robot")
