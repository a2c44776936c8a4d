"""Precomputed latents on the tiny random-weight Wan pipeline (examples/tiny_pipelines.py): clips are fitted to shapes
the model makes and bucketed, every batch holds one bucket and trains, the latents read back are the ones the
pipeline encodes, and a second run with the same key finds the set without one VAE call."""

import numpy as np
import pytest
import torch

from storage.latent_shards import latent_set_location, read_shard
from vidgen.runs.finetune_objective import objective_of, training_loss
from vidgen.runs.finetune_precompute import (
    Clip,
    cache_key,
    clips_from_columns,
    fit_clip,
    fitted_shape,
    latent_batches,
    precompute_latents,
)
from vidgen.runs.finetune_recipes import encode_clips, encode_text

MODEL, DATA = "a" * 64, "b" * 64  # digests: what the fine-tuning job reads from the folder and the data set index


@pytest.fixture(scope="module")
def wan(tiny_pipelines):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(tiny_pipelines["wan"], local_files_only=True)


def _clip(key: str, shape: tuple[int, int, int], split: str = "train", seed: int = 0) -> Clip:
    frames = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return Clip(key, f"caption of {key}", split, frames)


def _corpus() -> list[Clip]:
    """Three 9x32x32 train clips, two 12x40x72 train clips (Wan makes neither 12 frames nor 40x72: fitted to
    9x32x64) and one held-out 9x32x32 clip, interleaved as a reader yields them."""
    return [_clip("s0", (9, 32, 32), seed=0), _clip("w0", (12, 40, 72), seed=1), _clip("s1", (9, 32, 32), seed=2),
            _clip("e0", (9, 32, 32), split="eval", seed=3), _clip("w1", (12, 40, 72), seed=4),
            _clip("s2", (9, 32, 32), seed=5)]


class _CountingEncode:
    """Counts the calls of the pipeline's real VAE encode, which it then makes."""

    def __init__(self, encode):
        self.encode, self.calls = encode, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.encode(*args, **kwargs)


@pytest.fixture
def counted_vae(wan):
    original = wan.vae.encode
    wan.vae.encode = counter = _CountingEncode(original)
    yield counter
    wan.vae.encode = original


def test_a_clip_of_a_shape_the_model_cannot_make_is_fitted(wan):
    assert fitted_shape(wan, (12, 40, 72)) == (9, 32, 64)  # frames 4k+1, sizes multiples of 16
    assert fitted_shape(wan, (12, 40, 72), max_shape=(5, 64, 64)) == (5, 32, 64)
    frames = _clip("x", (12, 40, 72)).frames
    fitted = fit_clip(frames, (9, 32, 64))
    assert fitted.shape == (9, 32, 64, 3) and fitted.dtype == np.uint8
    # a uniform frame stays uniform when resized, and the first 9 frames are the ones kept
    flat = np.broadcast_to(np.arange(12, dtype=np.uint8)[:, None, None, None] * 20, (12, 40, 72, 3))
    assert np.array_equal(fit_clip(flat, (9, 32, 64))[:, 5, 7, 0], np.arange(9) * 20)
    assert np.array_equal(fit_clip(frames[:9, :32, :64], (9, 32, 64)), frames[:9, :32, :64])


