"""The per-tier work budget, the estimate that scales with the clip, and the retry after a replica death, without a
cluster: the pure pieces the router runs (`check_limits`, `tier_states`, `retries_after_replica_death`)."""

import json
from pathlib import Path

import pytest

from cluster.api import VideoRequest, check_limits
from cluster.router import retries_after_replica_death, tier_states
from cluster.serve_config import Limits, ServeConfig, TierConfig, WorkBudget, clip_work, read_deploy_file
from cluster.tier_report import ServedModel, TierReport
from vidgen.clip_request import Capabilities, Dimension

# What a Wan folder reports (vidgen.pipelines.diffusers_folder): frames 4k+1 up to 1021, sides multiples of 16 up
# to 4096, the pipeline's own default clip 81x480x832 at 50 steps.
WAN = Capabilities(frames=Dimension(default=81, min=1, max=1021, multiple=4, remainder=1),
                   height=Dimension(default=480, min=16, max=4096, multiple=16),
                   width=Dimension(default=832, min=16, max=4096, multiple=16), steps=50, guidance=5.0)
TINY = Capabilities(frames=8, height=32, width=32, steps=24, guidance=3.0)  # the shipped shapes-tiny
PROMPT = "a red square moving right"
SHIPPED = ["cluster/serve.yaml", "cluster/serve-local.yaml", "cluster/serve-diffusers.yaml"]


def test_the_reproduction_is_refused_naming_each_field_and_the_budget():
    """1021x4096x4096 at 64 steps: within Wan's own maxima and the deployment's max_steps, 512x the default clip's
    latent tokens; the default budget refuses it field by field, and its work."""
    huge = VideoRequest(prompt=PROMPT, frames=1021, height=4096, width=4096, steps=64)
    assert check_limits(huge, Limits(), WAN) == []  # what the model and the limits alone allow
    problems = {p.field: p.reason for p in check_limits(huge, Limits(), WAN, WorkBudget())}
    assert set(problems) == {"frames", "height", "width", "work"}
    assert "frames=1021 is over the tier's work budget (work_budget.max_frames 161)" in problems["frames"]
    assert "work_budget.max_height 1024" in problems["height"] and "work_budget.max_width 1024" in problems["width"]
    assert "1021x4096x4096x64 = 1,096,290,402,304" in problems["work"]
    assert "work_budget.max_work 4,000,000,000" in problems["work"]


def test_a_request_within_the_budget_passes():
    budget = WorkBudget()
    assert check_limits(VideoRequest(prompt=PROMPT), Limits(), WAN, budget) == []  # Wan's own 81x480x832x50
    longest = VideoRequest(prompt=PROMPT, frames=161, height=480, width=832, steps=50)  # 3.2e9
    assert check_limits(longest, Limits(), WAN, budget) == []
    more_steps = longest.model_copy(update={"steps": 64})  # 161x480x832x64 = 4.1e9: each field fits, the work not
    assert [p.field for p in check_limits(more_steps, Limits(), WAN, budget)] == ["work"]


def test_a_request_naming_no_size_is_judged_at_the_tiers_own_default():
    short = WorkBudget(max_frames=49)
    problems = check_limits(VideoRequest(prompt=PROMPT), Limits(), WAN, short)
    assert [(p.field, p.reason.split(";")[0]) for p in problems] == \
        [("frames", "frames=81 (the tier's default) is over the tier's work budget (work_budget.max_frames 49)")]
    assert check_limits(VideoRequest(prompt=PROMPT, frames=49), Limits(), WAN, short) == []
    assert check_limits(VideoRequest(prompt=PROMPT), Limits(), TINY, short) == []  # another tier: its own default


def _default_clip(tier: TierConfig) -> tuple[int, int, int, int]:
    """(frames, height, width, steps) a shipped tier renders for a request naming none: its own defaults, else its
    shipped model's."""
    shipped = {}
    folder = Path("vidgen/shipped_models") / tier.model
    if folder.is_dir():
        config = json.loads((folder / "config.json").read_text())
        shipped = {**{k: config["model"][k] for k in ("frames", "height", "width")},
                   "steps": config["sampler"]["steps"]}
    return tuple(getattr(tier, k) or shipped[k] for k in ("frames", "height", "width", "steps"))


