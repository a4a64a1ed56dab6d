"""The obb, segment and pose heads on the GPU (their kernels' compilation for every target is
checked in test_gpu_preprocess.py): on a GPU, the masks and label image equal the CPU
twin's byte for byte, the decoder's angles, keypoints and masks equal `postprocess()`'s
exactly, and the detector's GPU path gives what its CPU path gives."""
from __future__ import annotations

import numpy as np
import pytest
from support.cuda import CountingCuda

from yolo_trt_ros.core.errors import OutputError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime
from yolo_trt_ros.core.gpu.decode import GpuDecoder
from yolo_trt_ros.core.gpu.masks import GpuMasks
from yolo_trt_ros.core.models.synthetic import task_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.head import Head
from yolo_trt_ros.core.pipeline.masks import MaskGeometry, assemble
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import PostprocessConfig

pytestmark = pytest.mark.gpu
# Geometries whose band is not whole prototype pixels too (333 x 517): the kernel follows
# the CPU twin's mapping, not the reference's crop.
BOXES = [Letterbox.fit(1920, 1080, 640, 640), Letterbox.fit(640, 480, 640, 640),
         Letterbox.fit(333, 517, 640, 640)]
HEADS = {'obb': Head('obb', 'yolov8', 1),
         'segment': Head('segment', 'yolov8', 32, mask_dim=32, proto_output=1),
         'pose': Head('pose', 'yolov8', 51, kpt_shape=(17, 3))}


