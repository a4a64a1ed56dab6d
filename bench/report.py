"""The tables of docs/PERFORMANCE.md and the README's speed table, made from the raw results
in bench/results/*.json (never typed by hand).

Each table sits between `<!-- table: NAME -->` and `<!-- end table -->` in a Markdown file;
this script rewrites what is between them.

    python bench/report.py            rewrite the tables in README.md and docs/PERFORMANCE.md
    python bench/report.py --check    exit 1 if a table differs from what the results say (CI)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results'
DOCUMENTS = (ROOT / 'README.md', ROOT / 'docs' / 'PERFORMANCE.md')
BLOCK = re.compile(r'(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)',
                   re.DOTALL)


@cache
def load(name: str) -> dict:
    return json.loads((RESULTS / f'{name}.json').read_text())


# Ultralytics rows of runs before issue 21 timed its NMS without torchvision loaded: the
# pure-torch fallback its predictor never runs (it imports torchvision). Their names say so.
FALLBACK = 'pure-torch fallback: without torchvision, not what its users run'
LEGACY_ULTRALYTICS = {
    'Ultralytics NMS + scale_boxes (cuda)': f'Ultralytics NMS + scale_boxes (cuda), {FALLBACK}',
    'Ultralytics pre+post (cuda)': 'Ultralytics pre+post (cuda), with the pure-torch fallback '
                                   'NMS (not what its users run)'}


def stage_rows(name: str) -> list[dict]:
    """A stages run's measured rows (rows that say `not measured` left out), the Ultralytics
    rows of a run before issue 21 named for what they timed."""
    rows = load(name)['results']
    legacy = not any('torchvision NMS' in r['stage'] for r in rows)
    return [{**r, 'stage': LEGACY_ULTRALYTICS.get(r['stage'], r['stage']) if legacy
             else r['stage']}
            for r in rows if not r.get('note', '').startswith('not measured')]


def machine(name: str) -> str:
    """'NVIDIA H200, 16-core Intel Xeon' or 'no GPU, 2-core AMD EPYC', and the date."""
    m = load(name)['machine']
    cpu = re.sub(r'\(R\)|\(TM\)| Processor| CPU.*', '', m['cpu']).strip()
    return f"{m['gpu'] or 'no GPU'}, {m['cores']}-core {cpu} ({m['date'][:10]})"


def stage(name: str, prefix: str, size: str = '1920x1080') -> dict:
    """The one result of `name` whose stage starts with prefix, at size."""
    rows = [r for r in (stage_rows(name) if name.startswith('stages') else load(name)['results'])
            if r['stage'].startswith(prefix) and r.get('size', r.get('input')) == size]
    if len(rows) != 1:
        raise KeyError(f'{name}: {len(rows)} results for {prefix!r} at {size}')
    return rows[0]


GPU_PATH = 'GPU path, all but inference ('


def run_stage(name: str, prefix: str, size: str = '1920x1080', run: int = 0) -> dict:
    """The one result of a run of a multi-run file (gpu_path_*) whose stage starts with
    prefix, at size."""
    rows = [r for r in load(name)['runs'][run]['results']
            if r['stage'].startswith(prefix) and r['size'] == size]
    if len(rows) != 1:
        raise KeyError(f'{name}: {len(rows)} results for {prefix!r} at {size}')
    return rows[0]


def ms(value: float | None) -> str:
    if value is None:
        return '–'  # not measured (no frame answered)
    return f'{value:.3f}' if abs(value) < 0.1 else f'{value:.2f}'


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


# -- the tables ----------------------------------------------------------------------------
def speed() -> str:
    """README: the headline rows, each beside what it was compared with in the same run."""
    gpu, dev = 'stages_h200_host', 'stages_dev'
    rows = []
    try:  # runs since issue 21 item 6: with a CUDA graph per frame, and without beside it
        path = stage(gpu, 'GPU path, all but inference (CUDA graph)')
        plain = stage(gpu, 'GPU path, all but inference (stream-ordered')
    except KeyError:
        path, plain = stage(gpu, 'GPU path, all but inference'), None
    try:
        ultra = stage(gpu, 'Ultralytics predictor pre+post')
        beside = (f"Ultralytics' predictor, pre+post by its own timings (results[0].speed): "
                  f"{ms(ultra['median_ms'])} ms (ours takes "
                  f"{path['median_ms'] / ultra['median_ms']:.2f}x its time)")
    except KeyError:  # a run before issue 21: its Ultralytics rows timed the wrong NMS
        beside = ('Ultralytics as its users run it: not measured yet (issue 21; the '
                  'figure shown before timed its NMS without torchvision)')
    graph = ', its GPU work one CUDA graph per frame' if plain is not None else ''
    rows.append([f'everything but inference, GPU path (upload, preprocessing kernel, GPU decode, '
                 f'NMS, message{graph}); {machine(gpu)}',
                 f"**{ms(path['median_ms'])} ms** p50 ({ms(path['p99_ms'])} p99)", beside])
    pinned, pageable = (run_stage('gpu_path_h100_host', f'{GPU_PATH}CUDA graph{tail}')
                        for tail in (', frame in pinned memory', ')'))
    rows.append([f'the same, the frame in pinned memory where the node now takes it (rcl into '
                 f'its buffers); {machine("gpu_path_h100_host")}',
                 f"**{ms(pinned['median_ms'])} ms** p50 ({ms(pinned['p99_ms'])} p99)",
                 f"from pageable memory: {ms(pageable['median_ms'])} ms "
                 f"({pageable['median_ms'] / pinned['median_ms']:.1f}x as long)"])
    if plain is not None:
        rows.append([f'the same, stream-ordered (no CUDA graph); {machine(gpu)}',
                     f"{ms(plain['median_ms'])} ms p50",
                     f"with the graph: {ms(path['median_ms'])} ms "
                     f"({plain['median_ms'] / path['median_ms']:.2f}x as fast)"])
    jpeg = stage(gpu, 'JPEG decode (gpu) + preprocessing kernel')
    cv2_decode = stage('gpu_stages_h200', 'JPEG decode CPU', '1920x1080 q90 501 KB')
    rows.append([f'CompressedImage (JPEG q90): GPU decode + preprocessing; {machine(gpu)}',
                 f"**{ms(jpeg['median_ms'])} ms**",
                 f"cv2.imdecode alone: {ms(cv2_decode['median_ms'])} ms "
                 f"({machine('gpu_stages_h200')})"])
    for ours, theirs, what in (('preprocess CPU: ours', 'preprocess CPU: straightforward',
                                'CPU preprocess'),
                               ('decode+NMS: ours', 'decode+NMS: straightforward',
                                'decode + NMS of a (1, 84, 8400) output'),
                               ('message as CDR bytes', 'message build (rclpy',
                                'the message (Detection2DArray as CDR bytes)')):
        a, b = stage(dev, ours), stage(dev, theirs)
        rows.append([f'{what}; {machine(dev)}', f"{ms(a['median_ms'])} ms",
                     f"{b['stage']}: {ms(b['median_ms'])} ms "
                     f"({b['median_ms'] / a['median_ms']:.1f}x)"])
    auto, one = (load(f'capacity8_raw_w{w}_h200_host')['result'] for w in ('auto', '1'))
    rows.append([f"8 cameras x 1080p x 30 fps bgr8 into one launch; "
                 f"{machine('capacity8_raw_wauto_h200_host')}",
                 f"`workers:=auto`: {auto['processed_fps']} of {auto['cameras'] * auto['fps']:.0f}"
                 f" fps, p99 {auto['latency_p99_ms_worst']} ms",
                 f"`workers:=1`: {one['processed_fps']} fps"])
    return table(['1920x1080 in, 640x640 model input', 'ours', 'beside it, same run'], rows)


def stages() -> str:
    """Every stage of `yolo-trt bench` on each machine, side by side."""
    names = ('stages_dev', 'stages_h200_host')
    keys = []
    for name in names:
        for r in stage_rows(name):
            key = (r['stage'], r['size'])
            if key not in keys:
                keys.append(key)
    rows = []
    for key in keys:
        row = [key[0], key[1]]
        for name in names:
            found = [r for r in stage_rows(name) if (r['stage'], r['size']) == key]
            row += [ms(found[0]['median_ms']), ms(found[0]['p99_ms'])] if found else ['–', '–']
        rows.append(row)
    header = ['stage', 'input'] + [f'{label} {q}' for label in ('dev', 'H200 host')
                                   for q in ('p50', 'p99')]
    return (f'dev: {machine(names[0])}; H200 host: {machine(names[1])}.\n\n'
            + table(header, rows))


# The marks of round-trip runs from before the method's fixes, and their footnotes.
FREED, PACED, CONVERTED, LOCAL = ' †', ' ‡', ' §', ' ¶'
ROUNDTRIP_MARKS = {
    FREED: 'The echo of that run freed each raw frame in its callback and paid for fresh '
          'memory pages on the next: its floor is too high, and the node\'s figure over it '
          'is left out.',
    PACED: 'The in-process run of that run went back to back on one frame, faster than the '
          'same work at the round trip\'s pace: "ROS adds" and "over the echo" are too high '
          'by the difference.',
    CONVERTED: 'That run timed each answer after the benchmark had deserialized it in Python: '
               'the node\'s 20 detections take 1.0-2.4 ms to convert, the echo\'s empty answer '
               '0.1-0.2 ms (the last column of later runs), so its RTT, "ROS adds" and "over '
               'the echo" are too high by about the difference.',
    LOCAL: 'That run had ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (bench/device_env.sh set it '
           'until 2026-12-06): rmw_fastrtps set the transports itself, over the profile\'s '
           '(stock rows: over Fast DDS\'s defaults).'}
# bench/device_env.sh set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST on the GPU hosts until
# 4ba5183; round-trip files record the discovery range since the day after.
LOCALHOST_UNTIL = '2026-12-06 06:41'


def method_marks(run: dict) -> tuple[str, str, str]:
    """The marks a round-trip results file earns: (paced, converted, local)."""
    paced = '' if run.get('in_process_paced') else PACED
    converted = '' if run.get('answers_timed_raw') else CONVERTED
    local = LOCAL if run.get('discovery_range') == 'LOCALHOST' or (
        'discovery_range' not in run and run['machine']['gpu']
        and run['machine']['date'] < LOCALHOST_UNTIL) else ''
    return paced, converted, local


def mark_notes(marks: set[str]) -> str:
    """The footnotes of the marks a table used, in ROUNDTRIP_MARKS' order."""
    return ''.join(f'\n{mark.strip()} {text}\n' for mark, text in ROUNDTRIP_MARKS.items()
                   if mark in marks)


