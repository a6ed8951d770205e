"""The OpenAPI document (``/openapi.json``, shown at ``/docs``): what FastAPI generates from the
routes' declarations (their models, ``responses=``, ``openapi_extra``, the bearer scheme of
api.auth, the callbacks of ``app.webhooks``), with the two things the declarations cannot say:

- FastAPI documents a 422 ``HTTPValidationError`` on every route with a parameter and offers no
  switch to leave it out; this service answers a failed validation with its own 400 error
  object (api.error_responses), and 422 only for a reused Idempotency-Key. The generated 422 and
  its two schemas are removed.
- ``?wait``'s maximum is MAX_WAIT_SECONDS, a setting the app is built with, while the routes are
  declared once, at import: it is written in here.
- Every operation may answer 431 (request headers over api.auth.MAX_HEADER_BYTES, refused
  before any route is chosen): declared on each here, instead of on every route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

from api.auth import MAX_HEADER_BYTES, headers_too_large
from shared.settings.service_settings import Settings


def _headers_too_large() -> dict[str, Any]:
    error = headers_too_large()
    return {
        "description": f"Request headers over {MAX_HEADER_BYTES} bytes in all",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                "examples": {"headers_too_large": {"value": {"error": error.to_dict()}}},
            }
        },
    }


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the document, built once on first request, at ``/openapi.json``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operation in _operations(schema):
                _drop_fastapi_validation_error(operation)
                for parameter in operation.get("parameters", ()):
                    if parameter["in"] == "query" and parameter["name"] == "wait":
                        parameter["schema"]["maximum"] = settings.max_wait_seconds
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation["responses"].setdefault("431", _headers_too_large())
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for section in ("paths", "webhooks"):
        for operations in schema.get(section, {}).values():
            yield from operations.values()


def _drop_fastapi_validation_error(operation: dict[str, Any]) -> None:
    generated = operation["responses"].get("422", {}).get("content", {})
    if "HTTPValidationError" in str(generated):
        del operation["responses"]["422"]
