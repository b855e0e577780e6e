"""Duplicates and redelivery: the same records again (back to back in one batch, an old stretch
interleaved with new events, and after a worker crash that redelivers its uncommitted batch)
leave the state of once."""
from __future__ import annotations

import pytest

from faults.harness import Publisher, all_applied, compare, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


@pytest.mark.faults_fast
def test_duplicates_and_interleaved_redelivery_apply_once(rig):
    publisher = Publisher(rig.kafka.bootstrap_servers, [f"user-{n}" for n in range(6)])
    first = [publisher.event() for _ in range(120)]
    for ev in first:
        publisher.send(ev)
        if int(ev.event_id.rsplit("e", 1)[1]) % 5 == 0:
            publisher.send(ev)  # back to back: both in one batch
    publisher.flush()
    wait_until(lambda: all_applied(rig.client, first), 60, "the first events applied")

    # An old stretch sent again, interleaved with new events on the same keys.
    newer = []
    for old in first[40:100]:
        publisher.send(old)
        ev = publisher.event()
        publisher.send(ev)
        newer.append(ev)
    # And again after a crash: the killed worker's uncommitted records come back to the next one.
    rig.kill_worker()
    for old in first[:30]:
        publisher.send(old)
    rig.start_worker()
    acked, unacked = publisher.outcome()
    assert not unacked
    wait_until(lambda: all_applied(rig.client, acked), 60, "every event applied")
    duplicates = rig.worker_metric("shopstream_features_events_duplicate_total")
    report = compare(rig.client, acked)
    print(f"duplicates and redelivery ({len(publisher.sent) - len({ev for ev, _ in publisher.sent})} sent again; "
          f"{duplicates:.0f} seen as duplicates by the last worker): {report}")
    assert (report.lost, report.doubled, report.mismatches) == ([], [], [])
    assert duplicates >= 30