ROUNDTRIP_RUNS = (('roundtrip_dev', 'dev'), ('roundtrip_dev_answers_raw', 'dev'),
                  ('roundtrip_h200_host', 'H200 host'),
                  ('roundtrip_jpeg_h100_host', 'H100 host'), ('roundtrip_h100_host', 'H100 host'),
                  ('roundtrip_jpeg_h100_host_second_run', 'H100 host'),
                  ('roundtrip_jpeg_h100_host_third_run', 'H100 host'),
                  ('roundtrip_jpeg_h100_host_second_machine', 'another H100 host'),
                  ('roundtrip_raw_h100_host_second_machine', 'another H100 host'))


def roundtrip() -> str:
    """Each machine's round trips beside the bare echo of the same bytes in the same run
    (runs before issue 21 had no echo, and counted answers after the warm-up frames only).
    Runs before the method's fixes (bench/ros_roundtrip.py METHOD) are shown, marked."""
    rows, notes, heads = [], set(), {}
    for name, label in ROUNDTRIP_RUNS:
        run = load(name)
        heads.setdefault(label, []).append(machine(name))
        paced, converted, local = method_marks(run)
        for r in run['results']:
            freed = '' if run.get('echo_holds_frame') or 'JPEG' in r.get('input', '') \
                or 'floor_p50_ms' not in r else FREED
            notes |= {m for m in (freed, paced, converted, local) if m}
            floor = (f"{ms(r['floor_p50_ms'])} / {ms(r['floor_p99_ms'])} "
                     f"({r['floor_answered']}){freed}" if 'floor_p50_ms' in r else 'not run')
            convert = ms(r.get('answer_deserialize_p50_ms')) + (  # bag rows have no echo
                f" / {ms(r['floor_answer_deserialize_p50_ms'])}"
                if r.get('floor_answer_deserialize_p50_ms') is not None else '')
            rows.append([f"{label}, {run['machine']['date'][5:16]}",
                         r['transport'] + local, r.get('input', r.get('size')),
                         r.get('answered', r.get('delivered')),
                         f"{ms(r['roundtrip_p50_ms'])} / {ms(r['roundtrip_p99_ms'])}"
                         + converted, floor, ms(r['in_process_ms']) + paced,
                         ms(r.get('ros_adds_ms')) + paced + converted,
                         '–' + freed if freed else
                         ms(r.get('over_floor_ms')) + paced + converted, convert])
    head = '; '.join(f"{label}: {', '.join(dict.fromkeys(m))}" for label, m in heads.items())
    return (f'{head}.\n\n'
            + table(['machine, run (UTC)', 'transport', 'input', 'answered',
                     'RTT p50 / p99 ms', 'bare echo p50 / p99 ms (answered)', 'in-process ms',
                     'ROS adds ms', 'over the echo ms',
                     'answer deserialized in Python, node / echo p50 ms (not in the RTT)'],
                    rows) + mark_notes(notes))


