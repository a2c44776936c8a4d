"""Serving overheads and the two tiers, in one run on a local Ray with `edge` and `cloud` resources.

  (a) an edge clip over HTTP (proxy -> router -> policy -> edge replica -> MP4 back) against the same work in this
      process: the same int8 model, steps, threads, sampling and MP4 encode, no Serve; and, to split the overhead,
      the edge deployment called through a DeploymentHandle from this process. Goal: Serve, router and policy
      together add <= 3%.
  (b) the router's trivial request (GET /healthz) against a bare one-deployment Serve app on the same cluster,
      p50 and p99, goal <= 1.2x; and against a bare FastAPI ingress deployment (one route), which splits what
      Serve's ASGI ingress costs from what the router adds.
  (c) edge vs cloud over HTTP: latency per clip and prompt accuracy of the decoded MP4s (the detector reads
      colour, shape and direction back), on evaluation prompts of seen compositions. The edge tier runs the
      distilled 1-step student (shapes-tiny-k1, no guidance), the cloud tier its teacher at 24 steps with guidance.
      FD-frames and FVD-vidgen of both tiers' decoded clips against the world's own clips of the same specs
      (computed after the timing; the MP4 round trip is in both). Goal: edge >= 8x faster, prompt accuracy within
      5 points of the cloud's.
  (d) with --batching, only this: edge-tier throughput at N concurrent HTTP clients with dynamic batching
      (`max_batch_size` N) against the same tier without (`max_batch_size` 1), p50 and p99 latency of both; the
      two deployments alternate, R rounds each. Goal >= 2.5x.
  (e) with --videos-api, only this: the Videos API at N concurrent clients on the edge tier. Create latency (POST
      /v1/videos answers before anything renders), p50 and p99, goal p99 <= 20 ms, beside a bare Serve request's
      latency probed every 50 ms under the same load; and throughput of create + poll (sleeping
      `openai-poll-after-ms`, as the SDK does) + download against POST /v1/videos/sync, rounds alternating. Goal
      >= 0.9x. --tier-calls object_store measures the router calling its tiers the Ray default way.

  (f) with --cancel N, only this: N running 24-step cloud renders, each deleted once its progress says half the
      steps are done; the steps its replica sampled after the DELETE (at most: the progress lags the sampler).

In (a)-(c) requests are sequential (one client) and A/B rounds alternate so drift hits both sides.

    python benchmarks/serve.py --clips 24 --trivial 400 --accuracy-clips 48
    python benchmarks/serve.py --batching --clients 8 --batch-clips 64 --rounds 2
    python benchmarks/serve.py --videos-api --clients 8 --batch-clips 64 --rounds 2 [--tier-calls object_store]
    python benchmarks/serve.py --cancel 10
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch

from cluster.launcher import free_ports
from vidgen.clip_request import ClipRequest

EDGE_MODEL = "shapes-tiny-k1"
EDGE = {"model": EDGE_MODEL, "int8": False, "text_dtype": "auto", "torch_threads": 1, "cost_per_clip": 1,
        "num_cpus": 0.5, "resources": {"edge": 1}, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
CLOUD = {"int8": False, "torch_threads": 1, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1},
         "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
PROMPT = "a red square moving right"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def start(tmp: str, edge: dict = EDGE, port: int | None = None, bare: bool = True,
          settings: dict | None = None) -> tuple[str, object]:
    """Deploy the app (starting Ray on first use) with this edge tier config and ServeConfig `settings`, and a bare
    Serve app beside it when `bare`; (base URL, config)."""
    import ray
    from ray import serve

    from cluster.deploy import deploy, prepare_config
    from cluster.serve_config import ServeConfig

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, resources={"edge": 1, "cloud": 1}, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False, _temp_dir=tmp)
    port = port or free_ports(1)[0]
    cfg = ServeConfig.model_validate({"renders_uri": f"{tmp}/jobs", "tiers": {"edge": edge, "cloud": CLOUD},
                                      **(settings or {})})
    cfg = prepare_config(cfg, "127.0.0.1", insecure_local=True, environ={})
    deploy({"http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "vidgen", "route_prefix": "/", "import_path": "cluster.serve_app:build_app"}]},
           cfg, insecure_local=True)
    if not bare:
        return f"http://127.0.0.1:{port}", cfg

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Bare:
        async def __call__(self, request) -> str:
            return "ok"

    serve.run(Bare.bind(), name="bare", route_prefix="/bare")

    from fastapi import FastAPI

    bare_api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(bare_api)
    class BareFastAPI:
        @bare_api.get("/")
        async def ok(self) -> str:
            return "ok"

    serve.run(BareFastAPI.bind(), name="bare-fastapi", route_prefix="/bare-fastapi")
    return f"http://127.0.0.1:{port}", cfg


def in_process_edge():
    """The edge replica's work without Serve: a function rendering one clip to MP4 bytes."""
    from storage.video import encode
    from vidgen.diffusion import sample
    from vidgen.pipelines.packages import capabilities, load_model, read_config
    from vidgen.pipelines.references import resolve_model
    from vidgen.precision import autocast_dtype
    from vidgen.quantize import quantize_int8
    from vidgen.text import TextEncoder

    folder = resolve_model(EDGE["model"])
    model = load_model(folder)
    if EDGE["int8"]:
        model = quantize_int8(model)
    caps = capabilities(read_config(folder))
    encoder = TextEncoder(dtype=EDGE["text_dtype"])
    dtype = autocast_dtype("auto")

    def render(seed: int) -> bytes:
        with torch.inference_mode():
            clip = sample(model, encoder.encode([PROMPT]), [seed], caps.steps, caps.guidance, dtype).frames[0]
        return encode(clip)

    return render


