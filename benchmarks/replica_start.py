"""How fast a serving replica starts: from its process's start to its first served clip, on a local Ray.

  (a) idle: the vidgen edge tier's replica (`cluster.tier_replica.TierReplica`: model verified and loaded, text
      encoder, prompt-drift reference, warm-up clip, reports to a tier board already running) against a bare Serve
      replica loading the same model with no vidgen wrapper (text encoder, `load_pipeline`, a render to MP4), rounds
      alternating. Each round deploys a new replica (a new worker process), asks it for one clip through a
      DeploymentHandle, and takes (process start -> first clip) from the replica process's own start time, and
      (deploy -> first clip). The vidgen replica's first round finds an empty model cache (the drift reference is
      computed and stored); the later rounds read it, as every replica after the first on a machine does.
      Goal: <= 5 s, idle.
  (b) autoscaling: the edge tier with 1-2 replicas under N concurrent clients (the handle's callers); from the
      scale-up decision (the controller starting the second replica) to the first clip that replica serves.
      Goal: <= 15 s under 4 clients.

    python benchmarks/replica_start.py --rounds 3 --clients 4

Run with nothing else of yours running (it starts its own Ray); on a shared machine report `uptime` beside it.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time

import psutil

from vidgen.clip_request import ClipRequest

MODEL = "shapes-tiny-k1"  # the edge tier's model (cluster/serve-local.yaml)
EDGE = {"model": MODEL, "torch_threads": 1, "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1},
        "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
SCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "metrics_interval_s": 0.5,
           "look_back_period_s": 2, "upscale_delay_s": 1, "downscale_delay_s": 60}
PROMPT = "a red square moving right"


class BareReplica:
    """The same model with no vidgen wrapper: the text encoder, `load_pipeline`, and a render to MP4."""

    def __init__(self):
        from vidgen.pipelines.load import load_pipeline
        from vidgen.text import TextEncoder
        from vidgen.threads import use_torch_threads

        use_torch_threads(1)
        self.pipeline = load_pipeline(MODEL, TextEncoder())

    def render(self, request: ClipRequest) -> dict:
        from storage.video import encode
        from vidgen.clip_request import resolve_clip

        clip, _ = resolve_clip(request, self.pipeline.capabilities)
        return {"mp4": encode(self.pipeline.generate([clip]).frames[0])}

    def pid(self) -> int:
        return os.getpid()


class _Pid:
    """Mixed into the vidgen replica's deployment so the benchmark can find its process."""

    def pid(self) -> int:
        return os.getpid()


def _deploy(kind: str, name: str, autoscaling: dict | None = None):
    """Deploy one replica of `kind` ("vidgen" or "bare") as app `name`; its handle (returned at once)."""
    from ray import serve

    from cluster.tier_replica import TierReplica

    if kind == "bare":
        app = serve.deployment(BareReplica, name="bare", ray_actor_options={"num_cpus": 0.5,
                                                                            "resources": {"edge": 1}}).bind()
    else:
        edge = {**EDGE, "autoscaling": autoscaling or EDGE["autoscaling"]}
        board = serve.get_deployment_handle("TierBoard", app_name="board")  # up already, as when a tier scales
        replica = type("EdgeGenerator", (_Pid, TierReplica), {})
        app = serve.deployment(replica, name="EdgeGenerator", ray_actor_options={"num_cpus": 0.5,
                                                                                  "resources": {"edge": 1}},
                               autoscaling_config=autoscaling, max_ongoing_requests=4).bind("edge", edge, board, 1.0)
    return serve.run(app, name=name, route_prefix=None)  # returns once the replica is up


def one_start(kind: str, round_: int) -> tuple[float, float, float]:
    """(process start -> first clip, deploy -> first clip, the first clip's own latency) of a new replica, in s."""
    from ray import serve

    name = f"{kind}{round_}"
    deployed = time.time()
    handle = _deploy(kind, name)
    ready = time.time()
    handle.render.remote(ClipRequest(prompt=PROMPT)).result(timeout_s=300)
    served = time.time()
    pid = handle.pid.remote().result()
    started = psutil.Process(pid).create_time()
    serve.delete(name)
    return served - started, served - deployed, served - ready