def ab_rounds(name: str, what: str) -> str:
    """A round trip run with two versions of one step alternating: each input, round and
    version (bench/results/<name>.json); `what` heads the version column."""
    run = load(name)
    # Both versions ran with the same method, so their difference stands; the figures
    # themselves carry the marks of the method's faults (the in-process column is not
    # shown here, so the pace mark is not either).
    _, converted, local = method_marks(run)
    rows = []
    for r in run['runs']:
        for x in r['results']:
            rows.append([x['input'], str(r['round']), r['code'],
                         f"**{ms(x['breakdown_p50_ms']['node: wait for the worker'])}**",
                         f"**{ms(x['breakdown_p50_ms']['node: pipeline'])}**",
                         f"{ms(x['roundtrip_p50_ms'])} / {ms(x['roundtrip_p99_ms'])}"
                         + converted + local, ms(x['floor_p50_ms']) + local,
                         ms(x.get('over_floor_ms')) + converted, x['answered']])
    order = list(dict.fromkeys(x['input'] for r in run['runs'] for x in r['results']))
    rows.sort(key=lambda row: (order.index(row[0]), row[1]))
    return (f"{machine(name)}; `{run['command']}`; {run['method']}.\n\n"
            + table(['input', 'round', what, 'wait for the worker p50 ms',
                     'pipeline p50 ms', 'RTT p50 / p99 ms', 'bare echo p50 ms',
                     'over the echo ms', 'answered'], rows)
            + mark_notes({m for m in (converted, local) if m}))


