"""ReloadPolicy: when LATEST is loaded, and how long a version that failed waits (an injected clock)."""
from services.common.bundle.reload import ReloadPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nothing_published_or_already_held_is_not_due():
    policy = ReloadPolicy(60.0)
    assert not policy.due(None, None)
    assert not policy.due("v1", "v1")
    assert policy.due("v1", None) and policy.due("v2", "v1")


def test_a_failed_version_waits_failed_retry_s_then_is_tried_again():
    clock = Clock()
    policy = ReloadPolicy(60.0, clock)
    policy.failed("v2")
    assert not policy.due("v2", "v1")
    assert policy.due("v3", "v1")  # LATEST moved on: no wait
    clock.now += 59.9
    assert not policy.due("v2", "v1")
    clock.now += 0.1
    assert policy.due("v2", "v1")
    policy.failed("v2")  # failed again: another full interval
    assert not policy.due("v2", "v1")
    policy.loaded("v2")
    assert policy.due("v2", None)


def test_zero_retry_tries_again_at_once():
    policy = ReloadPolicy(0.0, Clock())
    policy.failed("v1")
    assert policy.due("v1", None)
