"""Measurements, recorded once and rendered twice.

Each model version has one ``ModelRecorder`` that the request path writes into (integer nanoseconds into
lock-free histograms: only the event loop writes). Triton's statistics extension (``/v2/models/stats``) and
Prometheus (``/metrics``) are both rendered from it. Stream consumers keep ``StreamStats``. Only
``prometheus.py`` imports prometheus_client, and only when metrics are first rendered.
"""
