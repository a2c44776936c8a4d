"""How fast `vidgen --help` answers: against a bare Python start and against merely importing Ray.

Each command is a fresh process (what a user waits for), run alternately, median of N. The claim: `--help` of
every command loads in well under a second, because the CLI imports Ray, torch and DeepSpeed only inside commands.

    python benchmarks/cli_help.py --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "vidgen --help": [sys.executable, "-m", "vidgen.cli", "--help"],
    "vidgen serve up --help": [sys.executable, "-m", "vidgen.cli", "serve", "up", "--help"],
    "vidgen cluster scale --help": [sys.executable, "-m", "vidgen.cli", "cluster", "scale", "--help"],
    "python -c 'import ray'": [sys.executable, "-c", "import ray"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c pass"])
    ray_import = statistics.median(times["python -c 'import ray'"])
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name:30s} {1000 * median:7.0f} ms   {median / base:5.1f}x bare python   "
              f"{median / ray_import:5.2f}x import ray")


if __name__ == "__main__":
    main()
