"""Fine-tuning's pure core on tiny random-weight Wan, LTX-Video and CogVideoX pipelines (examples/tiny_pipelines.py):
a LoRA learns a fixed batch, its validation loss is a fixed number, and the adapter it saves loads in plain diffusers
and changes what the pipeline makes; what no recipe or objective covers is refused by name."""

import numpy as np
import pytest
import torch

from vidgen.pipelines.diffusers_folder import text_limit
from vidgen.runs.finetune_lora import LoraSettings, add_lora, lora_state, lora_targets, save_lora
from vidgen.runs.finetune_objective import flow_sigmas, objective_of, training_loss, validation_loss
from vidgen.runs.finetune_recipes import RECIPES, encode_clips, encode_text, recipe_for, shape_rule

FAMILIES = ("wan", "ltx", "cogvideox")
CAPTIONS = ["a red square moving left", "a blue circle moving up"]
CLIP = (9, 32, 32)  # frames 4k+1; 32 is a multiple of every family's size rule (LTX checks 32)
SETTINGS = LoraSettings(rank=4, alpha=8)  # alpha != rank: the saved adapter must carry its scale
STEPS, LR = 30, 1e-2  # 30 AdamW steps take under a second per family on one CPU thread


def _load(folder):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(folder, local_files_only=True)


def _clips(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (len(CAPTIONS), *CLIP, 3), dtype=torch.uint8, generator=generator)


