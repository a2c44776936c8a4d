"""Starting (or joining) Ray the same way from every job."""

from __future__ import annotations

import logging


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Use the Ray already initialised in this process; else join `address`, or start a local one (`None`).

    A local start never attaches to some other cluster running on the machine (`address="local"`).
    """
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                 logging_level=logging.WARNING, log_to_driver=True)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own; Ray Data's are noisy off a TTY
    context.print_on_execution_start = False