class Device:
    """Arrays uploaded to the GPU for a test, freed at the end."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda, self.stream, self.pointers = cuda, cuda.stream_create(), []

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        ptr = self.cuda.malloc(array.nbytes)
        self.pointers.append(ptr)
        self.cuda.copy_to_device(ptr, array.ctypes.data, array.nbytes, self.stream)
        self.cuda.stream_synchronize(self.stream)
        return ptr

    def close(self) -> None:
        for ptr in self.pointers:
            self.cuda.free(ptr)
        self.cuda.stream_destroy(self.stream)


@pytest.fixture
def device():
    d = Device(CudaRuntime())
    yield d
    d.close()


def random_detections(n: int, box: Letterbox, seed: int):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-20, [box.src_width, box.src_height], (n, 2))
    wh = rng.uniform(1, [box.src_width / 2, box.src_height / 2], (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return rng.normal(0, 1, (n, 32)).astype(np.float32), boxes


def assert_same_masks(gpu, cpu) -> None:
    np.testing.assert_array_equal(gpu.regions, cpu.regions)
    np.testing.assert_array_equal(gpu.starts, cpu.starts)
    np.testing.assert_array_equal(gpu.data, cpu.data)
    np.testing.assert_array_equal(gpu.label_image(), cpu.label_image())
    assert gpu.label_image().dtype == cpu.label_image().dtype


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('box', BOXES)
def test_gpu_masks_equal_the_cpu_twin(device, box, dtype):
    _, protos = task_output('segment', classes=2, objects=1, seed=1)
    protos = protos.astype(dtype)
    geometry = MaskGeometry(box, 4.0, protos.shape[1:])
    with GpuMasks(dtype, stream=device.stream) as gpu:
        ptr = device.upload(protos)
        for n, seed in ((20, 0), (1, 1), (0, 2), (300, 3)):  # 300: mono16 label
            coefficients, boxes = random_detections(n, box, seed)
            got = gpu(ptr, 32, protos.shape[1:], coefficients, boxes, geometry)
            want = assemble(coefficients, protos.astype(np.float32), boxes, geometry)
            assert_same_masks(got, want)
            assert n < 20 or want.data.mean() > 0.05


def test_nan_prototypes_are_refused_on_the_gpu_as_on_the_cpu(device):
    _, protos = task_output('segment', classes=2, objects=1, seed=1)
    protos[5, 40:60, 40:60] = np.nan
    box = BOXES[1]
    geometry = MaskGeometry(box, 4.0, protos.shape[1:])
    coefficients, boxes = random_detections(10, box, 4)
    with pytest.raises(OutputError, match='NaN mask values'):
        assemble(coefficients, protos, boxes, geometry)
    with GpuMasks(stream=device.stream) as gpu, pytest.raises(OutputError, match='NaN'):
        gpu(device.upload(protos), 32, protos.shape[1:], coefficients, boxes, geometry)


@pytest.mark.parametrize('nms', [True, False], ids=['gpu-nms', 'host-nms'])
@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('task', sorted(HEADS))
def test_gpu_decoder_equals_postprocess_for_every_head(device, task, dtype, nms):
    """Each head's extra values (masks, keypoints) come back with the rows NMS kept, on
    the GPU or the host (an oriented head's rotated NMS is always the host's)."""
    head = HEADS[task]
    images = [task_output(task, classes=1 if task == 'pose' else 5, objects=12, seed=s)
              for s in range(3)]
    outputs = np.stack([o[0] for o in images]).astype(dtype)
    cfg = PostprocessConfig(conf_threshold=0.25)
    ptr = device.upload(outputs)
    maskers = None
    if task == 'segment':
        protos = np.stack([o[1] for o in images]).astype(dtype)
        protos_ptr = device.upload(protos)
        masks = GpuMasks(dtype, slots=3, stream=device.stream)
        per_image = protos[0].nbytes

        def maker(slot, box):
            geometry = MaskGeometry(box, 4.0, protos.shape[2:])
            return lambda c, b: masks(protos_ptr + slot * per_image, 32, protos.shape[2:], c,
                                      b, geometry, slot)
        maskers = [maker(i, box) for i, box in enumerate(BOXES)]
    with GpuDecoder('yolov8', outputs.shape, dtype, stream=device.stream, head=head,
                    nms=nms) as dec:
        assert (dec.nms is not None) == (nms and task != 'obb')
        got = dec(ptr, BOXES, cfg, maskers)
    for i, (det, box) in enumerate(zip(got, BOXES, strict=True)):
        want = postprocess(outputs[i], 'yolov8', box, cfg, head,
                           protos[i] if task == 'segment' else None)
        assert len(det) == len(want) > 3
        for field in ('boxes', 'scores', 'class_ids', 'rboxes', 'keypoints'):
            a, b = getattr(det, field), getattr(want, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
        if task == 'segment':
            assert_same_masks(det.masks, want.masks)
    if task == 'segment':
        masks.close()


def test_steady_frames_allocate_nothing_and_download_only_masks(device):
    _, protos = task_output('segment', classes=2, objects=1, seed=1)
    box = BOXES[0]
    geometry = MaskGeometry(box, 4.0, protos.shape[1:])
    coefficients, boxes = random_detections(20, box, 5)
    cuda = CountingCuda()
    with GpuMasks(stream=device.stream, cuda=cuda) as gpu:
        ptr = device.upload(protos)
        first = gpu(ptr, 32, protos.shape[1:], coefficients, boxes, geometry)
        allocations, downloaded = cuda.allocations, cuda.downloaded
        gpu(ptr, 32, protos.shape[1:], coefficients, boxes, geometry)
        assert cuda.allocations == allocations
        # the regions' masks, the label image and the NaN flag: nothing of the prototypes
        assert cuda.downloaded - downloaded == len(first.data) + 1920 * 1080 + 4


def test_detector_gpu_path_equals_its_cpu_path_for_a_segment_model(tmp_path):
    """Frame -> GPU letterbox -> engine (runtime double, real CUDA memory) -> GPU decode and
    masks: what ONNX Runtime and the CPU decoder give for the same planted model."""
    from support.trt_double import CudaDeviceAccess, TensorRTRuntimeDouble, plan_for

    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
    from yolo_trt_ros.core.image.buffers import ImageView
    from yolo_trt_ros.core.models.synthetic import constant_output_model
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    names = ['a', 'b', 'c']
    output, protos = task_output('segment', classes=3, anchors=2100, size=320, seed=6)
    model = constant_output_model(tmp_path / 'seg.onnx', output, (320, 320), names,
                                  more=(protos,))
    engine = tmp_path / 'seg.engine'
    engine.write_bytes(plan_for(model, None))
    engine.chmod(0o600)
    backend = TensorRTBackend(engine, trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    frame = ImageView(np.full((1080, 1920, 3), 90, np.uint8), 'bgr')
    with Detector(backend, names) as gpu, \
            Detector.open(DetectorConfig(model, backend='onnxruntime')) as cpu:
        assert gpu.task == 'segment' and gpu.decode_device == 'cpu'
        for _ in range(3):
            a = gpu.detect([frame])[0]
        assert gpu.decode_device == 'gpu'
        b = cpu.detect([frame])[0]
        # inside: GPU masks view the detector's pinned buffers, freed when it closes
        assert len(a) == len(b) > 3
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert_same_masks(a.masks, b.masks)
