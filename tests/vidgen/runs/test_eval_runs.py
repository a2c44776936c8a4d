"""Evaluation generates through a VideoPipeline, as render and serving do: the clips are the sampler's own for the
same prompts, seeds, steps, guidance and precision, and seconds per clip are the sampler's own timings."""

import numpy as np
import pytest
import torch

from vidgen.diffusion import SamplerConfig, sample
from vidgen.evaluation import eval_specs, score
from vidgen.model import VideoDiT
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.vidgen_package import VidgenPipeline
from vidgen.runs.eval_runs import evaluate_splits, generate_specs


@pytest.fixture(scope="module")
def micro_pipeline(micro_config, encoder):
    torch.manual_seed(0)
    return VidgenPipeline.from_model(VideoDiT(micro_config), SamplerConfig(steps=2, guidance=2.0), encoder,
                                     options=PipelineOptions(dtype="float32"))


def test_evaluation_clips_are_the_samplers_own_for_the_same_prompts_and_seeds(micro_pipeline, encoder):
    specs = eval_specs((8, 32, 32), "heldout", 5, seed=3)
    generated = generate_specs(micro_pipeline, specs)
    direct = sample(micro_pipeline.model, encoder.encode([s.caption for s in specs]),
                    [s.background_seed for s in specs], steps=2, guidance=2.0)
    assert np.array_equal(generated.frames, direct.frames) and generated.seeds == direct.seeds


def test_evaluation_reads_seconds_from_the_pipelines_timings(micro_pipeline, monkeypatch):
    batches = []
    generate = micro_pipeline.generate

    def recorded(clips, *args, **kwargs):
        out = generate(clips, *args, **kwargs)
        out.timings["sample_s"] = 0.5 * len(clips)  # what the sampler says it took is what gets reported
        batches.append(len(clips))
        return out

    monkeypatch.setattr(micro_pipeline, "generate", recorded)
    scores = evaluate_splits(micro_pipeline, clips=3, seed=1, splits=("seen", "paraphrase"))
    assert batches == [3, 3] and scores.seconds_per_clip == pytest.approx(0.5)
    assert set(scores.splits) == {"seen", "paraphrase"} and all(s["n"] == 3 for s in scores.splits.values())
    specs = eval_specs((8, 32, 32), "seen", 3, seed=1)
    assert scores.splits["seen"] == score(generate_specs(micro_pipeline, specs).frames, specs).to_dict()
