"""The command of a gRPC service (``shopstream ranker``, ``shopstream gateway``): ``--help``,
settings, logging, /metrics, and its ``running`` context until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, AsyncContextManager

from pydantic_settings import BaseSettings

from services.common.grpc_server import run_until_signalled
from services.common.logs import configure_logging
from services.common.metrics_http import serve_metrics
from services.common.settings import load, service_command


async def serve(settings: Any, running: Callable[[Any], AsyncContextManager[Any]]) -> None:
    """Run ``running(settings)`` until SIGTERM/SIGINT. The /metrics endpoint belongs to the
    process (one registry, a daemon thread), so it is started here rather than in ``running``."""
    async with contextlib.AsyncExitStack() as stack:
        async def start() -> None:
            serve_metrics(settings.metrics_port, settings.metrics_host)
            await stack.enter_async_context(running(settings))

        await run_until_signalled(start, stack.aclose)


def run_service(argv: list[str] | None, *, prog: str, description: str, settings_cls: type[BaseSettings],
                running: Callable[[Any], AsyncContextManager[Any]]) -> int:
    """Parse ``argv`` (only ``--help``, which lists the settings), load the settings from the
    environment (failing fast), configure logging and serve."""
    service_command(prog, description, settings_cls).parse_args(argv)
    settings = load(settings_cls)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, running))
    return 0
