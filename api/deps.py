"""Request dependencies, as ``Annotated`` aliases the routes declare.

They are ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool, which on the
accept path cost more than the whole Redis round trip.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.service import PaymentService
from shared.settings.service_settings import Settings
from shared.stripe.gateway import StripeGateway


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


async def _service(request: Request) -> PaymentService:
    service: PaymentService = request.app.state.service
    return service


async def _gateway(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.gateway
    return gateway


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[Redis, Depends(_redis)]
ServiceDep = Annotated[PaymentService, Depends(_service)]
GatewayDep = Annotated[StripeGateway, Depends(_gateway)]