def _render(pipe, seed: int = 7) -> np.ndarray:
    return pipe(CAPTIONS[0], num_frames=CLIP[0], height=CLIP[1], width=CLIP[2], num_inference_steps=2,
                guidance_scale=1.0, max_sequence_length=text_limit(pipe), output_type="np",
                generator=torch.Generator().manual_seed(seed)).frames


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tiny_pipelines, tmp_path_factory):
    """A tiny pipeline whose transformer got a LoRA trained on one fixed batch, with what the test needs."""
    torch.manual_seed(0)
    pipe = _load(tiny_pipelines[request.param])
    latents, text = encode_clips(pipe, _clips()), encode_text(pipe, CAPTIONS)
    objective = objective_of(pipe)
    transformer = pipe.transformer
    trainable = add_lora(transformer, objective.recipe, SETTINGS)
    transformer.train()  # from_pretrained leaves models in eval mode
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=LR)
    before = validation_loss(objective, transformer, latents, text)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        loss = training_loss(objective, transformer, latents, text, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    adapter = tmp_path_factory.mktemp(f"adapter-{request.param}")
    save_lora(adapter, objective.pipeline_class, lora_state(transformer), objective.recipe, SETTINGS)
    return {"kind": request.param, "folder": tiny_pipelines[request.param], "objective": objective,
            "transformer": transformer, "latents": latents, "text": text, "trainable": trainable,
            "losses": losses, "before": before, "adapter": adapter}


def test_lora_training_lowers_the_training_and_validation_loss(trained):
    total = sum(p.numel() for p in trained["transformer"].parameters())
    assert 0 < trained["trainable"] < total / 5  # only the adapter trains
    losses = trained["losses"]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    after = validation_loss(trained["objective"], trained["transformer"], trained["latents"], trained["text"])
    assert after < 0.85 * trained["before"]


def test_the_validation_loss_is_the_same_number_every_time(trained):
    args = trained["objective"], trained["transformer"], trained["latents"], trained["text"]
    assert trained["transformer"].training
    assert validation_loss(*args) == validation_loss(*args)
    assert validation_loss(*args, seed=1) != validation_loss(*args)
    assert trained["transformer"].training  # put back in training mode


def test_the_adapter_loads_in_plain_diffusers_at_its_trained_scale_and_changes_the_output(trained):
    plain = _load(trained["folder"])
    without = _render(plain)
    plain.load_lora_weights(trained["adapter"])
    with_adapter = _render(plain)
    assert np.abs(with_adapter - without).max() > 1e-3
    assert np.array_equal(_render(plain), with_adapter)  # same seed, same frames
    # the loaded transformer is the trained one: same loss at the same fixed noise (alpha / rank came with it)
    args = trained["objective"], trained["latents"], trained["text"]
    assert validation_loss(args[0], plain.transformer, *args[1:]) == pytest.approx(
        validation_loss(args[0], trained["transformer"], *args[1:]), rel=1e-5)


@pytest.mark.parametrize("kind", FAMILIES)
def test_gradient_checkpointing_gives_the_lora_the_same_gradients(kind, tiny_pipelines):
    """What the shipped GPU config turns on: recomputing activations must not cut the adapter off its gradient
    (a frozen base feeds checkpointed blocks inputs that need no grad)."""
    pipe = _load(tiny_pipelines[kind])
    latents, text = encode_clips(pipe, _clips()), encode_text(pipe, CAPTIONS)
    objective = objective_of(pipe)
    transformer = pipe.transformer
    add_lora(transformer, objective.recipe, SETTINGS)
    transformer.train()
    with torch.no_grad():  # B starts at zero: move it so the adapter's A gets a gradient too
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)

    def lora_gradients() -> dict[str, torch.Tensor]:
        transformer.zero_grad()
        training_loss(objective, transformer, latents, text, torch.Generator().manual_seed(3)).backward()
        return {n: p.grad.clone() for n, p in transformer.named_parameters() if p.requires_grad}

    plain = lora_gradients()
    transformer.enable_gradient_checkpointing()
    checkpointed = lora_gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    assert all(plain[n].abs().sum() > 0 and torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_each_family_encodes_to_its_transformers_layout(tiny_pipelines):
    shapes = {"wan": (2, 16, 3, 4, 4), "ltx": (2, 3 * 8 * 8, 8), "cogvideox": (2, 3, 4, 4, 4)}
    for kind in FAMILIES:
        pipe = _load(tiny_pipelines[kind])
        latents = encode_clips(pipe, _clips())
        assert tuple(latents.values.shape) == shapes[kind], kind
        assert latents.grid[0] == (CLIP[0] - 1) // 4 + 1
        assert torch.equal(encode_clips(pipe, _clips()).values, latents.values)  # the posterior mean: no sampling
        text = encode_text(pipe, CAPTIONS)
        assert text.embeds.shape[:2] == (2, text_limit(pipe))
        assert (text.mask is not None) == (kind == "ltx")


def test_clips_outside_the_shape_rule_are_refused_with_the_shape_to_fit_them_to(tiny_pipelines):
    pipe = _load(tiny_pipelines["ltx"])
    rule = shape_rule(pipe)
    assert rule.fitted(12, 40, 70) == (9, 32, 64)  # frames 4k+1 cropped, sizes down to multiples of 32
    with pytest.raises(ValueError, match=r"frames 8 .*4k\+1.*\(5, 32, 32\)"):
        encode_clips(pipe, torch.zeros((1, 8, 32, 32, 3), dtype=torch.uint8))


def test_flow_matching_noise_levels_follow_the_schedulers_own_shift(tiny_pipelines):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    levels = np.linspace(1.0, 0.05, 20)
    wan = objective_of(_load(tiny_pipelines["wan"]))  # static shift 7
    wan.scheduler.set_timesteps(sigmas=levels)
    assert torch.allclose(flow_sigmas(wan, torch.tensor(levels), (3, 4, 4)).float(), wan.scheduler.sigmas[:-1])
    assert float(flow_sigmas(wan, torch.tensor([0.5]), (3, 4, 4))) == pytest.approx(7 * 0.5 / (1 + 6 * 0.5))

    pipe = _load(tiny_pipelines["ltx"])
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)  # as LTX-Video 0.9.x ships
    ltx = objective_of(pipe)
    grid = (3, 8, 8)
    mu = calculate_shift(3 * 8 * 8, 256, 4096, 0.5, 1.15)  # what LTXPipeline.__call__ passes for this grid
    ltx.scheduler.set_timesteps(sigmas=levels, mu=mu)
    assert torch.allclose(flow_sigmas(ltx, torch.tensor(levels), grid).float(), ltx.scheduler.sigmas[:-1])


