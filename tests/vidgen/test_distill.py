"""Trajectory distillation's core: the sampler's kept states, the student's timesteps, and that training moves the
student's few-step clips towards the teacher's many-step ones (micro model, in seconds)."""

from __future__ import annotations

import copy

import pytest
import torch

from vidgen.diffusion import initial_noise, sample
from vidgen.distill import DistillConfig, Trajectories, distill, student_times, teacher_steps_at
from vidgen.model import VideoDiT


@pytest.fixture(scope="module")
def teacher(micro_config):
    torch.manual_seed(0)
    return VideoDiT(micro_config).eval()


def test_the_student_timesteps_lie_on_the_teacher_grid():
    assert student_times(4) == [1.0, 0.75, 0.5, 0.25]
    assert teacher_steps_at(4, 24) == [0, 6, 12, 18]
    assert teacher_steps_at(1, 24) == [0]
    with pytest.raises(ValueError, match="must divide"):
        teacher_steps_at(5, 24)


def test_sample_keeps_the_states_before_the_asked_steps_and_the_final_latents(teacher, encoder):
    text = encoder.encode(["a red square moving right", "a blue circle moving up"])
    out = sample(teacher, text, [3, 4], steps=6, guidance=2.0, keep_steps=(0, 3))
    assert sorted(out.states) == [0, 3]
    assert torch.equal(out.states[0], initial_noise([3, 4], teacher.config.latent_shape))  # step 0 is the noise z
    assert out.x0.shape == (2, *teacher.config.latent_shape)
    plain = sample(teacher, text, [3, 4], steps=6, guidance=2.0)
    assert (plain.frames == out.frames).all()  # keeping states changes nothing about the clips
    with pytest.raises(ValueError, match="keep_steps"):
        sample(teacher, text, [3, 4], steps=6, keep_steps=(6,))


def _trajectories(teacher, encoder, n: int, steps: int, k: int) -> Trajectories:
    prompts = ["a red square moving right", "a green circle moving down", "a blue triangle moving left"] * n
    prompts = prompts[:n]
    text = encoder.encode(prompts)
    out = sample(teacher, text, list(range(n)), steps=steps, guidance=3.0, keep_steps=tuple(teacher_steps_at(k, steps)))
    return Trajectories(out.states[0], out.states, out.x0, text, steps)


@pytest.mark.parametrize("own_rollout_share", [0.0, 1.0])
def test_distillation_brings_the_student_few_step_result_towards_the_teacher(teacher, encoder, own_rollout_share):
    k, data = 2, _trajectories(teacher, encoder, 12, 12, 2)

    def error(model) -> float:
        with torch.inference_mode():
            x, times = data.z, student_times(k)
            for i, t in enumerate(times):
                x0_hat = model(x, torch.full((len(x),), t), data.text.tokens, data.text.mask, data.text.pooled)
                t_next = times[i + 1] if i + 1 < k else 0.0
                x = x + (t_next - t) * (x - x0_hat) / t if t_next > 0 else x0_hat
        return float(((x - data.x0) ** 2).mean())

    before = error(teacher)
    frozen = copy.deepcopy(teacher.state_dict())
    student, history = distill(teacher, data, DistillConfig(steps=k, train_steps=60, batch_size=12, lr=2e-3,
                                                            own_rollout_share=own_rollout_share))
    assert error(student) < 0.6 * before
    assert len(history) == 60 and any(h["own_rollout"] for h in history) == (own_rollout_share > 0)
    assert all(torch.equal(v, teacher.state_dict()[n]) for n, v in frozen.items())  # the teacher is untouched
    assert all(torch.equal(v, student.state_dict()[n]) for n, v in frozen.items() if n.startswith("autoencoder."))
