"""Fixtures of the Ray jobs' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def prompt_ray_train_health_checks():
    """Ray Train's controller polls its workers every 2 s by default, so a lost worker and the end of every run were
    noticed up to 2 s late (several times a test). The driver passes this variable on to the controller and the
    workers when a trainer is made; only how soon they are noticed changes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        yield
