"""Thin rclpy adapters, one module per node."""