def frame_reader() -> str:
    """The round trip with the executor taking the frames and with the frame reader's
    thread, alternating in one run (bench/results/frame_reader_ab_dev.json)."""
    return ab_rounds('frame_reader_ab_dev', 'frames taken by')


def frame_take() -> str:
    """The round trip with frames taken by rcl into the detector's buffers and by rclpy as
    bytes (YOLO_TRT_ROS_TAKE), alternating, on each machine."""
    return '\n'.join(ab_rounds(name, 'frames taken by') for name in
                     ('roundtrip_take_ab_h100_host', 'roundtrip_take_ab_dev'))


def capacity() -> str:
    rows = []
    for path in sorted(RESULTS.glob('capacity*.json')):
        r, name = load(path.stem)['result'], path.stem
        rows.append([machine(name), f"{r['cameras']} x {r['size']} x {r['fps']:.0f}",
                     'CompressedImage' if r.get('compressed') else 'Image', phase_cell(r),
                     dds_cell(r, bool(load(name)['machine']['gpu'])),
                     str(r.get('workers', '1'))
                     + (f" (devices {r['devices']})" if 'devices' in r else ''),
                     f"**{r['processed_fps']}** of {r['cameras'] * r['fps']:.0f} fps",
                     str(r['dropped_in_node']),
                     f"{r['lost_before_node']}" + (f" ({r['unmatched']})" if 'unmatched' in r
                                                   else ''),
                     str(r.get('latency_p99_ms_worst', '–')), start_cell(r)])
    return table(['machine', 'cameras x size x fps', 'input', "cameras' phase", 'DDS',
                  'workers',
                  'processed',
                  'dropped in node', 'lost before it (sent before it matched)',
                  'worst p99 ms', 'the start'], rows)


def phase_cell(r: dict) -> str:
    """When the cameras sent in the window (bench/capacity.py PHASES): runs of the window
    before --phase existed sent at once; runs before the window, as their start left them."""
    if 'bag' in r:
        return 'as recorded'
    return r.get('phase', 'synced' if 'before_window' in r else 'as started')


