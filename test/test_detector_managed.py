"""The detector as a managed (lifecycle) node, driven through its services as a lifecycle
manager (Nav2's lifecycle_manager, `ros2 lifecycle set`) drives it (issue 18)."""
from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import Image
from support.ros import change_state, diagnostics_values, frame, lifecycle_state, running
from support.truth import assert_bus_and_people
from vision_msgs.msg import Detection2DArray

pytestmark = pytest.mark.ros


def test_autostart_configures_and_activates(bus_jpg):
    with running() as (proc, client):
        assert lifecycle_state(client) == 'active'
        results = client.collect(Detection2DArray, 'detections')
        client.publisher(Image, 'image').publish(frame(bus_jpg, 'bgr8', 1, 'cam'))
        client.wait(lambda: results, 'detections')
    assert_bus_and_people(results[0])


def test_a_lifecycle_manager_drives_every_state(bus_jpg):
    with running(autostart=False, wait_for='autostart false') as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        assert lifecycle_state(client) == 'unconfigured'
        assert client.node.count_subscribers('/image') == 0  # nothing taken yet
        assert change_state(client, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(client) == 'inactive'
        assert client.node.count_subscribers('/image') == 0  # inactive: no work
        assert change_state(client, Transition.TRANSITION_ACTIVATE)
        pub = client.publisher(Image, 'image')  # waits for the detector's subscription
        pub.publish(frame(bus_jpg, 'bgr8', 1, 'cam'))
        client.wait(lambda: results, 'detections while active')
        assert change_state(client, Transition.TRANSITION_DEACTIVATE)
        client.wait(lambda: client.node.count_subscribers('/image') == 0,
                    'the subscription gone on deactivate')
        assert change_state(client, Transition.TRANSITION_ACTIVATE)  # resumes
        client.wait(lambda: pub.get_subscription_count() > 0, 'subscribed again')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub.publish(frame(bus_jpg, 'bgr8', 2, 'cam'))
        client.wait(lambda: len(results) == 2, 'detections after activating again')
        # The camera's counters run on over a deactivation: frames in were counted from 0
        # again by the new activation's intake, processed were not (1 in, 2 processed).
        client.wait(lambda: diagnostics_values(diags).get('processed') == '2',
                    'a report after the second frame')
        assert diagnostics_values(diags)['frames_in'] == '2', diagnostics_values(diags)
        assert change_state(client, Transition.TRANSITION_DEACTIVATE)
        assert change_state(client, Transition.TRANSITION_CLEANUP)
        assert lifecycle_state(client) == 'unconfigured'
        assert change_state(client, Transition.TRANSITION_CONFIGURE)  # and again from there
        assert change_state(client, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN
                            if lifecycle_state(client) == 'unconfigured'
                            else Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert lifecycle_state(client) == 'finalized'
        log = proc.output()
    assert [r.header.stamp.sec for r in results] == [1, 2]
    assert 'Traceback' not in log


def test_configure_fails_with_the_reason_and_stays_unconfigured(tmp_path):
    with running(autostart=False, model=str(tmp_path / 'gone.onnx'),
                 wait_for='autostart false') as (proc, client):
        assert not change_state(client, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(client) == 'unconfigured'
        proc.wait_for_output(f'bad parameter: parameter model: {tmp_path}/gone.onnx does not '
                             f'exist')


def test_shutdown_from_the_active_state_is_clean(bus_jpg):
    with running() as (proc, client):
        assert change_state(client, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lifecycle_state(client) == 'finalized'
        rc = proc.stop()
    assert rc == 0 and 'Traceback' not in proc.output()
