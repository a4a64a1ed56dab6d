"""Real Ultralytics exports read by our detector (issue 20: "against real exports where a
test can make one"), on a machine with Ultralytics and PyTorch (the GPU machine, with
bench/ultralytics_env.sh sourced in the same command):

    python bench/real_exports.py --json real_exports.json

For each task (detect, obb, segment, pose) a YOLOv8n is built from Ultralytics' own YAML
(no weights can be downloaded on these machines: every convolution's weights drawn from
N(0, s), the first s of SCALES for which the top scores do not tie) and exported to ONNX by
Ultralytics' exporter. Our Detector (ONNX Runtime) must recognise the task, layout and
metadata from the export alone, and its detections on a frame (640x640 noise: no padding,
whose uniform grey would give many anchors equal scores) must equal Ultralytics' predictor's
on the same ONNX file and frame. The confidence threshold is set just under the
30th-highest class score of the raw output (the same for both), which leaves a few dozen
candidates for NMS; where no weight scale avoids ties there, the task is reported as
recognised but not compared. Exit 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

TASKS = {'detect': 'yolov8n.yaml', 'obb': 'yolov8n-obb.yaml', 'segment': 'yolov8n-seg.yaml',
         'pose': 'yolov8n-pose.yaml'}
IOU = 0.7  # Ultralytics' default, given to both
CANDIDATES = 30
SCALES = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2)  # weight scales tried until no top scores tie


def threshold(onnx_path: str, batch: np.ndarray, box_rows: int, classes: int) -> float | None:
    """Between the 30th and 31st highest class score; None where the top ones tie."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    out = session.run(None, {session.get_inputs()[0].name: batch})[0][0]
    scores = np.sort(out[box_rows:box_rows + classes].max(0))
    top = scores[-CANDIDATES - 1:]
    if len(np.unique(top)) < len(top):  # fast NMS over ties depends on the sort's order
        return None
    return float(scores[-CANDIDATES] + scores[-CANDIDATES - 1]) / 2


def compare(task: str, ours, theirs) -> dict:
    """Ours (Detections) against Ultralytics' Results on the same frame."""
    if task == 'obb':
        their_boxes = theirs.obb.xywhr.cpu().numpy()
        their_cls = theirs.obb.cls.cpu().numpy().astype(int)
        our_boxes = ours.rboxes
    else:
        their_boxes = theirs.boxes.xyxy.cpu().numpy()
        their_cls = theirs.boxes.cls.cpu().numpy().astype(int)
        our_boxes = ours.boxes
    found = {'ours': len(ours), 'ultralytics': len(their_cls)}
    if len(ours) != len(their_cls) or not len(ours):
        return {**found, 'same': False}
    # Match each of ours to the nearest of theirs (orders may differ at equal scores).
    order = [int(np.argmin(np.abs(their_boxes - b).sum(1))) for b in our_boxes]
    their_boxes, their_cls = their_boxes[order], their_cls[order]
    report = {**found, 'classes_equal': bool((ours.class_ids == their_cls).all())}
    if task == 'obb':  # the angle of a near-square box may differ by pi/2 with sides swapped
        report['box_centre_max_px'] = float(np.abs(our_boxes[:, :2] - their_boxes[:, :2]).max())
        same_boxes = report['box_centre_max_px'] <= 1.0
    else:
        report['box_max_px'] = float(np.abs(our_boxes - their_boxes).max())
        same_boxes = report['box_max_px'] <= 1.0
    same = report['classes_equal'] and same_boxes
    if task == 'pose':
        kp = theirs.keypoints.data.cpu().numpy()[order]
        report['keypoint_max_px'] = float(np.abs(ours.keypoints[..., :2] - kp[..., :2]).max())
        same &= report['keypoint_max_px'] <= 1.0
    if task == 'segment':
        theirs_m = theirs.masks.data.cpu().numpy()[order] > 0.5
        ious = []
        for i in range(len(ours)):
            a = ours.masks.full(i).astype(bool)
            b = theirs_m[i]
            if b.shape != a.shape:  # Ultralytics' masks at the model input (retina_masks off)
                import cv2
                b = cv2.resize(b.astype(np.uint8), a.shape[::-1], cv2.INTER_NEAREST) > 0
            union = (a | b).sum()
            ious.append(float((a & b).sum() / union) if union else 1.0)
        report['mask_iou_min'] = min(ious)
        same &= report['mask_iou_min'] >= 0.9
    report['same'] = bool(same)
    return report


