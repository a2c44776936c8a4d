"""Gathering the trainable weights under ZeRO-3 after a validation forward, on two real gloo ranks (no Ray: the
DeepSpeed engine is what is tested). A forward with no backward after it leaves the parameters ZeRO-3 prefetched for
a backward that never comes in flight; gathering and re-partitioning them then failed with "Cannot partition a param
in flight" (found by benchmarks/finetune_memory.py on 2 Ray Train workers)."""

import os

import torch
import torch.multiprocessing as mp

from cluster.launcher import free_ports

WORLD = 2
# width 384: attention weights of 147k elements, over ZeRO-3's persistence threshold (100k), so partitioned
TRANSFORMER = {"patch_size": (1, 2, 2), "num_attention_heads": 4, "attention_head_dim": 96, "in_channels": 16,
               "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 512, "num_layers": 2,
               "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    import deepspeed
    import torch.distributed as dist
    from diffusers import WanTransformer3DModel

    from jobs._finetune_worker import _trainable_state
    from jobs.finetune_config import FinetuneConfig, finetune_deepspeed_config

    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**TRANSFORMER)
    cfg = FinetuneConfig(model="unused", data="unused", zero_stage=3, method="full", bucket_elements=100_000,
                         workers=WORLD)
    engine, *_ = deepspeed.initialize(model=transformer, model_parameters=list(transformer.parameters()),
                                      optimizer=torch.optim.AdamW(transformer.parameters(), lr=1e-4),
                                      config=finetune_deepspeed_config(cfg), dist_init_required=False)
    latents, text = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 8, 32)

    def validation_forward() -> None:  # as the worker's _validate: the module itself, no backward
        with torch.no_grad():
            engine.module(latents, torch.tensor([300]), text)

    validation_forward()
    for _ in range(3):
        engine.backward(engine(latents, torch.tensor([500]), text).sample.pow(2).mean())
        engine.step()
    validation_forward()
    state = _trainable_state(engine, zero_stage=3)
    results.put((rank, None if state is None else {k: tuple(v.shape) for k, v in state.items()}))
    dist.destroy_process_group()


def test_the_weights_gather_after_a_validation_forward_on_two_ranks():
    queue = mp.get_context("fork").SimpleQueue()
    mp.start_processes(_rank, args=(free_ports(1)[0], queue), nprocs=WORLD, start_method="fork")
    results = dict(queue.get() for _ in range(WORLD))
    assert results[1] is None  # rank 0 alone holds the gathered weights
    assert results[0]["blocks.0.attn1.to_q.weight"] == (384, 384)
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        names = [name for name, _ in WanTransformer3DModel(**TRANSFORMER).named_parameters()]
    assert sorted(results[0]) == sorted(names)
