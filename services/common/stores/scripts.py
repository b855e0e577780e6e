"""Lua scripts called with EVALSHA in one pipeline, loaded on the first NOSCRIPT."""
from __future__ import annotations

from typing import Iterable

from redis.exceptions import NoScriptError


async def evalsha_all(redis, scripts: Iterable[str], calls: list[tuple]) -> list:
    """EVALSHA each call (``(sha, numkeys, *keys, *args)``) in one pipeline; the calls that met
    NOSCRIPT (Redis restarted or flushed) run again once ``scripts`` are loaded. Each call is
    atomic, so re-running only the failed ones applies each exactly once and, for one user's
    whole batch per call, keeps its events in order. Raises the first error reply."""
    pipe = redis.pipeline(transaction=False)
    for args in calls:
        pipe.execute_command("EVALSHA", *args)
    replies = await pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for script in scripts:
            await redis.script_load(script)
        pipe = redis.pipeline(transaction=False)
        for i in missing:
            pipe.execute_command("EVALSHA", *calls[i])
        for i, reply in zip(missing, await pipe.execute(raise_on_error=False)):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
