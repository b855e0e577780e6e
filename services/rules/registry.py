"""Filter expressions registered by name, stored durably in Redis (one hash), parsed once.

Requests name an expression (``RecommendRequest.filter_name``); the gateway reads its text
(one HGET, cached for ``cache_s``) and sends the text with the request's parameters to the
ranker, which parses it once per distinct text (``parsed``) and evaluates it over its items.
"""
from __future__ import annotations

import functools
import re
import time
from typing import Callable

from services.common.errors import InvalidArgument, NotFound
from services.common.stores import keys
from services.rules.language import Expression, parse

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FILTERS = 1000


@functools.lru_cache(maxsize=256)
def parsed(text: str) -> Expression:
    """``parse`` with a cache: an expression's text is parsed once per process."""
    return parse(text)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidArgument(f"filter name {name[:80]!r} must be 1-64 characters of letters, digits, '_', '.', '-', "
                              "starting with a letter or digit")
    return name


class FilterRegistry:
    def __init__(self, redis, cache_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def put(self, name: str, text: str) -> Expression:
        """Validate and store (replacing one of the same name); raises ExpressionError with the
        position of the first problem, and nothing is stored."""
        check_name(name)
        expression = parsed(text)
        if not await self._redis.hexists(keys.FILTER_EXPRESSIONS, name) and \
                await self._redis.hlen(keys.FILTER_EXPRESSIONS) >= MAX_FILTERS:
            raise InvalidArgument(f"at most {MAX_FILTERS} filters can be registered; delete one first")
        await self._redis.hset(keys.FILTER_EXPRESSIONS, name, text.encode())
        self._cache.pop(name, None)
        return expression

    async def delete(self, name: str) -> bool:
        self._cache.pop(name, None)
        return bool(await self._redis.hdel(keys.FILTER_EXPRESSIONS, check_name(name)))

    async def all(self) -> dict[str, str]:
        raw = await self._redis.hgetall(keys.FILTER_EXPRESSIONS)
        return {k.decode(): v.decode() for k, v in sorted(raw.items())}

    async def text(self, name: str) -> str:
        """The expression registered as ``name`` (NOT_FOUND when none is); cached ``cache_s``,
        so a change reaches every gateway within that time."""
        check_name(name)
        now = self._clock()
        hit = self._cache.get(name)
        if hit is None or now - hit[0] > self._cache_s:
            raw = await self._redis.hget(keys.FILTER_EXPRESSIONS, name)
            hit = (now, raw.decode() if raw is not None else None)
            if len(self._cache) >= 2 * MAX_FILTERS:  # names asked for that do not exist: keep it bounded
                self._cache.clear()
            self._cache[name] = hit
        if hit[1] is None:
            raise NotFound(f"no filter named {name[:80]!r}; register it with CreateFilter")
        return hit[1]
