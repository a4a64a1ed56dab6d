"""Diagnostics levels from one camera's last window (issue 11.7) and the DDS-loss warning
(issue 18.7): no ROS needed."""
from __future__ import annotations

from yolo_trt_ros.core.dds import profile_variable
from yolo_trt_ros.core.files import config_file
from yolo_trt_ros.core.serving.health import (
    ERROR,
    OK,
    RECEIVE_BUFFER,
    WARN,
    CameraStats,
    Window,
    dds_loss_fix,
    health,
)


def test_levels_and_reasons():
    assert health(Window(30, 30, 0, 0), 0) == (OK, 'ok')
    assert health(Window(0, 0, 0, 0), 0) == (OK, 'ok')  # an idle camera is no fault
    level, why = health(Window(100, 28, 72, 0), 0)  # 72 % dropped
    assert level == WARN and '72 of 100 frames dropped' in why
    assert health(Window(100, 50, 50, 0), 0)[0] == OK  # exactly half: not more than half
    level, why = health(Window(10, 10, 0, 3), 0)
    assert level == WARN and '3 frames lost in DDS' in why
    level, why = health(Window(5, 0, 4, 0), 0)
    assert level == ERROR and '5 frames in, none processed' in why
    assert health(Window(5, 5, 0, 0), 2) == (WARN, 'bad input seen')


def test_a_stalled_window_that_lost_frames_names_both():
    # Seen in CI under load: the window that lost frames in DDS also processed none, and
    # its ERROR message said nothing of the loss.
    level, why = health(Window(5, 0, 4, 2), 0)
    assert level == ERROR and why == '5 frames in, none processed; 2 frames lost in DDS'


def test_frames_missing_before_the_node_are_named_by_what_is_known_of_them():
    # A gap in a publisher's sequence numbers that DDS did not report is not always a
    # frame replaced in the queue: a deeper queue left as many on the dev machine
    # (bench/capacity.py --qos-depth), so the message does not claim one cause.
    level, why = health(Window(10, 10, 0, 0, replaced=2, unmatched=3), 0)
    assert level == WARN
    assert why == ("2 frames missing from a publisher's sequence, not reported lost by DDS "
                   '(replaced in the subscription queue, or dropped on the way); 3 frames '
                   'published before the subscription matched')


