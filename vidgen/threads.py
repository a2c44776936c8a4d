"""How many threads torch may use in a process: one rule for training, rendering, serving and workers.

torch starts one thread per core it sees, which on a shared node (several Ray actors, a Serve replica beside a
training worker) oversubscribes the CPUs. Each entry point names what it was given: an explicit thread count from
its config, else the CPUs Ray reserved for it.
"""

from __future__ import annotations

import torch


def use_torch_threads(threads: int | None, reserved_cpus: float | None = None) -> int:
    """Set torch's intra-op threads to `threads`, else to the CPUs reserved for this process (at least 1); with
    neither, leave torch's own choice. Returns the count in effect."""
    chosen = threads or (max(1, int(reserved_cpus)) if reserved_cpus else None)
    if chosen:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()
