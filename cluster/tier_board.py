"""`TierBoard`: the one deployment every tier replica reports to and the router reads, so that placement sees every
replica of both tiers without asking each one.

A report is checked once, on receipt, to be a `cluster.tier_report.TierReport` (a replica sends one; anything else is
validated into one or refused), so whoever reads the board reads typed reports; a replica that has not reported for
`stale_after_s` (it died, or was scaled down) no longer counts.
"""

from __future__ import annotations

import time

from cluster.tier_report import TierReport


class TierBoard:
    """Collects the replicas' reports; the router reads a snapshot of the fresh ones."""

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self.reports: dict[str, tuple[TierReport, float]] = {}  # replica id -> (its last report, when it came)

    def report(self, report: TierReport) -> None:
        report = TierReport.model_validate(report)
        self.reports[report.replica] = (report, time.monotonic())

    def snapshot(self) -> list[TierReport]:
        now = time.monotonic()
        self.reports = {k: (r, seen) for k, (r, seen) in self.reports.items() if now - seen <= self.stale_after_s}
        return [r for r, _ in self.reports.values()]