def test_the_dds_loss_warning_names_the_commands_that_apply(tmp_path):
    """Issue 18, edge 7: the fix on the detector's side first (dds_profile:=stock_cameras),
    the kernel limit only where it is too low, LOCALHOST only where it is set."""
    low, high = tmp_path / 'low', tmp_path / 'high'
    low.write_text('212992\n')
    high.write_text(f'{RECEIVE_BUFFER}\n')
    text = dds_loss_fix({}, str(low))
    assert text.startswith('restart the detector with dds_profile:=stock_cameras (ros2 launch '
                           'yolo_trt_ros detect.launch.py dds_profile:=stock_cameras')
    assert 'sudo sysctl -w net.core.rmem_max=33554432 (now 212992)' in text
    assert 'fastdds_large_frames.xml (shared memory)' in text and 'LOCALHOST' not in text
    using = {profile_variable(): '/x/fastdds_stock_cameras.xml',
             'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    text = dds_loss_fix(using, str(high))
    assert 'dds_profile' not in text and 'sysctl' not in text
    assert text.startswith('unset ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST')
    assert '\n' not in text
    assert text.endswith(f'Or start the camera with {profile_variable()}='
                         f'{config_file("fastdds_large_frames.xml")} (shared memory), or '
                         'subscribe to its compressed topic (compressed:=true)')


def test_frames_dds_reported_lost_before_a_publishers_first_frame_are_counted_once():
    """Seen with a reliable camera of history depth 1 sending 1080p frames back to back:
    of 20, frame 20 arrived and DDS reported 19 lost, and the same 19 were counted again as
    published before the subscription matched (39 frames accounted for 20 sent)."""
    stats = CameraStats()
    stats.sequences.seen(b'camera', 20)
    stats.lost = 19
    now, _ = stats.tick(received=1, dropped=0)
    assert (now.frames_in, now.lost, now.replaced, now.unmatched) == (1, 19, 0, 0)


def test_dds_losses_are_taken_from_the_gaps_first_then_from_before_the_first_frame():
    stats = CameraStats()
    stats.sequences.seen(b'new', 6)  # 5 missing before its first frame
    stats.sequences.seen(b'new', 10)  # 3 missing between frames
    stats.lost = 2
    now, _ = stats.tick(received=2, dropped=0)
    assert (now.lost, now.replaced, now.unmatched) == (2, 1, 5)
    stats.lost = 6  # more than the gaps: the rest were among the first 5
    now, _ = stats.tick(received=2, dropped=0)
    assert (now.lost, now.replaced, now.unmatched) == (6, 0, 2)


def test_the_warning_for_a_reliable_camera_names_its_history_not_the_receive_buffer(tmp_path):
    """A reliable reader loses a frame only where the camera's writer dropped it from its
    history (KEEP_LAST) before the reader acknowledged it: the receive-side fixes for best
    effort do not apply."""
    low = tmp_path / 'low'
    low.write_text('212992\n')
    text = dds_loss_fix({}, str(low), reliable=True)
    assert text.startswith("give the camera's publisher a deeper history")
    assert 'dds_profile' not in text and 'sysctl' not in text
    assert 'fastdds_large_frames.xml (shared memory)' in text


def test_a_loss_dds_reports_late_is_not_a_negative_count_in_the_window():
    """DDS may report a frame lost in a later window than the gap that showed it missing:
    the node then moves it from 'missing' (or 'before the match') to 'lost in DDS', and the
    window's difference of those causes went below 0 ('-1 frames missing from a publisher's
    sequence; -3 frames published before the subscription matched' in the diagnostics)."""
    stats = CameraStats()
    stats.sequences.seen(b'new', 6)
    stats.sequences.seen(b'new', 10)
    stats.lost = 2
    stats.tick(received=2, dropped=0)
    stats.lost = 6  # reported now; the frames were counted missing in the last window
    now, (level, message) = stats.tick(received=2, dropped=0)
    assert (now.lost, now.replaced, now.unmatched) == (6, 0, 2)  # since start: unchanged
    assert (level, message) == (WARN, '4 frames lost in DDS'), message


def test_frames_in_and_dropped_go_on_over_a_deactivation():
    """Each activation has an intake of its own, counting from 0; processed is the
    camera's. A reactivated node reported 1 frame in and 2 processed."""
    stats = CameraStats()
    stats.add_latency(0.01)
    stats.tick(received=3, dropped=2)
    stats.intake_closed(received=3, dropped=2)
    stats.add_latency(0.01)
    now, (level, message) = stats.tick(received=1, dropped=0)
    assert (now.frames_in, now.processed, now.dropped) == (4, 2, 2)
    assert (level, message) == (OK, 'ok')


def test_bad_input_warns_in_its_window_only():
    """One corrupt frame (a webcam's first MJPEG frame) kept the camera at WARN 'bad input
    seen' in every report for the life of the process: the count from start was passed as
    the window's. The window that saw it warns; the next ones, with good frames, are OK."""
    stats = CameraStats()
    stats.add_bad('corrupt')
    stats.add_latency(0.01)
    assert stats.tick(received=2, dropped=0)[1] == (WARN, 'bad input seen')
    for received in (3, 4):
        stats.add_latency(0.01)
        assert stats.tick(received=received, dropped=0)[1] == (OK, 'ok')
    stats.add_bad('too_large')
    stats.add_latency(0.01)
    assert stats.tick(received=6, dropped=0)[1] == (WARN, 'bad input seen')


def test_a_report_gives_the_bad_frames_its_health_was_judged_on():
    """The worker counts bad frames while the diagnostics timer reports: the health was
    judged on one count and the report's bad_input read again a moment later, so a report
    could say 'ok' with bad_input grown, and the next 'bad input seen' with none new."""
    from yolo_trt_ros.ros.conversions import camera_status

    stats = CameraStats()
    stats.add_latency(0.01)
    totals, judged = stats.tick(received=1, dropped=0)
    stats.add_bad('corrupt')  # the worker, between the judgement and the report
    status = camera_status('/detector', 'cam', 'image', totals, stats, 'onnxruntime', judged)
    values = {kv.key: kv.value for kv in status.values}
    assert (status.message, values['bad_input']) == ('ok', '0')
    assert 'bad_input.corrupt' not in values
    stats.add_latency(0.01)
    totals, judged = stats.tick(received=3, dropped=0)  # the bad frame and a good one
    status = camera_status('/detector', 'cam', 'image', totals, stats, 'onnxruntime', judged)
    values = {kv.key: kv.value for kv in status.values}
    assert (status.message, values['bad_input'], values['bad_input.corrupt']) == (
        'bad input seen', '1', '1')
