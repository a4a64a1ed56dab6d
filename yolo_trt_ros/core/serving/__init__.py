"""What a detector node does per frame, without ROS: keep-newest slots, statistics and
health, CDR in and out, the batch step and the node configuration. Tested in-process."""
