"""ament_python package; the same file serves colcon and `pip install`."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'yolo_trt_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.*')),
    ],
    install_requires=['setuptools'],
    # GPU JPEG decoding (core/gpu_jpeg.py); without it CompressedImage decodes with OpenCV.
    extras_require={'gpu-jpeg': ['nvidia-nvimgcodec-cu13', 'nvidia-nvjpeg']},
    zip_safe=True,
    maintainer='yolo_trt_ros maintainers',
    maintainer_email='maintainers@yolo-trt-ros.dev',
    description='Fast YOLO object detection for ROS 2 with TensorRT engines.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'yolo-trt = yolo_trt_ros.cli:main',
            'detector = yolo_trt_ros.ros.detector_node:main',
            'engine_builder = yolo_trt_ros.ros.builder_node:main',
            'image_source = yolo_trt_ros.ros.image_source_node:main',
        ],
    },
)
