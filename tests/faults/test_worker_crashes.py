"""The features worker killed (SIGKILL) or stopped (SIGTERM) twice mid-stream: every acknowledged
event is applied exactly once."""
from __future__ import annotations

import pytest

from faults.harness import Publisher, PublishingThread, all_applied, compare, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
DUPLICATES = "shopstream_features_events_duplicate_total"


def _crash_twice(rig, how: str, events: int = 1200, rate: float = 300.0):
    publisher = Publisher(rig.kafka.bootstrap_servers, [f"user-{n}" for n in range(12)])
    thread = PublishingThread(publisher, events, rate)
    redelivered = 0  # what the restarted workers consumed again (counted once, as duplicates)
    for round_ in range(2):
        seen = rig.applied_count()
        wait_until(lambda: rig.applied_count() >= seen + 100, 60, f"the worker applying (round {round_})")
        redelivered += rig.worker_metric(DUPLICATES)
        if how == "kill":
            rig.kill_worker()
        else:
            assert rig.stop_worker() == 0  # a clean stop: wrote and committed what it held
        rig.start_worker()
    thread.join()
    acked, unacked = publisher.outcome()
    assert not unacked
    wait_until(lambda: all_applied(rig.client, acked), 90, "every acknowledged event applied")
    redelivered += rig.worker_metric(DUPLICATES)
    report = compare(rig.client, acked, unacked)
    print(f"features {how} x2: {report}; {redelivered:.0f} consumed again after the crashes")
    assert (report.lost, report.doubled, report.mismatches) == ([], [], [])
    publisher.close()
    return report


@pytest.mark.faults_fast
def test_worker_sigkill_twice_loses_and_doubles_nothing(rig):
    _crash_twice(rig, "kill")


def test_worker_sigterm_twice_loses_and_doubles_nothing(rig):
    _crash_twice(rig, "term")