def part_a(base: str, clips: int) -> None:
    from ray import serve

    torch.set_num_threads(EDGE["torch_threads"])
    render = in_process_edge()
    edge = serve.get_deployment_handle("EdgeGenerator", app_name="vidgen")
    session = requests.Session()
    body = {"prompt": PROMPT, "quality": "draft"}
    for seed in range(2):  # warm all three
        render(seed)
        edge.render.remote(ClipRequest(prompt=PROMPT, seed=seed), stills=False).result()
        session.post(f"{base}/v1/videos/sync", json={**body, "seed": seed}).raise_for_status()
    times: dict[str, list[float]] = {"http": [], "handle": [], "local": []}
    for seed in range(clips):
        started = time.perf_counter()
        response = session.post(f"{base}/v1/videos/sync", json={**body, "seed": seed})
        times["http"].append(time.perf_counter() - started)
        assert response.headers["X-Vidgen-Tier"] == "edge", response.headers
        started = time.perf_counter()
        direct = edge.render.remote(ClipRequest(prompt=PROMPT, seed=seed), stills=False).result()
        times["handle"].append(time.perf_counter() - started)
        started = time.perf_counter()
        mp4 = render(seed)
        times["local"].append(time.perf_counter() - started)
        assert mp4 == response.content == direct["mp4"], "the served clip differs from the in-process one"
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"(a) edge clip, median of {clips}: HTTP {ms['http']:.1f} ms, the edge deployment's handle from this "
          f"process {ms['handle']:.1f} ms, in-process {ms['local']:.1f} ms -> HTTP overhead "
          f"{100 * (ms['http'] / ms['local'] - 1):+.1f}% (goal <= +3%; handle alone "
          f"{100 * (ms['handle'] / ms['local'] - 1):+.1f}%); the same MP4 bytes all three ways")


def part_b(base: str, n: int) -> None:
    session = requests.Session()
    urls = {"router": f"{base}/healthz", "bare": f"{base}/bare", "bare FastAPI": f"{base}/bare-fastapi/"}
    times: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(50):
        for url in urls.values():
            session.get(url).raise_for_status()
    for i in range(n):
        for name in (list(urls) if i % 2 else list(urls)[::-1]):
            started = time.perf_counter()
            session.get(urls[name]).raise_for_status()
            times[name].append(time.perf_counter() - started)
    p = {name: (1000 * percentile(t, 50), 1000 * percentile(t, 99)) for name, t in times.items()}
    print(f"(b) trivial request, {n} each: router p50 {p['router'][0]:.2f} ms p99 {p['router'][1]:.2f} ms; bare Serve "
          f"p50 {p['bare'][0]:.2f} ms p99 {p['bare'][1]:.2f} ms -> p50 {p['router'][0] / p['bare'][0]:.2f}x, "
          f"p99 {p['router'][1] / p['bare'][1]:.2f}x (goal <= 1.2x); a bare FastAPI deployment p50 "
          f"{p['bare FastAPI'][0]:.2f} ms p99 {p['bare FastAPI'][1]:.2f} ms (router / it: p50 "
          f"{p['router'][0] / p['bare FastAPI'][0]:.2f}x)")


