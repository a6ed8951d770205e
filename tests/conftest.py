"""Shared fixtures. The environment is set before any project module is imported."""

from __future__ import annotations

import os

os.environ.setdefault("ENVIRONMENT", "test")
os.environ.pop("STRIPE_API_KEY", None)  # never a real key in tests
os.environ.setdefault("STRIPE_API_BASE", "http://127.0.0.1:9")  # nothing listens: no real Stripe
# The unit tests' apps mostly run without client keys (their own tests give keys): an open API
# must be asked for (api/start_rules.py). Integration stacks give their processes keys.
os.environ.setdefault("API_ALLOW_ANONYMOUS", "true")