def dds_cell(r: dict, gpu_host: bool) -> str:
    """The Fast DDS profile, its shared-memory port queue, the host's rmem_max where UDP
    carries the frames, and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST where it was set (rmw
    then sets the transports over the profile's). Runs before the bench said these had the
    shipped profile with Fast DDS's queue of 512, and on the GPU hosts LOCALHOST
    (bench/device_env.sh set it until 2026-12-06)."""
    dds = r.get('dds') or {'profile': 'large_frames', 'shm_port_queue': 512,
                           'discovery_range': 'LOCALHOST' if gpu_host else None}
    queue = dds.get('shm_port_queue')
    cell = dds['profile'] + (f', SHM queue {queue}' if queue else ', UDP only')
    if not queue and dds.get('rmem_max'):
        cell += f", rmem_max {dds['rmem_max'] / 2**20:g} MB"
    if dds.get('discovery_range') == 'LOCALHOST':
        cell += ", LOCALHOST (rmw's transports)"
    return cell


def start_cell(r: dict) -> str:
    """What a capacity run's start sent and lost: outside the window since the bench waits
    for every camera to reach the node (bench/capacity.py); inside the figures before."""
    start = r.get('before_window')
    if start is None:
        return 'in the figures'
    return (f"outside: {start['published']} sent, "
            f"{start['published'] - start['frames_in']} lost ({start['unmatched']})")


def gpu_path() -> str:
    """Issue 21 item 6: the GPU path's variants side by side, per machine and run
    (bench/results/gpu_path_*.json); the frame in pinned memory only in runs since the
    node takes frames there (ros/rcl_take.py)."""
    path, pinned = 'GPU path, all but inference (', 'preprocess GPU: copy to pinned ('
    variants = (('stream-ordered', f'{path}stream-ordered'),
                ('graph, NMS on the host', f'{path}CUDA graph, NMS on the host'),
                ('graph, NMS on the GPU', f'{path}CUDA graph)'),
                ("graph, NMS on the GPU, frame in pinned memory (the node's default)",
                 f'{path}CUDA graph, frame in pinned memory'),
                ('upload from pageable + kernel', 'preprocess GPU: upload from pageable'),
                ('upload from the frame in pinned memory + kernel',
                 'preprocess GPU: upload from the frame in pinned memory'),
                ('pinned, 2 threads + upload + kernel', f'{pinned}2 threads'),
                ('pinned, 4 threads + upload + kernel', f'{pinned}4 threads'))
    rows, heads = [], []
    # (file, its runs' label after the card and date: two files of one day on other machines)
    for name, tag in (('gpu_path_h100_host', ''), ('gpu_path_h100_host_dec06', ''),
                      ('gpu_path_h100_host_dec06_b', ' noon'), ('gpu_path_h200_host', '')):
        run = load(name)
        heads.append(f"{machine(name)}: `{run['command']}`; {run['commit']}.")
        gpu = (run['machine']['gpu'].replace('NVIDIA ', '').split()[0]
               + f" {run['machine']['date'][5:10]}{tag}")
        for size in ('640x480', '1280x720', '1920x1080'):
            for r in run['runs']:
                cells = []
                for label, prefix in variants:
                    x = next((x for x in r['results']
                              if x['stage'].startswith(prefix) and x['size'] == size), None)
                    bold = '**' if 'default' in label and x is not None else ''
                    cells.append('–' if x is None else
                                 f"{bold}{ms(x['median_ms'])}{bold} / {ms(x['p99_ms'])}")
                rows.append([size, f"{gpu} {r['run']}"] + cells)
    return (' '.join(heads) + ' p50 / p99 ms; – : not in that run.\n\n'
            + table(['input', 'machine, run'] + [label for label, _ in variants], rows))


def gpu_stages() -> str:
    rows = [[r['stage'], r['size'], ms(r['median_ms']), ms(r['p99_ms']), r['note']]
            for r in load('gpu_stages_h200')['results']]
    return (f"{machine('gpu_stages_h200')}.\n\n"
            + table(['stage', 'input', 'p50 ms', 'p99 ms', 'note'], rows))


def message_build() -> str:
    results = load('message_build_dev')['results']
    sizes = list(dict.fromkeys(r['size'] for r in results))
    kinds = list(dict.fromkeys(r['stage'] for r in results))
    rows = [[kind.strip()] + [ms(next(r['median_ms'] for r in results
                                      if r['stage'] == kind and r['size'] == size))
                              for size in sizes] for kind in kinds]
    return (f"{machine('message_build_dev')}; p50 ms.\n\n"
            + table(['Detection2DArray'] + sizes, rows))