def part_c(base: str, n: int) -> None:
    from storage.video import decode
    from vidgen import synth
    from vidgen.evaluation import eval_specs
    from vidgen.metrics import prompt_accuracy
    from vidgen.model import ModelConfig
    from vidgen.perceptual import perceptual_report
    from vidgen.pipelines.packages import read_config
    from vidgen.pipelines.references import resolve_model
    from vidgen.runs.feature_nets import efficientnet_lite0, video_feature_net, video_feature_net_version

    cfg = ModelConfig(**read_config(resolve_model("shapes-tiny"))["model"])
    specs = eval_specs((cfg.frames, cfg.height, cfg.width), "seen", n, seed=0)
    session = requests.Session()
    medians, accuracies, served = {}, {}, {}
    for quality, tier in (("draft", "edge"), ("high", "cloud")):
        latencies, clips = [], []
        for spec in specs:
            started = time.perf_counter()
            response = session.post(f"{base}/v1/videos/sync", json={"prompt": spec.caption, "quality": quality,
                                                               "seed": int(spec.background_seed)})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            assert response.headers["X-Vidgen-Tier"] == tier
            clips.append(decode(response.content))
        accuracy = prompt_accuracy(clips, [s.composition for s in specs]).to_dict()
        medians[tier], accuracies[tier], served[tier] = statistics.median(latencies), accuracy["all_three"], clips
        print(f"(c) {tier:5s}: {1000 * statistics.median(latencies):.0f} ms per clip (median of {n}, p99 "
              f"{1000 * percentile(latencies, 99):.0f}); prompt accuracy all three {accuracy['all_three']:.2f} "
              f"(colour {accuracy['colour']:.2f}, shape {accuracy['shape']:.2f}, direction "
              f"{accuracy['direction']:.2f}) [{synth.GENERATOR_VERSION}]")
    print(f"(c) edge vs cloud: {medians['cloud'] / medians['edge']:.1f}x faster (goal >= 8x); prompt accuracy "
          f"{100 * (accuracies['edge'] - accuracies['cloud']):+.1f} points (goal within 5)")
    reference, frame_net, video_net = synth.render_batch(specs), efficientnet_lite0(), video_feature_net()
    for tier, clips in served.items():
        report = perceptual_report(np.stack(clips), reference, frame_net, video_net)
        print(f"(c) {tier:5s}: FD-frames {report['fd_frames']:.1f}, FVD-vidgen {report['fvd_vidgen']:.2f} "
              f"({video_feature_net_version()}), against the world's clips of the same {n} specs")


def part_d(tmp: str, clients: int, clips: int, rounds: int, wait_s: float, threads: int) -> None:
    """Throughput of the edge tier at `clients` concurrent clients, with and without dynamic batching."""
    from concurrent.futures import ThreadPoolExecutor

    port = free_ports(1)[0]
    edge = {**EDGE, "torch_threads": threads, "max_ongoing_requests": clients}
    tiers = {"batched": {**edge, "max_batch_size": clients, "batch_wait_timeout_s": wait_s},
             "one by one": {**edge, "max_batch_size": 1}}
    results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in tiers}

    def client(base: str, seeds: list[int]) -> list[float]:
        session, latencies = requests.Session(), []
        for seed in seeds:
            started = time.perf_counter()
            response = session.post(f"{base}/v1/videos/sync", json={"prompt": PROMPT, "quality": "draft", "seed": seed})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            assert response.headers["X-Vidgen-Tier"] == "edge" and response.headers["content-type"] == "video/mp4"
        return latencies

    for r in range(rounds):
        for name in (tiers if r % 2 == 0 else reversed(tiers)):
            base, _ = start(tmp, tiers[name], port, bare=False)  # returns once every tier reports
            client(base, list(range(clients)))  # warm: replicas measured, connections open
            shares = [list(range(c, clips, clients)) for c in range(clients)]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = [t for part in pool.map(client, [base] * clients, shares) for t in part]
            results[name].append((clips / (time.perf_counter() - started), latencies))
    rate = {name: statistics.median(r for r, _ in runs) for name, runs in results.items()}
    for name, runs in results.items():
        latencies = [t for _, ts in runs for t in ts]
        print(f"(d) edge, {clients} clients, {name:<10}: {rate[name]:.2f} clips/s (median of {rounds} rounds: "
              f"{', '.join(f'{r:.2f}' for r, _ in runs)}), latency p50 {1000 * percentile(latencies, 50):.0f} ms "
              f"p99 {1000 * percentile(latencies, 99):.0f} ms")
    print(f"ratio batched / one by one: {rate['batched'] / rate['one by one']:.2f}x (goal >= 2.5x)")


