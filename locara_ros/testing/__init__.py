"""Test support for locara_ros graphs: isolated ROS domains, node processes, in-process nodes.

Used by the package's tests and benchmarks, and usable by downstream packages that test against
locara_ros nodes. Not imported by any node.
"""
