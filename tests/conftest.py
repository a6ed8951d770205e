"""Shared fixtures. The environment is set before any project module is imported."""

from __future__ import annotations

import os

os.environ.setdefault("ENVIRONMENT", "test")
os.environ.pop("STRIPE_API_KEY", None)  # never a real key in tests
os.environ.setdefault("STRIPE_API_BASE", "http://127.0.0.1:9")  # nothing listens: no real Stripe
