"""Concurrent reads of user state share one Redis pipeline.

Every ``get`` joins the pending set; one flusher sends them as a single
``get_states`` call. While that round trip is in flight, newer calls queue up and
go together in the next one, so under load a round trip serves many requests and
at low load a lone request goes out at once (no timer).
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from services.common.stores.user_state import UserState, UserStateStore


class CoalescingStateReader:
    def __init__(self, store: UserStateStore, history_len: int, max_batch: int = 256) -> None:
        self._store = store
        self._history_len = history_len
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def get(self, user_id: str) -> UserState:
        return (await self.get_many([user_id]))[0]

    async def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        """States of several users (in order), in the same round trips as everyone else's."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in user_ids]
        self._pending.extend(zip(user_ids, futures))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        states = await asyncio.gather(*futures, return_exceptions=True)
        for state in states:
            if isinstance(state, BaseException):
                raise state
        return states

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the callers that are ready join this round trip
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
            await self._read(batch)

    async def _read(self, batch: Sequence[tuple[str, asyncio.Future]]) -> None:
        try:
            states = await self._store.get_states([user for user, _ in batch], self._history_len)
        except Exception as exc:  # every caller of this round trip sees the store's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), state in zip(batch, states):
            if not future.done():
                future.set_result(state)
