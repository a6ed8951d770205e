"""Benchmarks of the payment service: ``make bench`` (``python -m bench``).

Starts everything it measures itself on loopback (its own redis-server, a constant-latency
Stripe stub, uvicorn, Celery workers) and writes docs/PERFORMANCE.md and docs/performance.png.
"""