def cpu_seconds_by_process() -> dict[int, tuple[str, float]]:
    """{pid: (process title, CPU seconds used so far)} of every process of this machine (Linux /proc): Ray names its
    workers by what they run (`ray::ServeReplica:vidgen:Router`, `ray::ProxyActor`)."""
    found, tick = {}, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        found[int(pid)] = (title, (int(fields[11]) + int(fields[12])) / tick)
    return found


def cpu_ms_a_clip(before: dict, after: dict, clips: int) -> dict[str, float]:
    """CPU ms a clip of the Serve processes between two `cpu_seconds_by_process` samples, by process title."""
    used: dict[str, float] = {}
    for pid, (title, seconds) in after.items():
        if title.startswith("ray::ServeReplica") or title.startswith("ray::ProxyActor"):
            name = title.removeprefix("ray::ServeReplica:vidgen:").removeprefix("ray::")
            used[name] = used.get(name, 0.0) + 1000 * (seconds - before.get(pid, (title, 0.0))[1]) / clips
    return used


def part_e(tmp: str, clients: int, clips: int, rounds: int, tier_calls: str) -> None:
    """The Videos API on the edge tier at `clients` concurrent clients: create latency beside a bare Serve request's
    under the same load, and clips/s through create + poll + download against the synchronous route."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    base, _ = start(tmp, {**EDGE, "max_ongoing_requests": clients}, settings={"tier_calls": tier_calls})
    create_latencies: list[float] = []
    bare_latencies: list[float] = []
    polls: list[int] = []

    def sync(session: requests.Session, seed: int) -> None:
        response = session.post(f"{base}/v1/videos/sync", json={"prompt": PROMPT, "quality": "draft", "seed": seed})
        response.raise_for_status()

    def through_api(session: requests.Session, seed: int) -> None:
        started = time.perf_counter()
        created = session.post(f"{base}/v1/videos", json={"prompt": PROMPT, "quality": "draft", "seed": seed})
        create_latencies.append(time.perf_counter() - started)
        created.raise_for_status()
        video, wait_ms = created.json(), int(created.headers["openai-poll-after-ms"])
        polled_times = 0
        while video["status"] in ("queued", "in_progress"):
            time.sleep(wait_ms / 1000)
            polled = session.get(f"{base}/v1/videos/{video['id']}")
            video, wait_ms = polled.json(), int(polled.headers["openai-poll-after-ms"])
            polled_times += 1
        assert video["status"] == "completed", video
        polls.append(polled_times)
        session.get(f"{base}/v1/videos/{video['id']}/content").raise_for_status()

    def client(way, seeds: list[int]) -> None:
        session = requests.Session()
        for seed in seeds:
            way(session, seed)

    def probe(stop: threading.Event, kept: list[float]) -> None:
        """A bare Serve request every 50 ms, in both ways' rounds: what any request costs under the same load."""
        session = requests.Session()
        while not stop.wait(0.05):
            started = time.perf_counter()
            session.get(f"{base}/bare").raise_for_status()
            kept.append(time.perf_counter() - started)

    ways = {"sync": sync, "videos api": through_api}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for way in ways.values():  # warm: replicas measured, connections open
        client(way, list(range(clients)))
    create_latencies.clear()
    polls.clear()
    for r in range(rounds):
        for name in (ways if r % 2 == 0 else reversed(ways)):
            shares = [list(range(c, clips, clients)) for c in range(clients)]
            stop = threading.Event()
            prober = threading.Thread(target=probe, args=(stop, bare_latencies if name == "videos api" else []))
            prober.start()
            started, used_before = time.perf_counter(), cpu_seconds_by_process()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, [ways[name]] * clients, shares))
            rates[name].append(clips / (time.perf_counter() - started))
            cpu[name].append(cpu_ms_a_clip(used_before, cpu_seconds_by_process(), clips))
            stop.set()
            prober.join()
    rate = {name: statistics.median(r) for name, r in rates.items()}
    for name, runs in rates.items():
        print(f"(e) edge, {clients} clients, {tier_calls} tier calls, {name:<10}: {rate[name]:.2f} clips/s (median of "
              f"{rounds} rounds: {', '.join(f'{r:.2f}' for r in runs)})")
    print(f"polls a clip: {statistics.mean(polls):.2f}")
    for name, rounds_used in cpu.items():
        means = {proc: statistics.mean(r.get(proc, 0.0) for r in rounds_used) for proc in rounds_used[0]}
        print(f"CPU ms a clip, {name:<10}: " + ", ".join(f"{proc} {ms:.1f}" for proc, ms in
                                                       sorted(means.items(), key=lambda kv: -kv[1]) if ms >= 0.5))
    print(f"create latency over {len(create_latencies)} creates: p50 {1000 * percentile(create_latencies, 50):.1f} ms"
          f" p99 {1000 * percentile(create_latencies, 99):.1f} ms (goal p99 <= 20 ms)")
    print(f"bare Serve request under the same load, {len(bare_latencies)} requests: p50 "
          f"{1000 * percentile(bare_latencies, 50):.1f} ms p99 {1000 * percentile(bare_latencies, 99):.1f} ms")
    print(f"ratio videos api / sync: {rate['videos api'] / rate['sync']:.2f}x (goal >= 0.9x)")