def export(yaml: str, task: str, std: float, tmp: Path) -> str:
    """Ultralytics' YOLOv8n for task, every convolution's weights drawn from N(0, std),
    exported to ONNX."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO(yaml, task=task)
    with torch.no_grad():  # convolutions only: batch-norm scales near 0 would zero features
        for weight in model.model.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, std)
    path = model.export(format='onnx', imgsz=640, simplify=False, dynamic=False,
                        project=str(tmp), name=task, verbose=False)
    return str(Path(path).rename(tmp / f'{task}_{std}.onnx'))


def run_task(task: str, yaml: str, frame: Path, tmp: Path) -> dict:
    from ultralytics import YOLO

    from yolo_trt_ros.core.image.decode import read_image
    from yolo_trt_ros.core.pipeline.preprocess import Preprocessor
    from yolo_trt_ros.core.pipeline.results import PostprocessConfig
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    image = read_image(str(frame))
    pre = Preprocessor(640, 640)
    pre(image)
    for std in SCALES:  # the first weight scale whose top scores do not tie
        onnx_path = export(yaml, task, std, tmp)
        with Detector.open(DetectorConfig(Path(onnx_path), backend='onnxruntime')) as probe:
            head = probe.head
            classes = probe.num_classes or len(probe.names or [])
        conf = threshold(onnx_path, pre.buffer, 4, classes)
        if conf is not None:
            break
    read = {'task': head.task, 'format': head.fmt, 'extras': head.extras,
            'kpt_shape': list(head.kpt_shape) if head.kpt_shape else None, 'classes': classes}
    found = {'task': task, 'recognised': read, 'task_recognised': head.task == task}
    if conf is None:
        return {**found, 'compared': False,
                'why': f'every weight scale {SCALES} leaves ties among the top {CANDIDATES} '
                       f'scores (NMS over ties follows the sort order, torch\'s is not '
                       f'ours)'}
    post = PostprocessConfig(conf_threshold=conf, iou_threshold=IOU, max_detections=300)
    with Detector.open(DetectorConfig(Path(onnx_path), backend='onnxruntime', post=post)) as det:
        ours = det.detect([image])[0]
    import cv2
    theirs = YOLO(onnx_path, task=task).predict(cv2.imread(str(frame)), conf=conf, iou=IOU,
                                                 imgsz=640, retina_masks=True, verbose=False,
                                                 max_det=300)[0]
    return {**found, 'compared': True, 'weight_std': std, 'conf': conf,
            **compare(task, ours, theirs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json')
    args = parser.parse_args()
    os.environ.setdefault('YOLO_OFFLINE', '1')
    import torch
    import ultralytics

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # Noise at the model's size: no letterbox padding, whose uniform grey gives many
        # anchors the same features and so the same scores (ties again).
        import cv2
        frame = Path(tmp) / 'noise.png'
        cv2.imwrite(str(frame), np.random.default_rng(0).integers(0, 256, (640, 640, 3),
                                                                   np.uint8))
        for task, yaml in TASKS.items():
            try:
                results.append(run_task(task, yaml, frame, Path(tmp)))
            except Exception as exc:  # one task's failure is reported, the others still run
                results.append({'task': task, 'task_recognised': False,
                                'error': f'{type(exc).__name__}: {exc}'[:400]})
            print(json.dumps(results[-1]), flush=True)
    doc = {'machine': {'ultralytics': ultralytics.__version__, 'torch': torch.__version__,
                       'frame': '640x640 uniform noise (seed 0)'}, 'results': results}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    ok = all(r['task_recognised'] and (r['same'] if r['compared'] else True)
             for r in results if 'error' not in r)
    return 0 if ok and all('error' not in r for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