def bag() -> str:
    """`yolo-trt bag` over bags of 1080p frames (bench/bag_rate.py)."""
    doc = load('bag_dev')
    rows = [[r['input'], str(r['cameras']), str(r['frames']), r['storage'],
             f"**{r['frames_per_s']:.1f}**", f"{r['wall_s']:.1f}"] for r in doc['results']]
    backend = doc['results'][0]['backend'].split(' (')[0]
    return (f"{machine('bag_dev')}; {doc['model']} on {backend}.\n\n"
            + table(['frames in the bag', 'cameras', 'frames', 'storage', 'frames/s',
                     'command wall s (model load included)'], rows))
def tracks_depth() -> str:
    """README: tracking and 3D per camera-frame against the issue's budgets."""
    name = 'tracking_depth_dev'
    byte = stage(name, 'bytetrack tracker update', '50 tracks')
    bot = stage(name, 'botsort tracker update', '50 tracks')
    cmc = stage(name, 'botsort camera-motion compensation')
    three = stage(name, '3D: depth view + positions', '1280x720 16UC1, 20 detections')
    base = stage(name, '3D: depth in metres', '1280x720 16UC1, 20 detections')
    rows = [['ByteTrack, 50 live tracks', f"**{ms(byte['median_ms'])} ms** "
             f"(p99 {ms(byte['p99_ms'])})", '0.2 ms'],
            ['BoT-SORT, 50 live tracks: tracker + camera-motion compensation (1080p)',
             f"{ms(bot['median_ms'])} + {ms(cmc['median_ms'])} ms", '–'],
            ['3D from depth, 720p, 20 detections, with the Detection3DArray',
             f"**{ms(three['median_ms'])} ms** (p99 {ms(three['p99_ms'])})",
             f"1 ms (straightforward numpy: {ms(base['median_ms'])} ms)"]]
    return (f'{machine(name)}; per camera-frame, p50.\n\n'
            + table(['', 'ours', 'budget (issue 19)'], rows))


def tracking_depth() -> str:
    """PERFORMANCE: every row of bench/tracking_depth.py."""
    name = 'tracking_depth_dev'
    rows = [[r['stage'], r['size'], ms(r['median_ms']), ms(r['p99_ms']), r['note']]
            for r in load(name)['results']]
    return (f'{machine(name)}.\n\n'
            + table(['stage', 'input', 'p50 ms', 'p99 ms', 'note'], rows))


PROFILES = {  # bench/dds_receive.py's receiver profiles, in words
    'stock': 'stock Fast DDS (shared memory + UDP)',
    'udp_receive_buffer_rmem_max': 'shared memory + UDP, receive buffer = rmem_max',
    'udp_only_default_buffer': 'UDP only, default receive buffer',
    'udp_only_receive_buffer_212992': "UDP only, 212992 B buffer (Ubuntu's rmem_max)",
    'shm_64mb_segment': 'shared memory with a 64 MB segment + UDP',
    'stock_cameras': '**dds_profile:=stock_cameras** (UDP only, 32 MB asked)',
    'launch_profile_receiver_only': 'dds_profile:=large_frames (the default)',
    'launch_profile': 'large_frames on both sides (the camera changed)',
}


def dds_receive() -> str:
    """PERFORMANCE: frames of a stock best-effort camera that reach the receiver."""
    name = 'dds_receive_dev'
    run = load(name)
    got = {(r['profile'], r['receiver']): r['received'] for r in run['rows']}
    rows = [[words, *(f"{got[(profile, who)]}/{run['frames']}"
                      for who in ('subscriber', 'detector'))]
            for profile, words in PROFILES.items()]
    return (f"{machine(name)}; {run['frames']} frames {run['size']} at {run['rate_hz']} Hz "
            f"from a camera with stock settings (but the last row); net.core.rmem_max "
            f"{run['net.core.rmem_max']}.\n\n"
            + table(['receiver\'s Fast DDS profile', 'bare subscriber',
                     'detector (inference taken out)'], rows))


