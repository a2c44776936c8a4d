"""Starting (or joining) Ray, and configuring Ray Data, the same way from every job."""

from __future__ import annotations

import logging


def configure_data_context() -> None:
    """Ray Data settings every vidgen job shares (they are per driver process)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own; Ray Data's are noisy off a TTY
    context.print_on_execution_start = False
    # Ray Data holds back half of the CPUs for each operator by default; on a 2-CPU node that left one
    # decode task running at a time (measured: half the throughput of benchmarks/stream.py). vidgen's
    # pipelines are one or two fused operators, which the reservation has nothing to protect.
    context.op_resource_reservation_enabled = False


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Use the Ray already initialised in this process; else join `address`, or start a local one (`None`).

    A local start never attaches to some other cluster running on the machine (`address="local"`).
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                 logging_level=logging.WARNING, log_to_driver=True)
    configure_data_context()