def test_clips_of_two_shapes_land_in_two_buckets_and_every_batch_holds_one_and_trains(wan, tmp_path):
    latent_set = precompute_latents(wan, _corpus(), _store(), str(tmp_path), cache_key(wan, MODEL, DATA),
                                    batch_size=2)
    buckets = {(s.split, s.shape): s.samples for s in latent_set.index.shards}
    assert buckets == {("train", (9, 32, 32)): 3, ("train", (9, 32, 64)): 2, ("eval", (9, 32, 32)): 1}
    objective, generator = objective_of(wan), torch.Generator().manual_seed(0)
    seen = []
    for batch in latent_batches(_store(), latent_set, batch_size=2, seed=0):
        frames, height, width = batch.shape
        assert tuple(batch.latents.values.shape) == (len(batch.keys), 16, 3, height // 8, width // 8)
        assert batch.latents.grid == (3, height // 8, width // 8)
        assert batch.text.embeds.shape[0] == len(batch.keys) and batch.text.mask is None
        assert {k[0] for k in batch.keys} == {"s" if width == 32 else "w"}  # one bucket per batch
        assert torch.isfinite(training_loss(objective, wan.transformer, batch.latents, batch.text, generator))
        seen += batch.keys
    assert sorted(seen) == ["s0", "s1", "s2", "w0", "w1"]  # every train sample once; eval stays out
    assert [b.keys for b in latent_batches(_store(), latent_set, 2, ("eval",))] == [["e0"]]


def test_the_latents_read_back_are_the_ones_the_pipeline_encodes(wan, tmp_path):
    corpus = _corpus()
    latent_set = precompute_latents(wan, corpus, _store(), str(tmp_path), cache_key(wan, MODEL, DATA),
                                    batch_size=2)
    entry = next(s for s in latent_set.index.shards if s.shape == (9, 32, 64))
    shard = read_shard(_store(), latent_set, entry)
    clips = [c for c in corpus if c.key in shard.keys]
    fitted = torch.from_numpy(np.stack([fit_clip(c.frames, (9, 32, 64)) for c in clips]))
    assert shard.keys == [c.key for c in clips] and shard.captions == [c.caption for c in clips]
    np.testing.assert_allclose(shard.latents, encode_clips(wan, fitted).values.numpy(), atol=1e-5)
    np.testing.assert_allclose(shard.text_embeds, encode_text(wan, shard.captions).embeds.numpy(), atol=1e-5)


def test_the_same_key_finds_the_set_and_the_vae_is_not_called_again(wan, store_root, counted_vae):
    store, root = store_root
    key = cache_key(wan, MODEL, DATA)
    first = precompute_latents(wan, _corpus(), store, root, key, batch_size=2)
    assert counted_vae.calls == 4  # 3 square clips in 2 batches, 2 wide in 1, 1 held out in 1
    assert first.location == latent_set_location(root, key)

    again = precompute_latents(wan, _corpus(), store, root, key, batch_size=2)
    assert counted_vae.calls == 4 and again.location == first.location
    assert again.index.to_json() == first.index.to_json()

    precompute_latents(wan, _corpus(), store, root, cache_key(wan, "c" * 64, DATA), batch_size=2)
    assert counted_vae.calls == 8  # other weights: another key, encoded afresh


def test_a_precompute_that_stopped_midway_is_no_cache_hit(wan, tmp_path, counted_vae):
    key = cache_key(wan, MODEL, DATA)

    def stops_midway():
        yield from _corpus()[:3]
        raise OSError("the node went away")

    with pytest.raises(OSError, match="went away"):
        precompute_latents(wan, stops_midway(), _store(), str(tmp_path), key, batch_size=2, samples_per_shard=1)
    assert counted_vae.calls == 3  # three one-clip shards were written, no index
    latent_set = precompute_latents(wan, _corpus(), _store(), str(tmp_path), key, batch_size=2)
    assert counted_vae.calls == 7 and latent_set.index.num_samples == 6


def test_a_model_that_takes_a_text_mask_gets_it_back_with_its_batches(tiny_pipelines, tmp_path):
    from diffusers import DiffusionPipeline

    ltx = DiffusionPipeline.from_pretrained(tiny_pipelines["ltx"], local_files_only=True)
    clips = [_clip("a", (9, 32, 32)), _clip("b", (10, 40, 40), seed=1)]  # both fit 9x32x32 (LTX: multiples of 32)
    latent_set = precompute_latents(ltx, clips, _store(), str(tmp_path), cache_key(ltx, MODEL, DATA))
    [batch] = list(latent_batches(_store(), latent_set, batch_size=4))
    assert batch.keys == ["a", "b"] and batch.text.mask is not None
    assert torch.equal(batch.text.mask, encode_text(ltx, batch.captions).mask.cpu())
    loss = training_loss(objective_of(ltx), ltx.transformer, batch.latents, batch.text, torch.Generator())
    assert torch.isfinite(loss)


def test_clips_come_from_the_column_batches_the_data_set_stream_yields():
    video = np.zeros((2, 9, 32, 32, 3), dtype=np.uint8)
    columns = {"key": np.array(["k0", "k1"]), "caption": np.array(["a", "b"]), "split": np.array(["train", "eval"]),
               "video": video}
    clips = list(clips_from_columns([columns]))
    assert [(c.key, c.caption, c.split, c.frames.shape) for c in clips] == [
        ("k0", "a", "train", (9, 32, 32, 3)), ("k1", "b", "eval", (9, 32, 32, 3))]
    with pytest.raises(ValueError, match="video_dtype='uint8'"):
        list(clips_from_columns([{**columns, "video": video.astype(np.float32)}]))


def _store():
    from storage.objectstore import ObjectStore

    return ObjectStore()
