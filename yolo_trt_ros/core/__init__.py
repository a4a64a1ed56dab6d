"""The detection pipeline without ROS: nothing under this package imports rclpy."""
