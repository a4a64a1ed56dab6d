"""`yolo-trt`: detect, track, bag, build, launch, param, demo, bench, fetch-assets."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.errors import YoloTrtError, one_line
from yolo_trt_ros.core.models import paths
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.stopping import StopSignals


def _err(msg: str) -> None:
    print(f'yolo-trt: {msg}', file=sys.stderr, flush=True)


def _print_core_log() -> None:
    """The core logs through Python logging (the `yolo_trt_ros` logger): on the terminal it
    is plain lines on stderr, so stdout keeps only results (`--json` stays JSON)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(message)s'))
    core = logging.getLogger('yolo_trt_ros')
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0.0 < number < 1e6:  # NaN fails this too
        raise argparse.ArgumentTypeError(f'expected seconds above 0, got {value!r}')
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value!r}')
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f'expected an integer of 0 or more, got {value!r}')
    return number


def _model_arg(value: str | None) -> Path:
    if value:
        return Path(value)
    path = paths.default_model_path()
    if not path.is_file():
        raise YoloTrtError(f'default model {path} is missing: run `yolo-trt fetch-assets` '
                           f'(or pip_env/setup.sh), or pass --model')
    return path


def _open_detector(args):
    from yolo_trt_ros.core.files import regular_file_problem
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    # Judged on every backend: where ONNX Runtime serves (no GPU), a mistyped engine was
    # otherwise never looked at, and the run went on without a word.
    if args.engine and (problem := regular_file_problem(Path(args.engine))):
        raise YoloTrtError(f'--engine {args.engine}: {problem}')
    config = DetectorConfig(
        model=_model_arg(args.model), backend=args.backend,
        engine=Path(args.engine) if args.engine else None,
        labels=Path(args.labels) if args.labels else None,
        post=PostprocessConfig(conf_threshold=args.conf, iou_threshold=args.iou,
                               max_detections=args.max_det),
        # The cached engine is found exactly as the node finds it: same key, same cache.
        build=build_options(args), cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    detector = Detector.open(config)
    info = detector.backend.info
    print(f'backend: {info.name} on {info.device} ({info.reason})', file=sys.stderr)
    return detector


def _save_dir(value: str | None, inputs: list[str] = ()) -> Path | None:
    """The --save directory, created now, so that a bad one fails before any work; never
    a folder that holds inputs (image files, or folders of them), which the annotated
    copies would replace (`detect self/bus.jpg --save self` lost the photo)."""
    if not value:
        return None
    from yolo_trt_ros.core.files import folder_write_problem
    from yolo_trt_ros.core.image.files import IMAGE_SUFFIXES

    save = Path(value)
    try:
        if save.exists() and not save.is_dir():
            raise YoloTrtError(f'--save {save}: exists and is not a directory')
        save.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise YoloTrtError(f'--save {save}: cannot create the directory: {exc.strerror}') from exc
    # a folder that exists but takes no file (read-only, /sys): said now, not per image
    if problem := folder_write_problem(save):
        raise YoloTrtError(f'--save {save}: cannot write into it: {problem}')
    for item in inputs:
        path = Path(item)
        try:
            if path.is_dir():
                folders = [path]
            elif path.suffix.lower() in IMAGE_SUFFIXES:  # a link's own folder, and its file's
                folders = [path.parent, path.resolve().parent]
            else:
                continue
            if any(os.path.samefile(folder, save) for folder in folders):
                raise YoloTrtError(f'--save {save}: holds the input {item}; the annotated '
                                   'images would replace the inputs: choose another folder')
        except OSError:  # an input that cannot be looked at: said when it is read
            continue
    return save


def cmd_detect(args) -> int:
    from yolo_trt_ros.core.image.decode import read_image
    from yolo_trt_ros.core.image.files import ImageWriter, shown
    from yolo_trt_ros.core.pipeline.results import detections_to_dicts

    try:
        save = _save_dir(args.save, args.images)
        depth_of, camera = _depth_inputs(args)
        writer = ImageWriter(save) if save is not None else None
        detector = _open_detector(args)
    except (YoloTrtError, ValueError) as exc:
        _err(str(exc))
        return 2
    results, failed, done = [], 0, 0
    # Signals held from here until the results are written and the model closed: a stop
    # while the document is printed must not cut it short.
    with StopSignals() as stops, detector:
        for i, path in enumerate(args.images):
            if stops.cancel.is_set():
                break
            done += 1
            try:
                image = read_image(path, max_pixels=args.max_image_pixels)
                det = detector.detect([image])[0]
            except YoloTrtError as exc:
                _err(str(exc))
                failed += 1
                continue
            entry = {'image': shown(path), 'width': image.width, 'height': image.height,
                     'detections': detections_to_dicts(det, detector.label)}
            if depth_of and not _add_positions(entry, det, depth_of[i], camera):
                failed += 1
            results.append(entry)
            if not args.json:
                found = ', '.join(f"{d['label']} {d['score']:.2f}" for d in entry['detections'])
                _emit(f'{shown(path)}: {len(det)} objects ({found or "none"})')
            failed += not _write_annotated(writer, path, image, det, detector)
        return _finish(args, results, failed, stops, f'{done} images')


def _write_annotated(writer, key: str, image, det, detector) -> bool:
    """The annotated frame, where --save asked for it; False (reported) where it failed."""
    if writer is None:
        return True
    from yolo_trt_ros.core.image.buffers import to_bgr
    from yolo_trt_ros.core.pipeline.annotate import draw
    try:
        writer.write(key, draw(to_bgr(image), det, detector.label, detector.head.skeleton))
    except YoloTrtError as exc:
        _err(str(exc))
        return False
    return True


class _ResultsLost(Exception):
    """stdout refused the results (a full disk, a file-size limit): said in main."""


def _emit(text: str) -> None:
    """A result on stdout, now (a reader sees each as it comes)."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): said by _finish, after
        return              # the work (--save's images are still written)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _ResultsLost(exc.strerror or str(exc)) from None


def _finish(args, results: list[dict], failed: int, stops: StopSignals, done: str) -> int:
    """--json's document, and the exit status: 1 when any input failed; 128 + the signal
    where Ctrl-C or SIGTERM stopped the run (checked between inputs: what was done is
    printed, never thrown away)."""
    if args.json:
        _emit(json.dumps(results, indent=2))
    if sys.stdout is None:
        _err('cannot write the results: stdout is closed')
        return stops.exit_code(1)
    if stops.caught:
        _err(f'stopped by {stops.said} after {done}; the results hold those only')
        return stops.exit_code(1)
    return 1 if failed else 0


def _depth_inputs(args) -> tuple[list[str], object]:
    """--depth (one per image, in order) and --camera-info, checked before any image is
    read: ([depth file of each image], CameraModel or None). ValueError names the option."""
    if not args.depth:
        if args.camera_info:
            raise ValueError('--camera-info without --depth: give the depth image of each image')
        return [], None
    if len(args.depth) != len(args.images):
        raise ValueError(f'--depth given {len(args.depth)} times for {len(args.images)} images '
                         f'(one depth image per image, in order)')
    if not args.camera_info:
        raise ValueError('--depth needs --camera-info CAMERA.yaml (the camera matrix)')
    from yolo_trt_ros.core.pipeline.depth import read_camera_yaml

    # by position: an image listed twice may have two depth images
    return list(args.depth), read_camera_yaml(args.camera_info)


def _add_positions(entry: dict, det, depth_path: str, camera) -> bool:
    """Add position_m and size_m (null without valid depth) to each detection of entry;
    all null and False, after one line on stderr, when the depth image cannot be used."""
    from yolo_trt_ros.core.pipeline.depth import positions, read_depth_file

    size = (entry['width'], entry['height'])
    try:
        depth = read_depth_file(depth_path)
        if (depth.width, depth.height) != size:
            raise ValueError(f'{depth_path}: depth image {depth.width}x{depth.height} is not '
                             f"the size of {entry['image']} ({size[0]}x{size[1]}); it must "
                             'be aligned to it')
        if problem := camera.size_problem(*size):  # as the node and `yolo-trt bag` refuse it
            raise ValueError(f"{entry['image']}: --camera-info {problem}")
    except ValueError as exc:
        _err(str(exc))
        for d in entry['detections']:  # the same keys, so a reader need not guess
            d['position_m'] = d['size_m'] = None
        return False
    found = positions(depth, camera, det.boxes)
    for d, ok, centre, extent in zip(entry['detections'], found.valid, found.centre,
                                     found.size, strict=True):
        d['position_m'] = [round(float(v), 4) for v in centre] if ok else None
        d['size_m'] = [round(float(v), 4) for v in extent] if ok else None
    return True


def cmd_track(args) -> int:
    """Track objects through a video, a folder of images (sorted by name) or listed images:
    the node's per-camera tracker, frame by frame, so the ids are the node's."""
    from yolo_trt_ros.core.errors import ImageError
    from yolo_trt_ros.core.image.files import ImageWriter, shown
    from yolo_trt_ros.core.image.sources import frames_of
    from yolo_trt_ros.core.pipeline.results import detections_to_dicts
    from yolo_trt_ros.core.pipeline.tracking import DetectionTracker, detection_floor

    try:
        config = _tracker_config(args)
        args.conf = detection_floor(args.conf, config)  # what the tracker's second stage needs
        save = _save_dir(args.save, args.inputs)
        writer = ImageWriter(save) if save is not None else None
        detector = _open_detector(args)
    except (YoloTrtError, ValueError) as exc:
        _err(str(exc))
        return 2
    tracker = DetectionTracker(config)
    results, failed, done = [], 0, 0
    with StopSignals() as stops, detector:  # as in cmd_detect
        for i, (name, image) in enumerate(frames_of(args.inputs, args.max_image_pixels)):
            if stops.cancel.is_set():
                break
            done += 1
            if isinstance(image, ImageError):
                _err(str(image))
                failed += 1
                continue
            try:
                det = detector.detect([image])[0]
            except YoloTrtError as exc:
                _err(f'{name}: {exc}')
                failed += 1
                continue
            grey = tracker.grey(image.pixels, image.order) if tracker.needs_frame else None
            tracked = tracker.update(det, grey)
            entry = {'frame': i, 'image': shown(name), 'width': image.width,
                     'height': image.height,
                     'detections': detections_to_dicts(tracked, detector.label)}
            results.append(entry)
            if not args.json:
                found = ', '.join(f"#{d['track_id']} {d['label']}" for d in entry['detections'])
                _emit(f'frame {i} {shown(name)}: {found or "no tracks"}')
            failed += not _write_annotated(writer, f'frame_{i:06d}', image, tracked, detector)
        return _finish(args, results, failed, stops, f'{done} frames')


# Keys of Ultralytics' bytetrack.yaml / botsort.yaml that we read; others (with_reid, ...)
# are ignored, since ReID is not implemented.
_TRACKER_KEYS = ('track_high_thresh', 'track_low_thresh', 'new_track_thresh', 'track_buffer',
                 'match_thresh', 'fuse_score', 'gmc_method')


TRACKER_CONFIG_LIMIT = 1 << 20  # a tracker YAML is a few hundred bytes


def _tracker_config(args):
    """--tracker, and a bytetrack.yaml / botsort.yaml (--tracker-config) as Ultralytics
    users have them; ValueError naming the file or the key."""
    from yolo_trt_ros.core.pipeline.tracking import TrackerConfig

    values: dict = {}
    kind = args.tracker
    if args.tracker_config:
        import yaml

        from yolo_trt_ros.core.files import FileError, read_regular

        try:
            doc = yaml.safe_load(read_regular(args.tracker_config, TRACKER_CONFIG_LIMIT)
                                 ) or {}
        except FileError as exc:
            raise ValueError(f'--tracker-config: {exc}') from None
        except yaml.YAMLError as exc:
            raise ValueError(f'--tracker-config {args.tracker_config}: not YAML: '
                             f'{one_line(exc)}') from None
        if not isinstance(doc, dict):
            raise ValueError(f'--tracker-config {args.tracker_config}: not a mapping of keys')
        values = {k: doc[k] for k in _TRACKER_KEYS if k in doc}
        kind = kind or doc.get('tracker_type')
    try:
        return TrackerConfig(kind=kind or 'bytetrack', **values)
    except (TypeError, ValueError) as exc:
        where = f'--tracker-config {args.tracker_config}: ' if args.tracker_config else ''
        raise ValueError(f'{where}{exc}') from None


def add_build_options(p: argparse.ArgumentParser, lookup: bool = False) -> None:
    """The options that make up an engine's cache key (and, to build, --force).
    lookup: for commands that only find the engine `yolo-trt build` made."""
    p.add_argument('--precision', default=defaults.PRECISION, choices=defaults.PRECISIONS,
                   help='engine precision' + (' (which cached engine to use)' if lookup else ''))
    p.add_argument('--calib-dir', metavar='DIR', help='images for int8 calibration')
    p.add_argument('--cache-dir', metavar='DIR', help='engine cache (default: '
                   '$YOLO_TRT_ROS_CACHE or ~/.cache/yolo_trt_ros/engines)')
    p.add_argument('--dynamic', metavar='MIN:OPT:MAX', help='dynamic input profile, each '
                   'NxHxW, e.g. 1x416x416:2x416x416:4x640x640 (default: static)')
    p.add_argument('--workspace-mb', type=int, help='builder workspace limit in MB')
    p.add_argument('--opt-level', type=int, help='builder optimisation level 0..5')
    p.add_argument('--no-simplify', action='store_true', help='parse the ONNX as it is')
    p.add_argument('--flavour', choices=defaults.FLAVOURS,
                   help='TensorRT package to build with (default: whichever is installed)')
    if not lookup:
        p.add_argument('--force', action='store_true', help='rebuild even on a cache hit')


def build_options(args):
    from yolo_trt_ros.core.build.options import BuildOptions, ShapeProfile

    return BuildOptions(
        precision=args.precision,
        calib_dir=Path(args.calib_dir) if args.calib_dir else None,
        dynamic=ShapeProfile.parse(args.dynamic) if args.dynamic else None,
        workspace_mb=args.workspace_mb, opt_level=args.opt_level,
        simplify=not args.no_simplify, flavour=args.flavour)


def cmd_build(args) -> int:
    """Ctrl-C or SIGTERM stop the build at TensorRT's next progress step, with one line and
    128 + the signal's number; nothing is written."""
    from yolo_trt_ros.core.build.builder import build_engine
    from yolo_trt_ros.core.errors import Cancelled

    try:
        with StopSignals() as stops:
            result = build_engine(_model_arg(args.model), build_options(args),
                                  Path(args.cache_dir) if args.cache_dir else None, args.force,
                                  stops.cancel)
    except Cancelled as exc:
        _err(f'build stopped by {stops.name}: {exc}; nothing was written')
        return stops.exit_code(128 + signal.SIGINT)
    except (YoloTrtError, ValueError) as exc:
        _err(str(exc))
        return 1
    what = 'cache hit' if result.cache_hit else 'built'
    print(f'{what} in {result.seconds:.1f} s')
    print(result.engine_path)
    return 0


def cmd_fetch_assets(args) -> int:
    from yolo_trt_ros.core.models import assets

    try:
        model = assets.ensure_default_model()
        images = assets.ensure_sample_images()
    except YoloTrtError as exc:
        _err(str(exc))
        return 1
    print(f'default model: {model}')
    for image in images:
        print(f'sample image: {image}')
    return 0


def cmd_demo(args) -> int:
    """The main job: sample photos -> image_source -> engine_builder -> detector."""
    try:
        if not args.save:
            raise YoloTrtError('--save: give the folder for the annotated images')
        save = _save_dir(args.save)
    except YoloTrtError as exc:
        _err(str(exc))
        return 2
    from yolo_trt_ros.demo import run_demo

    return run_demo(save, args.backend, args.frames)


def cmd_bench(args) -> int:
    from yolo_trt_ros.benchmarks.stages import check_output
    from yolo_trt_ros.benchmarks.stages import main as bench_main

    try:  # judged before the benchmark, which takes minutes
        if args.json:
            check_output(Path(args.json))
        if args.model:
            from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend

            OnnxRuntimeBackend(Path(args.model)).close()
    except YoloTrtError as exc:
        _err(str(exc))
        return 2
    return bench_main(args.frames, args.warmup, args.json, args.model)


def cmd_launch(args) -> int:
    from yolo_trt_ros.launcher import run

    return run(args.assignments)


def cmd_param(args) -> int:
    from yolo_trt_ros.ros.param_client import run

    return run(args.action, args.node, getattr(args, 'name', None),
               getattr(args, 'value', None), args.timeout)


def _launch_arguments_help() -> str:
    from yolo_trt_ros.launch_args import LAUNCH_ARGUMENTS

    width = max(map(len, LAUNCH_ARGUMENTS)) + 2
    lines = [f"  {name:<{width}}{description} (default: {default or 'empty'})"
             for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return 'launch arguments (NAME:=VALUE):\n' + '\n'.join(lines)


def cmd_bag(args) -> int:
    """The detector's batch step over a recorded bag; see yolo_trt_ros/bags/."""
    from yolo_trt_ros.bags.command import run_bag
    from yolo_trt_ros.core.pipeline.tracking import detection_floor

    tracker = None
    if args.tracker or args.tracker_config:
        try:
            tracker = _tracker_config(args)
        except ValueError as exc:
            _err(str(exc))
            return 2
        args.conf = detection_floor(args.conf, tracker)  # as the node does with a tracker
    return run_bag(Path(args.bag), Path(args.out) if args.out else None, args.topics or (),
                   lambda: _open_detector(args), args.max_image_pixels, _err, tracker,
                   args.depth_topics or (), args.camera_info_topics or ())


def _add_threshold_options(p: argparse.ArgumentParser) -> None:
    """--conf, --iou, --max-det and --max-image-pixels, as `yolo-trt detect` has them."""
    p.add_argument('--conf', type=float, default=defaults.CONF_THRESHOLD,
                   help='confidence threshold')
    p.add_argument('--iou', type=float, default=defaults.IOU_THRESHOLD, help='NMS IoU threshold')
    p.add_argument('--max-det', type=int, default=defaults.MAX_DETECTIONS,
                   help='most detections per image')
    _add_image_limit(p)


def _add_bag_parser(sub) -> None:
    p = sub.add_parser('bag', help='run the detector over a recorded ROS 2 bag (mcap or '
                                   'sqlite3) and write a new bag with the detections')
    p.add_argument('bag', metavar='IN', help='rosbag2 directory, or an .mcap or .db3 file')
    p.add_argument('--out', metavar='OUT', help='the new bag (default: IN_detections beside '
                                                'IN); never overwritten')
    p.add_argument('--topics', nargs='+', metavar='TOPIC', help='image topics to run on '
                   '(default: every sensor_msgs/Image and CompressedImage topic)')
    p.add_argument('--tracker', choices=defaults.TRACKERS[1:],
                   help="track ids per camera, as the node's tracker (default: no tracking)")
    p.add_argument('--tracker-config', metavar='YAML', help='an Ultralytics bytetrack.yaml / '
                   'botsort.yaml (as for `yolo-trt track`); implies tracking')
    p.add_argument('--depth-topics', nargs='+', metavar='TOPIC', help='aligned depth image '
                   "topic per camera, in --topics order ('' for a camera without): "
                   '<camera>/detections_3d')
    p.add_argument('--camera-info-topics', nargs='+', metavar='TOPIC', help='their '
                   'camera_info topics (default: each depth topic\'s sibling camera_info)')
    _add_model_options(p)
    _add_threshold_options(p)
    add_build_options(p.add_argument_group('cached engine (as built by `yolo-trt build`)'),
                      lookup=True)
    p.set_defaults(func=cmd_bag)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model', help='ONNX model (default: the fetched YOLOv3-tiny COCO model)')
    p.add_argument('--backend', default=defaults.BACKEND, choices=defaults.BACKENDS)
    p.add_argument('--engine', help='TensorRT engine file (backend tensorrt or auto)')
    p.add_argument('--labels', help='labels file (one name a line, or YAML); default: the '
                                    "model's metadata")


def _add_image_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument('--max-image-pixels', type=_positive_int, default=defaults.MAX_IMAGE_PIXELS,
                   metavar='N', help='refuse images of more pixels (width x height) than this, '
                   f'read from the header before decoding (default {defaults.MAX_IMAGE_PIXELS})')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='yolo-trt', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('detect', help='detect objects in image files')
    p.add_argument('images', nargs='+', metavar='IMAGE')
    _add_model_options(p)
    p.add_argument('--conf', type=float, default=defaults.CONF_THRESHOLD,
                   help='confidence threshold')
    p.add_argument('--iou', type=float, default=defaults.IOU_THRESHOLD, help='NMS IoU threshold')
    p.add_argument('--max-det', type=int, default=defaults.MAX_DETECTIONS,
                   help='most detections per image')
    p.add_argument('--json', action='store_true', help='print one JSON document')
    p.add_argument('--save', metavar='DIR', help='write annotated images to DIR')
    p.add_argument('--max-image-pixels', type=_positive_int, default=defaults.MAX_IMAGE_PIXELS,
                   metavar='N', help='refuse images of more pixels (width x height) than this, '
                   f'read from the header before decoding (default {defaults.MAX_IMAGE_PIXELS})')
    p.add_argument('--depth', action='append', metavar='DEPTH',
                   help='aligned depth image of each IMAGE, in order (16-bit PNG in mm, 32-bit '
                        'float TIFF in m): adds position_m and size_m to each detection')
    p.add_argument('--camera-info', metavar='CAMERA.yaml', help='the camera matrix for '
                   '--depth (camera_calibration / camera_info_manager YAML)')
    add_build_options(p.add_argument_group('cached engine (as built by `yolo-trt build`)'),
                      lookup=True)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser('track', help='track objects through a video, a folder of images '
                                     '(sorted by name) or listed images')
    p.add_argument('inputs', nargs='+', metavar='INPUT')
    p.add_argument('--tracker', choices=defaults.TRACKERS[1:],
                   help='bytetrack (default) or botsort (with camera-motion compensation)')
    p.add_argument('--tracker-config', metavar='YAML', help="an Ultralytics bytetrack.yaml / "
                   'botsort.yaml: track_high_thresh, track_low_thresh, new_track_thresh, '
                   'track_buffer, match_thresh, fuse_score, gmc_method')
    _add_model_options(p)
    p.add_argument('--conf', type=float, default=defaults.CONF_THRESHOLD,
                   help='confidence threshold (the detector keeps down to track_low_thresh '
                        'for the tracker)')
    p.add_argument('--iou', type=float, default=defaults.IOU_THRESHOLD, help='NMS IoU threshold')
    p.add_argument('--max-det', type=int, default=defaults.MAX_DETECTIONS,
                   help='most detections per frame')
    p.add_argument('--json', action='store_true', help='print one JSON document: a list with '
                                                       'one object per frame')
    p.add_argument('--save', metavar='DIR', help='write annotated frames, with the track ids, '
                                                 'to DIR')
    _add_image_limit(p)
    add_build_options(p.add_argument_group('cached engine (as built by `yolo-trt build`)'),
                      lookup=True)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser('build', help='build (or find in the cache) the TensorRT engine of a '
                                     'model; prints the engine path last')
    p.add_argument('--model', help='ONNX model (default: the fetched YOLOv3-tiny COCO model)')
    add_build_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser('fetch-assets', help='download and convert the default model and '
                                            'the sample images (once; hashes pinned)')
    p.set_defaults(func=cmd_fetch_assets)

    p = sub.add_parser('bench', help='time every stage at 640x480, 1280x720 and 1920x1080, '
                                     'ours beside the straightforward way')
    p.add_argument('--frames', type=_positive_int, default=300, help='timed frames per stage')
    p.add_argument('--warmup', type=_count, default=30, help='untimed frames first')
    p.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    p.add_argument('--model', help='ONNX model for the inference stage (default model)')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('launch', help='start engine_builder, then detector (the nodes of '
                                      'detect.launch.py) without ros2 launch',
                       epilog=_launch_arguments_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('assignments', nargs='*', metavar='NAME:=VALUE',
                   help='launch arguments, as for detect.launch.py')
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser('param', help="a running node's parameters (ros2 param for the pip "
                                     'route): list, get or set')
    actions = p.add_subparsers(dest='action', required=True)
    for action, what in (('list', 'the names'), ('get', 'one value'),
                         ('set', 'one value (YAML, as for ros2 param set: 0.5, [0, 2])')):
        a = actions.add_parser(action, help=what)
        a.add_argument('node', help='node name, e.g. /detector or /front/detector')
        if action != 'list':
            a.add_argument('name', help='parameter name')
        if action == 'set':
            a.add_argument('value', help='the new value')
        a.add_argument('--timeout', type=_positive_seconds, default=10.0, metavar='S',
                       help='seconds to wait for the node (default 10)')
        a.set_defaults(func=cmd_param)

    p = sub.add_parser('demo', help='the main job: publish the sample photos, build, detect, '
                                    'print each result and save the annotated images')
    p.add_argument('--backend', default=defaults.BACKEND, choices=defaults.BACKENDS)
    p.add_argument('--frames', type=int, default=4, help='frames to publish (default 4)')
    p.add_argument('--save', default='yolo_trt_demo', metavar='DIR')
    p.set_defaults(func=cmd_demo)

    _add_bag_parser(sub)
    return parser


def _guard_streams() -> None:
    """Started with stderr closed (a daemon, `2>&-`), Python has no sys.stderr, and print()
    to it would write to stdout, into the JSON: send those lines nowhere instead."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # for the life of the process


def main(argv: list[str] | None = None) -> int:
    _guard_streams()
    args = build_parser().parse_args(argv)
    _print_core_log()
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (a model loading)
        _err('stopped by Ctrl-C')
        return 128 + signal.SIGINT
    except _ResultsLost as exc:
        _err(f'cannot write the results: {exc}')
        if sys.stdout is not None:  # nor again when Python flushes it at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BrokenPipeError:
        # The reader went away (`yolo-trt detect --json | head`): stop quietly, as other
        # command-line tools do, without a traceback when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == '__main__':
    sys.exit(main())
