"""What a client reads about itself: ``GET /clients/me/callback-secret``, the Standard Webhooks
secret its callbacks are signed with, as a payment provider's dashboard shows an endpoint's
signing secret.

The secret is the client's own (shared.callbacks.signing): its ``callback_signing_secrets`` in
API_CLIENTS, else derived from CALLBACK_SIGNING_SECRETS and its name, so it verifies this
client's callbacks and no other's. Any authenticated client may read its own; the answer is
never cached (``Cache-Control: no-store``) and never logged.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.auth import bearer_key
from api.operation_docs import RATE_LIMIT, error_responses, guarded_responses, read_by_hand
from api.request_helpers import model_response
from shared.callbacks.signing import CallbackSecrets
from shared.errors import NotFound
from shared.settings.api_clients import ANONYMOUS, Client

router = APIRouter(
    prefix="/clients",
    tags=["clients"],
    dependencies=[Depends(bearer_key)],
    responses=guarded_responses(),
)

NOT_CONFIGURED = NotFound(
    "No callback signing secret is configured for this client (CALLBACK_SIGNING_SECRETS).",
    code="callback_secret_missing",
)


class CallbackSecret(BaseModel):
    object: Literal["callback_secret"] = "callback_secret"
    client: str = Field(description="The client's name.")
    secret: str = Field(
        description="The current secret (whsec_...): give it to a Standard Webhooks library."
    )
    secrets: list[str] = Field(
        description="Every secret that signs now, the current first. More than one during a "
        "rotation: each callback then carries a signature per secret, and a receiver holding "
        "any one of them verifies."
    )
    source: Literal["derived", "configured"] = Field(
        description="`derived` from the service's master secrets and the client's name, or "
        "`configured` for this client in API_CLIENTS (`callback_signing_secrets`)."
    )


@router.get(
    "/me/callback-secret",
    operation_id="get_callback_secret",
    response_model=CallbackSecret,
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(NOT_CONFIGURED),
    },
    openapi_extra=read_by_hand(),
)
async def get_callback_secret(request: Request) -> Response:
    """The secret this client's callbacks are signed with, to verify them."""
    principal: Client = getattr(request.state, "principal", ANONYMOUS)
    secrets: CallbackSecrets = request.app.state.callback_secrets
    signing = secrets.of(principal.name)
    if not signing:
        raise NOT_CONFIGURED
    source: Literal["derived", "configured"] = (
        "configured" if secrets.configured_by_client(principal.name) else "derived"
    )
    answer = CallbackSecret(
        object="callback_secret",
        client=principal.name,
        secret=signing[0],
        secrets=list(signing),
        source=source,
    )
    return model_response(200, answer, {"Cache-Control": "no-store"})
