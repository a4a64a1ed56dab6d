"""The `yolo-trt bag` command: check the bag and the output, open the detector, run, report.

Everything about the bag and the output path is checked before the model is opened, so a
mistake costs no model load. Exit status as `yolo-trt detect`: 2 for bad input (one line,
nothing written), 1 when frames were refused or messages the bag lists could not be read
(the bag is still written, without them), 130 when stopped by Ctrl-C and 143 by SIGTERM
(the bag holds what was done, closed whole: core/stopping.py), else 0.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from yolo_trt_ros.bags.progress import Progress
from yolo_trt_ros.bags.run import BagRun, Summary, check_output, default_output, frame_total
from yolo_trt_ros.bags.source import Camera, cameras, open_bag, unread, with_depth
from yolo_trt_ros.core.errors import YoloTrtError
from yolo_trt_ros.core.pipeline.tracking import TrackerConfig
from yolo_trt_ros.core.runtime.detector import Detector
from yolo_trt_ros.core.stopping import StopSignals


def run_bag(src: Path, out: Path | None, topics: Sequence[str],
            open_detector: Callable[[], Detector], max_pixels: int,
            err: Callable[[str], None], tracker: TrackerConfig | None = None,
            depth_topics: Sequence[str] = (), info_topics: Sequence[str] = ()) -> int:
    """tracker: the node's tracker per camera (None: no tracking); depth_topics: one aligned
    depth topic per camera ('' for none), info_topics their camera_info topics."""
    # Signals are taken over from the moment the bag is written until this returns: set
    # before, they would wait for the model to load (a TensorRT build: minutes).
    with ExitStack() as held:
        try:
            out = out or default_output(src)
            check_output(out)
            with open_bag(src) as reader:
                chosen = with_depth(reader, src, cameras(reader, src, topics), depth_topics,
                                    info_topics)
                with open_detector() as detector:
                    bag = BagRun(detector, chosen, max_pixels, detector.label, tracker)
                    progress = Progress(frame_total(chosen))
                    stops = held.enter_context(StopSignals())
                    try:
                        summary = bag.run(reader, src, out, progress, stops.cancel)
                    finally:
                        progress.close()
                    lost = {} if summary.stopped else unread(reader, summary.read)
        except (YoloTrtError, ValueError) as exc:
            err(str(exc))
            return 2
        except OSError as exc:  # the paths' own checks (a name too long, no permission)
            err(f'{exc.filename or src}: {exc.strerror or exc}')
            return 2
        report(out, chosen, summary)
        if summary.stopped:
            err(f'stopped by {stops.said}: {out} holds the first {summary.served} frames')
            return stops.exit_code(1)
        for topic, (missing, listed) in lost.items():
            err(f'{src}: {missing} of the {listed} messages the bag lists on {topic} were not '
                'read (serialized other than in CDR, of a topic the bag does not declare, '
                f'of another type than declared, or not bytes): {out} lacks them')
        return 1 if summary.refused or lost else 0


def report(out: Path, chosen: list[Camera], summary: Summary) -> None:
    rate = summary.served / summary.seconds if summary.seconds > 0 else 0.0
    refused = sum(summary.refused.values())
    causes = ', '.join(f'{cause} {n}' for cause, n in sorted(summary.refused.items()))
    print(f'{out}: {summary.served} frames from {len(chosen)} camera'
          f'{"s" if len(chosen) != 1 else ""} in {summary.seconds:.1f} s ({rate:.1f} frames/s), '
          f'{summary.detections} detections, {refused} refused{f" ({causes})" if causes else ""}'
          f', {summary.copied} input messages copied', flush=True)
    for cam in chosen:
        extra = f' and {cam.detections_3d} (depth {cam.depth})' if cam.depth else ''
        print(f'  {cam.topic} -> {cam.detections}{extra}: {summary.frames[cam.topic]} frames',
              flush=True)
    if any(cam.depth for cam in chosen):
        causes = ', '.join(f'{cause} {n}' for cause, n in sorted(summary.no_3d.items()))
        print(f'  3D: {summary.with_3d} frames with positions ({summary.placed} of their '
              f'{summary.in_3d} detections placed)'
              f'{f", without: {causes}" if causes else ""}', flush=True)