def part_f(tmp: str, trials: int) -> None:
    """Cancel latency: a running 24-step cloud render deleted once its progress says half its steps are done; the
    steps its replica sampled in all (from the replica's own count), so the steps sampled after the DELETE."""
    from ray import serve

    base, _ = start(tmp, bare=False)
    session, steps = requests.Session(), 24

    def cloud_steps_when_idle() -> int:
        board = serve.get_deployment_handle("TierBoard", app_name="vidgen")
        while True:
            cloud = [r for r in board.snapshot.remote().result() if r.tier == "cloud"]
            if cloud and not cloud[0].held:
                time.sleep(0.6)  # replicas report every 0.25 s: let the count settle
                return next(r for r in board.snapshot.remote().result() if r.tier == "cloud").steps_sampled
            time.sleep(0.05)

    after_delete = []
    for trial in range(trials):
        before = cloud_steps_when_idle()
        video = session.post(f"{base}/v1/videos", json={"prompt": PROMPT, "quality": "high", "steps": steps,
                                                         "seed": trial}).json()
        while True:  # the list answers at once with live progress (a retrieve of a running render is held)
            listed = session.get(f"{base}/v1/videos", params={"limit": 1}).json()["data"][0]
            if listed["progress"] >= 50:
                break
            assert listed["status"] in ("queued", "in_progress"), listed
        seen = steps * listed["progress"] // 100
        session.delete(f"{base}/v1/videos/{video['id']}").raise_for_status()
        sampled = cloud_steps_when_idle() - before
        after_delete.append(sampled - seen)
    print(f"(f) cancel of a running {steps}-step cloud render, {trials} trials: steps sampled after the DELETE "
          f"(at most) median {statistics.median(after_delete):g}, max {max(after_delete)} (of {steps}); "
          f"each: {after_delete}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="edge clips per side in (a)")
    parser.add_argument("--trivial", type=int, default=400, help="trivial requests per side in (b)")
    parser.add_argument("--accuracy-clips", type=int, default=48, help="clips per tier in (c)")
    parser.add_argument("--batching", action="store_true", help="run only (d), dynamic batching")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in (d), and the batch size")
    parser.add_argument("--batch-clips", type=int, default=64, help="clips per round and side in (d)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side in (d)")
    parser.add_argument("--batch-wait-s", type=float, default=0.05, help="batch_wait_timeout_s in (d)")
    parser.add_argument("--threads", type=int, default=1, help="the edge replica's torch threads in (d)")
    parser.add_argument("--videos-api", action="store_true", help="run only (e), the Videos API against the sync "
                                                                  "route (--clients, --batch-clips, --rounds)")
    parser.add_argument("--cancel", type=int, default=0, help="run only (f), this many cancels of a running render")
    parser.add_argument("--tier-calls", choices=("grpc", "object_store"), default="grpc",
                        help="how the router calls the tiers in (e) (ServeConfig.tier_calls)")
    parser.add_argument("--text-dtype", choices=("float32", "bfloat16", "auto"), default=EDGE["text_dtype"],
                        help="the edge tier's text encoder (TierConfig.text_dtype), in (a) in process too")
    args = parser.parse_args()
    EDGE["text_dtype"] = args.text_dtype
    logging.basicConfig(level=logging.WARNING)
    import ray
    from ray import serve

    tmp = tempfile.mkdtemp(prefix="vidgen-bench-", dir="/tmp")
    try:
        if args.videos_api:
            part_e(tmp, args.clients, args.batch_clips, args.rounds, args.tier_calls)
        elif args.cancel:
            part_f(tmp, args.cancel)
        elif args.batching:
            part_d(tmp, args.clients, args.batch_clips, args.rounds, args.batch_wait_s, args.threads)
        else:
            base, _ = start(tmp)
            part_a(base, args.clips)
            part_b(base, args.trivial)
            part_c(base, args.accuracy_clips)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