def test_wan_with_the_unipc_scheduler_its_folders_ship_trains_by_flow_matching_at_its_flow_shift(tiny_pipelines):
    """Wan2.1's own diffusers folders ship UniPCMultistepScheduler set up for flow (flow_shift 3 at 480p)."""
    from diffusers import UniPCMultistepScheduler

    pipe = _load(tiny_pipelines["wan"])
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    wan = objective_of(pipe)
    assert wan.target == "flow"
    wan.scheduler.set_timesteps(8)  # the sampler's own schedule: linspace(1, 1/1000) shifted by flow_shift
    plain = torch.tensor(np.linspace(1, 1 / 1000, 9)[:-1])
    assert torch.allclose(flow_sigmas(wan, plain, (3, 4, 4)).float()[1:], wan.scheduler.sigmas[1:-1], atol=1e-6)
    pipe.scheduler = UniPCMultistepScheduler()  # epsilon on DDPM sigmas: not what Wan was trained with
    with pytest.raises(ValueError, match="use_flow_sigmas: true and prediction_type: flow_prediction"):
        objective_of(pipe)


def test_v_prediction_and_rotary_cogvideox_trains(tiny_pipelines):
    """CogVideoX 5B's setup: its own DDIM scheduler predicting v, and 3D RoPE from the pipeline's own code."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    pipe = _load(tiny_pipelines["cogvideox"])
    pipe.scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", snr_shift_scale=3.0)
    # RoPE splits each head 1/4 time, 3/8 height, 3/8 width, all even: heads of 16
    config = {**pipe.transformer.config, "use_rotary_positional_embeddings": True, "attention_head_dim": 16}
    torch.manual_seed(0)
    pipe.transformer = CogVideoXTransformer3DModel.from_config(config)
    objective = objective_of(pipe)
    assert objective.target == "v_prediction"
    latents, text = encode_clips(pipe, _clips()), encode_text(pipe, CAPTIONS)
    add_lora(pipe.transformer, objective.recipe, SETTINGS)
    pipe.transformer.train()
    optimizer = torch.optim.AdamW([p for p in pipe.transformer.parameters() if p.requires_grad], lr=LR)
    before = validation_loss(objective, pipe.transformer, latents, text)
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        loss = training_loss(objective, pipe.transformer, latents, text, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert validation_loss(objective, pipe.transformer, latents, text) < 0.85 * before


def test_feed_forward_targets_are_added_per_family():
    settings = LoraSettings(rank=4, feed_forward=True)
    assert lora_targets(recipe_for("WanPipeline"), settings)[-2:] == ["ffn.net.0.proj", "ffn.net.2"]
    assert lora_targets(recipe_for("LTXPipeline"), settings)[-2:] == ["ff.net.0.proj", "ff.net.2"]
    assert lora_targets(recipe_for("CogVideoXPipeline"), LoraSettings(targets=["to_q"])) == ["to_q"]
    with pytest.raises(ValueError, match="ranks"):
        LoraSettings(ranks=4)


def test_a_pipeline_class_without_a_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="TextToVideoSDPipeline has no fine-tuning recipe: vidgen fine-tunes "
                                         "WanPipeline, LTXPipeline, CogVideoXPipeline"):
        recipe_for("TextToVideoSDPipeline")
    assert set(RECIPES) == {"WanPipeline", "LTXPipeline", "CogVideoXPipeline"}


def test_a_two_expert_wan_is_refused(tiny_pipelines):
    pipe = _load(tiny_pipelines["wan"])
    two_experts = type(pipe)(**{**pipe.components, "transformer_2": pipe.transformer}, boundary_ratio=0.875)
    with pytest.raises(ValueError, match="two transformers"):
        objective_of(two_experts)


def test_an_unknown_scheduler_or_prediction_type_is_refused_by_name(tiny_pipelines):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    pipe = _load(tiny_pipelines["cogvideox"])
    pipe.scheduler = EulerDiscreteScheduler()
    with pytest.raises(ValueError, match="scheduler EulerDiscreteScheduler has no fine-tuning objective"):
        objective_of(pipe)
    pipe.scheduler = DDIMScheduler(prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type 'sample'"):
        objective_of(pipe)
