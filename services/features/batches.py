"""Batches of a faust agent's records without faust's per-event ``Stream`` iteration.

``Stream.take_events`` runs every event through the stream's iterator, a
buffering processor, a sleep(0) and its own ack: ~20 % of the worker's event
loop at 7k events/s in a profile. Here the agent reads its channel's queue (the
one faust's conductor fills, as ``take_events`` does via ``aiter(channel)``) in
bulk and keeps the stream's rules itself:

- events of a consumer generation that is over, or that arrive while flow
  control is suspended (a rebalance), are acked and dropped, as ``Stream`` does;
- every message of an acking topic is tracked with the consumer on arrival, so
  a rebalance waits for it (``Consumer.wait_empty``) and commits leave it out;
- a batch is acked only after the body of the loop finished with it, i.e. after
  the Redis write: at-least-once. A crash or cancellation before that leaves it
  unacked, so it is consumed again.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
from faust.types import Message


async def take_message_batches(app: faust.App, stream: faust.StreamT, max_: int,
                               within: float) -> AsyncIterator[list[Message]]:
    """Yield up to ``max_`` messages at a time, waiting at most ``within`` s after the first one."""
    channel = aiter(stream.channel)  # subscribes this channel with the conductor
    queue = channel.queue
    try:
        async for batch in _batches(app, queue, max_, within):
            yield batch
    finally:
        on_stop_iteration = getattr(channel, "on_stop_iteration", None)
        if on_stop_iteration is not None:
            on_stop_iteration()


async def _batches(app: faust.App, queue, max_: int, within: float) -> AsyncIterator[list[Message]]:
    get, get_nowait, empty = queue.get, queue.get_nowait, queue.empty
    consumer = app.consumer
    flow = app.flow_control
    acking_topics = app.topics.acking_topics
    track = consumer.track_message
    on_message_out = app.sensors.on_message_out
    loop = asyncio.get_running_loop()
    while True:
        try:
            events = [await get()]
        except StopAsyncIteration:  # the actor is stopping (faust throws this into the channel)
            return
        deadline = loop.time() + within
        while len(events) < max_:
            if not empty():
                events.append(get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                events.append(await asyncio.wait_for(get(), remaining))
            except TimeoutError:
                break
            except StopAsyncIteration:
                return  # unacked: consumed again after the restart
        generation = app.consumer_generation_id
        active = flow.is_active()
        batch: list[Message] = []
        for event in events:
            message = event.message
            if not active or message.generation_id != generation:
                _ack(consumer, on_message_out, message)  # skipped as Stream skips it
                continue
            if not message.tracked and message.topic in acking_topics:
                message.tracked = True
                track(message)
            batch.append(message)
        if batch:
            yield batch  # resumes only once the agent is done with the batch
            for message in batch:
                _ack(consumer, on_message_out, message)


def _ack(consumer, on_message_out, message: Message) -> None:
    """``Stream.ack`` for one message: commit-ready once every channel it went to acked it."""
    if message.ack(consumer):
        on_message_out(message.tp, message.offset, message)
