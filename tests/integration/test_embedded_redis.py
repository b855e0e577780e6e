"""The embedded Redis keeps its data across a crash: AOF (everysec) on its data dir, and a password."""
import pytest
import redis

from services.common.infra import connect_redis
from services.stack.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def fsynced(client: redis.Redis) -> None:
    """Blocks until every write so far is fsynced to the local AOF: the event everysec
    otherwise gives up to a second later."""
    local, _replicas = client.execute_command("WAITAOF", 1, 0, 10_000)
    assert local == 1, "the AOF was not fsynced within 10 s"


async def test_state_survives_sigkill_and_restart_on_the_same_data_dir(tmp_path):
    server = EmbeddedRedis(data_dir=tmp_path).start()
    try:
        port, url = server.port, server.url
        client = connect_redis(url)  # the services' own client, from the URL alone
        await client.hset("v1:{u:1}:state", mapping={"history": b"i1 i2", "n": 2})
        await client.sadd("v1:{u:1}:seen", "e1", "e2")
        await client.hset("v1:catalog:items", "i1", b"\x00proto")
        await client.aclose()
        with redis.Redis.from_url(url) as sync:
            fsynced(sync)

        server.kill()  # SIGKILL: no shutdown save
        assert server.pid is None
        server.start()
        assert (server.port, server.url) == (port, url)  # the same address and password

        client = connect_redis(url)
        assert await client.hgetall("v1:{u:1}:state") == {b"history": b"i1 i2", b"n": b"2"}
        assert await client.smembers("v1:{u:1}:seen") == {b"e1", b"e2"}
        assert await client.hget("v1:catalog:items", "i1") == b"\x00proto"
        await client.aclose()
    finally:
        server.stop()
    assert (tmp_path / "appendonlydir").is_dir()


def test_loopback_only_and_a_password(tmp_path):
    with EmbeddedRedis(data_dir=tmp_path) as server:
        assert server.url.startswith(f"redis://:{server.password}@127.0.0.1:{server.port}/")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, retry=None).ping()  # no retries with backoff
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            assert client.config_get("protected-mode") == {"protected-mode": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert EmbeddedRedis(data_dir=tmp_path).password != server.password  # a new one per server


def test_one_server_per_data_dir(tmp_path):
    with EmbeddedRedis(data_dir=tmp_path):
        with pytest.raises(RuntimeError, match="another embedded Redis"):
            EmbeddedRedis(data_dir=tmp_path).start()
    with EmbeddedRedis(data_dir=tmp_path):  # released on stop
        pass
