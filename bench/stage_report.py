"""The command line the stage benchmarks share: --frames and --json; a Report of the
machine, printed as a table and written as JSON, with the notes the stages log."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from yolo_trt_ros.benchmarks.stages import Report, format_table, machine_info

Log = Callable[[str], None]


def run_stages(description: str, stages: Callable[[Report, int, Log], None]) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--frames', type=int, default=300, help='timed frames per stage')
    parser.add_argument('--json', type=Path, help='write the results here')
    args = parser.parse_args()
    report = Report(machine_info())

    def log(message: str) -> None:
        print(message, file=sys.stderr)
        report.machine.setdefault('notes', []).append(message)

    stages(report, args.frames, log)
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps({'machine': report.machine,
                                         'results': [r.__dict__ for r in report.results]},
                                        indent=2))
    return 0
