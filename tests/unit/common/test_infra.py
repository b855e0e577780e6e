from services.common.infra import redacted


def test_redacted_hides_only_the_password():
    assert redacted("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted("redis://app:s3cret@redis.internal:6380/2") == "redis://app:***@redis.internal:6380/2"
    assert redacted("redis+cluster://:pw@10.0.0.1:7000") == "redis+cluster://:***@10.0.0.1:7000"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
