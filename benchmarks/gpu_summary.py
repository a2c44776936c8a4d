"""Steps/s, clips/s and peak GPU memory of every run `benchmarks/gpu_check.sh` left under a folder.

Reads each package's metrics.csv (one row per optimizer step). The first steps are left out of the medians: they
include CUDA's and DeepSpeed's warm-up. Usage: python benchmarks/gpu_summary.py /tmp/gpu-check
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

WARM_UP_STEPS = 2


def summarise(path: Path) -> str:
    rows = list(csv.DictReader(path.open()))
    steady = rows[WARM_UP_STEPS:] or rows
    step_s = statistics.median(float(r["step_s"]) for r in steady)
    clips_s = statistics.median(float(r["samples_per_s"]) for r in steady)
    peaks = [float(r["gpu_peak_gib"]) for r in rows if r.get("gpu_peak_gib")]
    memory = f"peak GPU memory {max(peaks):.2f} GiB" if peaks else "no GPU memory recorded (a CPU run)"
    validation = " -> ".join(r["val_loss"] for r in rows if r.get("val_loss")) or "none"
    return (f"{path.parent.name}: {len(rows)} steps, median {step_s:.3f} s/step ({1 / step_s:.2f} steps/s, "
            f"{clips_s:.2f} clips/s), loss {float(rows[0]['loss']):.4f} -> {float(rows[-1]['loss']):.4f}, {memory}, "
            f"validation loss {validation}")


def main() -> None:
    for path in sorted(Path(sys.argv[1]).glob("*/metrics.csv")):
        print(summarise(path))


if __name__ == "__main__":
    main()
