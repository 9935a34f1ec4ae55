"""Prometheus metrics of one service instance (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pixguard_requests_total", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pixguard_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "pixguard_batch_size",
            "Images per forward pass",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.inference = Histogram(
            "pixguard_inference_seconds", "Forward pass time", registry=self.registry
        )
        self.in_flight = Gauge(
            "pixguard_requests_in_flight",
            "HTTP requests received and not yet answered",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "pixguard_queue_depth", "Images waiting for the model", registry=self.registry
        )
        self.decisions = Counter(
            "pixguard_decisions_total", "Images classified", ["label"], registry=self.registry
        )

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
