"""The router's Prometheus metrics (through `ray.serve.metrics`, exported by Ray's metrics agent)."""

from __future__ import annotations

from ray.serve import metrics

LATENCY_BOUNDARIES_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000]


class RouterMetrics:
    """vidgen_requests{tier,outcome}, vidgen_request_latency_ms{tier}, vidgen_placements{tier,spilled},
    vidgen_refusals{status}."""

    def __init__(self):
        self.requests = metrics.Counter("vidgen_requests", "requests by tier and outcome",
                                        tag_keys=("tier", "outcome"))
        self.latency = metrics.Histogram("vidgen_request_latency_ms", "time to the answer, by tier",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("tier",))
        self.placements = metrics.Counter("vidgen_placements", "placements by tier and whether they spilled",
                                          tag_keys=("tier", "spilled"))
        self.refusals = metrics.Counter("vidgen_refusals", "requests no tier could take, by status",
                                        tag_keys=("status",))

    def refused(self, status: int) -> None:
        self.refusals.inc(tags={"status": str(status)})

    def placed(self, tier: str, spilled: bool) -> None:
        self.placements.inc(tags={"tier": tier, "spilled": str(spilled).lower()})

    def finished(self, tier: str, outcome: str, seconds: float | None = None) -> None:
        """A render's end; its latency is observed when given (renders that were answered)."""
        self.requests.inc(tags={"tier": tier, "outcome": outcome})
        if seconds is not None:
            self.latency.observe(1000 * seconds, tags={"tier": tier})