def tasks() -> str:
    """PERFORMANCE and README: a segment (obb, pose) frame beside a detect frame, the same
    run (bench/gpu_tasks.py); the GPU rows say so where they were not measured yet."""
    cpu = 'tasks_dev'
    rows = []
    gpu = 'gpu_tasks_h200'
    measured = (RESULTS / f'{gpu}.json').exists()
    for task in ('detect', 'segment', 'obb', 'pose'):
        c = stage(cpu, f'{task} CPU', '1920x1080, 20 objects')
        g = stage(gpu, f'{task} GPU', '1920x1080, 20 objects') if measured else None
        rows.append([task, f"{ms(c['median_ms'])} ms (p99 {ms(c['p99_ms'])})",
                     f"{ms(g['median_ms'])} ms (p99 {ms(g['p99_ms'])})" if g else
                     'not measured yet'])
    where = (f'GPU: {machine(gpu)}' if measured else
             'GPU: not measured yet (bench/gpu_tasks.py on the H200 host)')
    return (f'1920x1080, 20 objects, per frame after inference (decode, NMS, masks, messages), '
            f'p50. CPU twin: {machine(cpu)}; {where}. Target (issue 20): segment <= detect '
            f'+ 0.5 ms on the GPU.\n\n'
            + table(['head', 'CPU twin', 'GPU path'], rows))


def lifecycle_memory() -> str:
    """PERFORMANCE: the detector's GPU memory per lifecycle state (bench/lifecycle_memory.py)."""
    name = 'lifecycle_memory_h200'
    run = load(name)
    rows = [[s['state'], f"{s['held_mb']:.1f}"] for s in run['states']]
    return (f"{machine(name)}; {run['cameras']} cameras x {run['size']}, raw and JPEG "
            f"(decoded on the {run['jpeg_device'].upper()}); the process's CUDA context and "
            f"libraries, {run['context_and_runtime_mb']:.0f} MB, not counted. Inactive / "
            f"active: **{run['inactive_over_active']:.1%}** (target at most 10 %).\n\n"
            + table(['state', 'GPU memory held, MB'], rows))


def ort_threads() -> str:
    """PERFORMANCE: ONNX Runtime's thread spinning on and off (bench/ort_threads.py)."""
    name = 'ort_threads_dev'
    run = load(name)
    rows = [[r['pace'], 'spin-wait (ONNX Runtime\'s default)' if r['spinning'] else
             'sleep (ours)', f"{ms(r['run_p50_ms'])} / {ms(r['run_p99_ms'])}",
             f"**{ms(r['cpu_ms_per_frame'])}**"] for r in run['results']]
    return (f"{machine(name)}; model {run['model']}, ONNX Runtime on the CPU.\n\n"
            + table(['pace', 'threads between runs', 'run p50 / p99 ms',
                     'CPU ms per frame (whole process)'], rows))


def node_memory() -> str:
    """PERFORMANCE: a detector's page faults and CPU per frame, frame memory kept or not
    (bench/node_memory.py)."""
    name = 'node_memory_dev'
    run = load(name)
    rows = [[r['setting'], r['answered'], str(r['page_faults_per_frame']),
             f"**{ms(r['cpu_ms_per_frame'])}**"] for r in run['results']]
    return (f"{machine(name)}; {run['cameras']} cameras x {run['size']} bgr8 x "
            f"{run['fps']:g} fps, {run['frames']} frames each measured.\n\n"
            + table(['malloc', 'answered', 'page faults per frame',
                     'CPU ms per frame (detector process)'], rows))


TABLES: dict[str, Callable[[], str]] = {
    'speed': speed, 'stages': stages, 'roundtrip': roundtrip, 'capacity': capacity,
    'gpu-path': gpu_path,
    'gpu-stages': gpu_stages, 'message-build': message_build, 'tracks-depth': tracks_depth,
    'tracking-depth': tracking_depth, 'dds-receive': dds_receive, 'bag': bag,
    'lifecycle-memory': lifecycle_memory, 'tasks': tasks, 'ort-threads': ort_threads,
    'node-memory': node_memory, 'frame-reader': frame_reader, 'frame-take': frame_take}


def render(text: str) -> str:
    def one(match: re.Match) -> str:
        name = match['name']
        if name not in TABLES:
            raise KeyError(f'unknown table {name!r}: one of {", ".join(TABLES)}')
        return match.group(1) + TABLES[name]() + match.group(4)
    return BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='exit 1 when a document differs from the results')
    args = parser.parse_args(argv)
    stale = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        new = render(text)
        if new != text:
            stale.append(doc.relative_to(ROOT))
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"tables differ from bench/results in {', '.join(map(str, stale))}: run "
              f'`python bench/report.py`', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
