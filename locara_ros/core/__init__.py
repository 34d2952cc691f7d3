"""Pure-Python core of locara_ros: no rclpy here, so it can be tested and reused on its own."""