@pytest.mark.parametrize("path", SHIPPED)
def test_the_shipped_default_clips_fit_their_tiers_budgets_with_room(path):
    _, cfg = read_deploy_file(path)
    for name, tier in cfg.tiers.items():
        clip, budget = _default_clip(tier), tier.work_budget
        assert clip_work(*clip) * 4 <= budget.max_work, (name, clip)
        assert all(size <= getattr(budget, f"max_{k}")
                   for k, size in zip(("frames", "height", "width", "steps"), clip, strict=True)), (name, clip)
    cloud = cfg.tiers["cloud"].work_budget
    huge = VideoRequest(prompt=PROMPT, frames=1021, height=4096, width=4096, steps=cfg.limits.max_steps)
    assert {p.field for p in check_limits(huge, cfg.limits, WAN, cloud)} >= {"frames", "height", "width", "work"}


def test_a_tier_whose_own_defaults_exceed_its_budget_is_a_config_error():
    with pytest.raises(ValueError, match="frames 81 is over work_budget.max_frames 49"):
        TierConfig(cost_per_clip=1, frames=81, work_budget={"max_frames": 49})
    with pytest.raises(ValueError, match=r"81x480x832x50 .* is 1,617,408,000, over work_budget.max_work"):
        TierConfig(cost_per_clip=1, frames=81, height=480, width=832, steps=50, work_budget={"max_work": 10**9})
    with pytest.raises(ValueError, match="max_wrok"):
        TierConfig(cost_per_clip=1, work_budget={"max_wrok": 1})


def _report(tier: str, caps: Capabilities, seconds_per_work: float) -> TierReport:
    served = ServedModel(model="m", label="m@v1#0", folder="m", backend="diffusers", pipeline_class="WanPipeline",
                         int8=False, max_batch_size=1)
    return TierReport(tier=tier, replica=f"{tier}-1", actor_name=f"{tier}-actor", resources={}, held=0, rendered=1,
                      largest_batch=1, seconds_per_work=seconds_per_work, serves=served, capabilities=caps)


def test_the_estimate_scales_with_the_clip_asked_of_each_tier():
    cfg = ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1}, "cloud": {"cost_per_clip": 10}}})
    anyframes = WAN.model_copy(update={"frames": Dimension(default=33, min=1, max=1021)})
    rate = 20.0 / clip_work(33, 480, 832, 50)  # the cloud's default clip measured at 20 s
    reports = [_report("edge", TINY, 1e-6), _report("cloud", anyframes, rate)]
    idle = {"edge": 0, "cloud": 0}

    def estimates(**fields) -> dict[str, float]:
        request = VideoRequest(prompt=PROMPT, **fields)
        return {s.name: s.estimated_ms() for s in tier_states(cfg, reports, idle, request)}

    unsized = estimates()  # each tier at its own default clip, not the other's
    assert unsized["cloud"] == pytest.approx(20_000)
    assert unsized["edge"] == pytest.approx(1000 * 1e-6 * clip_work(8, 32, 32, 24))
    assert estimates(frames=66)["cloud"] == pytest.approx(2 * estimates(frames=33)["cloud"])
    assert estimates(frames=33, steps=25)["cloud"] == pytest.approx(unsized["cloud"] / 2)
    assert estimates(frames=161, height=960, width=960, steps=64)["cloud"] > cfg.sync_max_ms  # answered 202
    models = {s.name: s.seconds_per_clip for s in tier_states(cfg, reports, idle)}  # GET /v1/models: default clips
    assert models["cloud"] == pytest.approx(20.0)


def test_a_render_larger_than_the_tiers_default_is_not_retried_after_its_replica_died():
    assert retries_after_replica_death(WAN, VideoRequest(prompt=PROMPT))  # what every replica rendered at load
    assert retries_after_replica_death(WAN, VideoRequest(prompt=PROMPT, frames=33, steps=30))
    assert not retries_after_replica_death(WAN, VideoRequest(prompt=PROMPT, steps=51))
    assert not retries_after_replica_death(WAN, VideoRequest(prompt=PROMPT, frames=85))
    assert not retries_after_replica_death(WAN, VideoRequest(prompt=PROMPT, frames=1021, height=4096, width=4096))