def part_a(rounds: int) -> None:
    times: dict[str, list[tuple[float, float, float]]] = {"bare": [], "vidgen": []}
    for r in range(rounds):
        for kind in ("vidgen", "bare") if r % 2 == 0 else ("bare", "vidgen"):
            times[kind].append(one_start(kind, r))
            print(f"  round {r} {kind:6s}: process start -> first clip {times[kind][-1][0]:5.2f} s, "
                  f"deploy -> first clip {times[kind][-1][1]:5.2f} s, of which the first request "
                  f"{times[kind][-1][2]:4.2f} s", flush=True)
    medians = {}
    for kind, pairs in times.items():
        warm = pairs[1:] if kind == "vidgen" and len(pairs) > 1 else pairs  # the first vidgen start fills the cache
        medians[kind] = statistics.median(p[0] for p in warm)
        cold = f" (warm model cache; the first, with an empty one: {pairs[0][0]:.2f} s)" if warm is not pairs else ""
        print(f"(a) {kind:6s} median of {len(warm)}: process start -> first clip {medians[kind]:.2f} s, deploy -> "
              f"first clip {statistics.median(p[1] for p in warm):.2f} s{cold}")
    print(f"(a) vidgen replica / bare replica start: {medians['vidgen'] / medians['bare']:.2f}x (goal: vidgen <= 5 s)")


def _replica_states(app: str) -> dict:
    from ray import serve

    status = serve.status().applications.get(app)
    return {} if status is None else dict(status.deployments["EdgeGenerator"].replica_states)


def part_b(clients: int, timeout_s: float = 120) -> None:
    """Scale 1 -> 2 under `clients` callers; seconds from the second replica's creation to its first clip."""
    from ray import serve

    handle = _deploy("vidgen", "scaling", SCALING)
    first = handle.render.remote(ClipRequest(prompt=PROMPT)).result(timeout_s=300)["replica"]
    served_by: dict[str, float] = {}
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            out = handle.render.remote(ClipRequest(prompt=PROMPT, seed=i)).result(timeout_s=120)
            served_by.setdefault(out["replica"], time.time())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    load_began = time.time()
    for t in threads:
        t.start()
    decided = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(served_by.keys() - {first}) == 0:
        if decided is None and sum(_replica_states("scaling").values()) >= 2:
            decided = time.time()  # the controller has started a second replica: the scale-up decision
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    serve.delete("scaling")
    second = sorted(served_by.keys() - {first})
    if not second or decided is None:
        print(f"(b) no second replica served within {timeout_s:.0f} s")
        return
    print(f"(b) {clients} clients: scale-up decided {decided - load_began:.1f} s after the load began; the second "
          f"replica served {served_by[second[0]] - decided:.2f} s after the decision (goal <= 15 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="replica starts of each kind in (a)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent callers in (b)")
    parser.add_argument("--skip-scaling", action="store_true", help="(a) only")
    args = parser.parse_args()
    import ray
    from ray import serve

    logging.basicConfig(level=logging.WARNING)
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vidgen-replica-start-") as tmp:
        # an empty model cache, inherited by the Ray workers this process starts
        os.environ.update({"VIDGEN_CACHE": f"{tmp}/cache", "VIDGEN_RUNS_SECRET": "replica-start benchmark"})
        ray.init(address="local", num_cpus=2, resources={"edge": 2}, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, _temp_dir=f"{tmp}/ray")
        serve.start(http_options={"location": "NoServer"})
        from cluster.tier_board import TierBoard

        serve.run(serve.deployment(TierBoard, name="TierBoard", ray_actor_options={"num_cpus": 0}).bind(30.0),
                  name="board", route_prefix=None)
        try:
            part_a(args.rounds)
            if not args.skip_scaling:
                part_b(args.clients)
        finally:
            serve.shutdown()
            ray.shutdown()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
