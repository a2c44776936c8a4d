"""A serving tier following its alias: requests served and failed while the alias moves, and the time from the
alias change to the first clip of the new version.

On a local Ray with `edge` and `cloud` resources: the edge tier serves `shapes@production` from a temporary
registry (v1 the shipped model, v2 the same weights repackaged: a new version, as a retrained model would be),
polling the alias every --poll-s; --clients closed-loop clients send edge requests for --seconds, and the alias
moves from v1 to v2 halfway through.

    python benchmarks/hot_swap.py --clients 4 --seconds 20 --poll-s 1
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from cluster.launcher import free_ports

PROMPT = "a red square moving right"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray
    from ray import serve

    from cluster.deploy import deploy, prepare_config
    from cluster.serve_config import ServeConfig
    from storage.aliases import move_alias
    from storage.package import write_sums
    from storage.registry import push
    from vidgen.pipelines.references import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="vidgen-bench-", dir="/tmp"))
    registry = tmp / "registry"
    push(resolve_model("shapes-tiny"), f"{registry}/shapes")
    second = shutil.copytree(resolve_model("shapes-tiny"), tmp / "v2")
    (second / "card.md").write_text((second / "card.md").read_text() + "\nRepackaged as v2.\n")
    write_sums(second)
    push(second, f"{registry}/shapes")
    move_alias(f"{registry}/shapes", "production", "v1", "benchmark")
    ray.init(address="local", num_cpus=2, resources={"edge": 1, "cloud": 1}, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False, _temp_dir=str(tmp))
    port = free_ports(1)[0]
    edge = {"model": f"{registry}/shapes@production", "alias_poll_s": args.poll_s, "steps": 8, "int8": True,
            "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1}, "max_ongoing_requests": args.clients,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    cloud = {"steps": 8, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1},
             "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    cfg = prepare_config(ServeConfig.model_validate({"renders_uri": str(tmp / "renders"),
                                                     "tiers": {"edge": edge, "cloud": cloud}}),
                         "127.0.0.1", insecure_local=True, environ={})
    deploy({"http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "vidgen", "route_prefix": "/", "import_path": "cluster.serve_app:build_app"}]},
           cfg, insecure_local=True)
    base = f"http://127.0.0.1:{port}"
    served, failed, stop = [], [], threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            started = time.monotonic()
            response = session.post(f"{base}/v1/videos/sync", json={"prompt": PROMPT, "quality": "draft"}, timeout=60)
            if response.status_code == 200:
                served.append((time.monotonic(), time.monotonic() - started, response.headers["X-Vidgen-Model"]))
            else:
                failed.append(response.status_code)

    try:
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.seconds / 2)
        moved = time.monotonic()
        move_alias(f"{registry}/shapes", "production", "v2", "benchmark")
        time.sleep(args.seconds / 2)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    first_new = min((t for t, _, m in served if m.startswith("shapes@v2#")), default=None)
    around = [latency for t, latency, _ in served if moved - 2 <= t <= (first_new or moved) + 2]
    print(f"{args.clients} clients for {args.seconds:.0f} s, alias moved v1 -> v2 at {args.seconds / 2:.0f} s, "
          f"replica polling every {args.poll_s:g} s")
    print(f"served {len(served)} ({sum(m.startswith('shapes@v1#') for _, _, m in served)} by v1, "
          f"{sum(m.startswith('shapes@v2#') for _, _, m in served)} by v2), failed {len(failed)} (goal 0)")
    print(f"alias change -> first v2 clip: {first_new - moved:.2f} s" if first_new else "no clip from v2")
    print(f"latency p50 around the swap {1000 * statistics.median(around):.0f} ms, overall "
          f"{1000 * statistics.median(latency for _, latency, _ in served):.0f} ms")


if __name__ == "__main__":
    main()
