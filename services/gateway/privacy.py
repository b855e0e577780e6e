"""PrivacyService: ForgetUser removes a shopper's state and leaves the tombstone that the
features worker, exports and retraining honour (docs/privacy.md)."""
from __future__ import annotations

import logging
import time

from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.stores.user_state import UserStateStore
from services.contract.limits import check_id
from services.gateway import metrics as m

logger = logging.getLogger(__name__)


class PrivacyServicer(gateway_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, user_states: UserStateStore, metrics: m.GatewayMetrics) -> None:
        self._states = user_states
        self._metrics = metrics

    async def ForgetUser(self, request: gateway_pb2.ForgetUserRequest, context) -> gateway_pb2.ForgetUserResponse:
        user_id = check_id("user_id", request.user_id)
        deleted = await self._states.forget(user_id, int(time.time() * 1000))
        self._metrics.users_forgotten.inc()
        logger.info("forgot a user", extra={"keys_deleted": deleted})  # never the id: logs outlive the data
        return gateway_pb2.ForgetUserResponse(keys_deleted=deleted)
