"""The message definitions a bag needs to describe the detections topic.

rosbag2 stores each topic's full message definition and its type hash (REP 2011) beside
the messages; rosbags' type stores know sensor_msgs but not vision_msgs. These are
vision_msgs 4.1.1's fields (the same as pip_env/vision_msgs/msg, without comments), from
which rosbags derives the text rosbag2 writes and the RIHS01 hash real ROS 2 peers match
(test/test_bag.py checks both against upstream).
"""
from __future__ import annotations

from functools import lru_cache

DETECTION_ARRAY = 'vision_msgs/msg/Detection2DArray'
DETECTION_3D_ARRAY = 'vision_msgs/msg/Detection3DArray'

VISION_MSGS: dict[str, str] = {
    'Point2D': 'float64 x\nfloat64 y\n',
    'Pose2D': 'vision_msgs/Point2D position\nfloat64 theta\n',
    'BoundingBox2D': 'vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n',
    'ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'ObjectHypothesisWithPose': 'ObjectHypothesis hypothesis\n'
                                'geometry_msgs/PoseWithCovariance pose\n',
    'Detection2D': 'std_msgs/Header header\nObjectHypothesisWithPose[] results\n'
                   'BoundingBox2D bbox\nstring id\n',
    'Detection2DArray': 'std_msgs/Header header\nDetection2D[] detections\n',
    'BoundingBox3D': 'geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n',
    'Detection3D': 'std_msgs/Header header\nObjectHypothesisWithPose[] results\n'
                   'BoundingBox3D bbox\nstring id\n',
    'Detection3DArray': 'std_msgs/Header header\nDetection3D[] detections\n',
}


@lru_cache(maxsize=1)
def typestore():
    """rosbags' Jazzy type store (std_msgs and geometry_msgs are the same in Kilted) with
    vision_msgs added."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, f'vision_msgs/msg/{name}'))
    store.register(types)
    return store


def definition(msgtype: str) -> tuple[str, str]:
    """(the message definition as rosbag2 stores it, its RIHS01 type hash)."""
    store = typestore()
    return store.generate_msgdef(msgtype, ros_version=2)[0], store.hash_rihs01(msgtype)
