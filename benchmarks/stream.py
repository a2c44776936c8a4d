"""How fast does the Ray Data stream deliver verified, decoded clips, against two plain baselines?

In one run, on the same shards:
  ray-data   `storage.stream.read_dataset` from the loopback S3 endpoint: read + verify + decode, in Ray workers
  raw-read   a sequential pyarrow read of the same shard bytes from the same endpoint (no verify, no decode)
  dataloader a plain PyTorch DataLoader (2 worker processes) over the same shards copied to local disk, doing the
             same verify + decode per sample with the same functions

    python benchmarks/stream.py --n 2000 --repeats 3

Prints samples/s and MB/s (of shard bytes) for each, and the ratios ray-data / raw-read and ray-data / dataloader
(medians over the repeats).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cluster.launcher import free_ports
from jobs.connection import connect_ray
from jobs.prepare import PrepareConfig, prepare
from storage.datasets import open_dataset
from storage.loopback import LoopbackS3
from storage.objectstore import ObjectStore
from storage.shards import ShardEntry, VerifiedSample, verified_samples
from storage.stream import ReaderConfig, read_dataset
from storage.video import decode


class LocalShards(IterableDataset):
    """The plain baseline: each DataLoader worker reads its share of local tar shards, verifies and decodes."""

    def __init__(self, folder: Path, entries: list[ShardEntry]):
        self.folder, self.entries = folder, entries

    def __iter__(self):
        info = get_worker_info()
        mine = self.entries[info.id::info.num_workers] if info else self.entries
        for entry in mine:
            for sample in verified_samples((self.folder / entry.name).read_bytes(), entry):
                if isinstance(sample, VerifiedSample):
                    clip = decode(sample.mp4).astype(np.float32) / 127.5 - 1.0
                    yield torch.from_numpy(clip), sample.meta["caption"]


def time_ray_data(uri: str, s3, video_dtype: str) -> int:
    count = 0
    cfg = ReaderConfig(splits=None, video_dtype=video_dtype, s3=s3)
    for batch in read_dataset(uri, cfg).iter_batches(batch_size=64, batch_format="numpy"):
        count += len(batch["key"])
    return count


def time_raw_read(store: ObjectStore, uris: list[str]) -> int:
    return sum(len(store.read(u)) for u in uris)


def time_dataloader(folder: Path, entries: list[ShardEntry], workers: int) -> int:
    loader = DataLoader(LocalShards(folder, entries), batch_size=64, num_workers=workers)
    return sum(len(videos) for videos, _ in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="clips in the data set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (Ray gets as many CPUs)")
    parser.add_argument("--video-dtype", default="float32", choices=["float32", "uint8"],
                        help="what the Ray stream emits (the DataLoader always makes float32, as the trainer needs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    connect_ray(None, num_cpus=args.workers)
    with LoopbackS3(free_ports(1)[0]) as s3, tempfile.TemporaryDirectory() as tmp:
        store = ObjectStore(s3.config)
        uri = f"s3://bench-{uuid.uuid4().hex[:8]}/shapes"
        prepare(PrepareConfig(n=args.n, out=uri, s3=s3.config))
        dataset = open_dataset(store, uri)
        entries = dataset.index.shards
        uris = [dataset.shard_uri(e) for e in entries]
        local = Path(tmp)
        for entry, shard_uri in zip(entries, uris, strict=True):
            (local / entry.name).write_bytes(store.read(shard_uri))
        total_bytes = sum(e.bytes for e in entries)
        runs = {"ray-data": [], "raw-read": [], "dataloader": []}
        for _ in range(args.repeats):
            for name, run in (("ray-data", lambda: time_ray_data(uri, s3.config, args.video_dtype)),
                              ("raw-read", lambda: time_raw_read(store, uris)),
                              ("dataloader", lambda: time_dataloader(local, entries, args.workers))):
                start = time.perf_counter()
                result = run()
                runs[name].append(time.perf_counter() - start)
                expected = total_bytes if name == "raw-read" else args.n
                assert result == expected, f"{name} delivered {result}, expected {expected}"
    ray.shutdown()
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(f"{args.n} clips of 8x32x32 in {len(entries)} shards, {total_bytes / 1e6:.2f} MB; "
          f"median of {args.repeats} passes each")
    print(f"{'path':<12}{'samples/s':>12}{'MB/s':>10}{'seconds':>10}")
    for name, seconds in median.items():
        print(f"{name:<12}{args.n / seconds:>12.0f}{total_bytes / 1e6 / seconds:>10.1f}{seconds:>10.2f}")
    print(f"ratio ray-data / raw-read (throughput):   {median['raw-read'] / median['ray-data']:.3f}")
    print(f"ratio ray-data / dataloader (throughput): {median['dataloader'] / median['ray-data']:.3f}")


if __name__ == "__main__":
    main()
