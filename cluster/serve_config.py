"""The serving configuration: one `ServeConfig`, read from the `args` of a Ray Serve deploy file.

`cluster/serve.yaml` is a plain `serve deploy` file whose application `import_path` is
`cluster.serve_app:build_app`; its `args` are this config. `vidgen serve up` reads the same file, so the two ways
of deploying cannot drift apart. No secret lives here: the bearer token comes from an environment variable (or only
its sha256 is written down).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cluster.placement import PolicyConfig
from vidgen.clip_request import DEFAULT_MAX_STEPS, MAX_PROMPT_CHARS, ClipDefaults, FieldProblem, Steps
from vidgen.pipelines.options import PipelineOptions

TierName = Literal["edge", "cloud"]
AdapterName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Autoscaling(BaseModel):
    """Ray Serve's `autoscaling_config` for one tier (the keys are Serve's own)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=1, description="at least one: the placement policy needs a replica to report")
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(1.0, gt=0, description="requests per replica Serve scales towards")
    metrics_interval_s: float | None = Field(None, gt=0)
    look_back_period_s: float | None = Field(None, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _min_below_max(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self

    def serve_dict(self) -> dict:
        return self.model_dump(exclude_none=True)


class QualityProbe(BaseModel):
    """A sampled check of the clips a tier serves, and the rule that rolls its alias back when they get worse.

    Every `every`-th served clip is probed: its temporal consistency (any model; `vidgen.metrics`) and, for a
    vidgen model of the built-in world and a prompt in its words, its prompt accuracy read back by the detector
    (all three of colour, shape and direction); the rolling mean over the last `window` probes is the tier's
    quality. The probe renders its own clip of the sampled prompt at the tier's default settings and a fixed seed,
    so a caller's settings (steps=1) cannot lower it. With `rollback`, a tier following an alias moves the alias to
    the newest version that passed the promotion gate once at least `min_probes` probes average below
    `min_quality` (recorded as an automatic rollback, with the numbers), at most once per `min_rollback_interval_s`.
    """

    model_config = ConfigDict(extra="forbid")

    every: int = Field(10, ge=1, description="probe one in this many served clips")
    window: int = Field(50, ge=1)
    min_probes: int = Field(20, ge=1)
    min_quality: float = Field(0.5, ge=0, le=1, description="rolling prompt accuracy below this is a regression")
    rollback: bool = Field(False, description="move the tier's alias back automatically on a regression (to the "
                                              "newest version that passed the promotion gate)")
    min_rollback_interval_s: float = Field(3600.0, ge=0, description="at most one automatic rollback of an alias "
                                                                     "in this many seconds, across all replicas")


def clip_work(frames: int, height: int, width: int, steps: int) -> int:
    """What one clip costs a replica: frames x height x width x steps. A render's latent tokens and decoded frames
    grow with frames x height x width, its sampler time with that times steps; time per unit of it is what a replica
    measures and placement estimates with."""
    return frames * height * width * steps


class WorkBudget(BaseModel):
    """What one clip may cost a tier: each dimension, and the work frames x height x width x steps. The router checks
    it before placement against the clip as that tier would render it (a size the request leaves out is the tier's
    default); a tier whose budget a request exceeds is not a placement option, and when no tier takes it the answer
    is 422 naming the field and the budget. A model's own maxima are far above what one replica survives (Wan allows
    1021x4096x4096: 512x the latent tokens of its default clip, a 206 GB float32 frames array). The defaults admit
    the diffusers video pipelines' own default clips (Wan 81x480x832, CogVideoX 49x480x720, LTX 161x512x704, 50
    steps) and refuse that one 270x over."""

    model_config = ConfigDict(extra="forbid")

    max_frames: int = Field(161, ge=1, description="frames of one clip")
    max_height: int = Field(1024, ge=1, description="pixels")
    max_width: int = Field(1024, ge=1, description="pixels")
    max_steps: Steps = Field(DEFAULT_MAX_STEPS, description="sampler steps of one clip")
    max_work: int = Field(4_000_000_000, ge=1, description="frames x height x width x steps of one clip")

    def problems(self, frames: int, height: int, width: int, steps: int, named: set[str]) -> list[FieldProblem]:
        """Each field of the clip (frames, height, width, steps) over the budget, and its work; `named` are the
        fields the request set itself (the others are the tier's defaults, and the message says so)."""
        problems = []
        for field, size in (("frames", frames), ("height", height), ("width", width), ("steps", steps)):
            most = getattr(self, f"max_{field}")
            if size > most:
                whose = "" if field in named else " (the tier's default)"
                problems.append(FieldProblem(field, f"{field}={size}{whose} is over the tier's work budget "
                                                    f"(work_budget.max_{field} {most}); ask for at most {most}"))
        work = clip_work(frames, height, width, steps)
        if work > self.max_work:
            problems.append(FieldProblem("work", f"frames x height x width x steps = {frames}x{height}x{width}x{steps}"
                                                 f" = {work:,} is over the tier's work budget (work_budget.max_work "
                                                 f"{self.max_work:,}); ask for fewer frames or steps, or a smaller "
                                                 "size"))
        return problems


class TierConfig(ClipDefaults):
    """One tier: which model it loads, how it samples (`ClipDefaults`: the defaults of requests that leave a setting
    out), what a replica asks Ray for, how it scales."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("shapes-tiny", description="model reference: a shipped name, a folder (vidgen package or "
                                                  "diffusers pipeline folder) or NAME@latest; a request goes only "
                                                  "to a tier whose model can make it")
    int8: bool = Field(False, description="int8 linear weights (vidgen.quantize; a diffusers model's transformer)")
    prompt_drift: bool = Field(True, description="score every prompt's distance from the training captions "
                                                 "(vidgen models of the built-in world; vidgen.drift)")
    drift_window: int = Field(200, ge=1, description="requests the rolling share of out-of-distribution prompts "
                                                     "covers")
    quality_probe: QualityProbe | None = Field(None, description="sampled quality checks of served clips and "
                                                                 "automatic rollback (vidgen models of the built-in "
                                                                 "world)")
    alias_poll_s: float = Field(10.0, gt=0, description="a model named by an alias or @latest is looked up this "
                                                        "often; a new version is loaded beside the old one and "
                                                        "swapped in between batches")
    pipeline: PipelineOptions = Field(default_factory=PipelineOptions,
                                      description="dtype and the memory switches of diffusers pipelines")
    max_batch_size: int = Field(1, ge=1, le=64, description="requests a replica samples together (Ray Serve "
                                                            "dynamic batching; those sharing shape and settings)")
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=10, description="how long a batch waits to fill once its "
                                                                      "first request arrived")
    torch_threads: int = Field(1, ge=1)
    text_cache_entries: int = Field(1024, ge=0, description="prompt embeddings a replica keeps (LRU, ~26 KB each, "
                                                            "keyed by the prompt's sha256: no prompt text is kept)")
    text_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="what a vidgen model's text encoder computes in (auto: bfloat16 on CPUs with bf16 "
                               "matmuls): bfloat16 encodes a new prompt ~1.45x faster there, embeddings ~1% off the "
                               "float32 ones the models were trained on")
    cost_per_clip: float = Field(ge=0, description="relative cost the placement policy minimises")
    regions: list[str] = Field(default_factory=list, description="regions it may serve; empty means any")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {edge: 1}")
    max_ongoing_requests: int = Field(4, ge=1, description="requests a replica holds; it samples one batch at a "
                                                           "time and queues the rest where it can count them")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    work_budget: WorkBudget = Field(default_factory=WorkBudget, description="what one clip may cost a replica of the "
                                                                            "tier; requests over it go elsewhere or "
                                                                            "get 422")
    loras: dict[AdapterName, str] = Field(default_factory=dict, description="LoRA adapters a request may name "
                                                                            "(`lora`: the name or the reference), "
                                                                            "name -> reference (folder, NAME@vN, "
                                                                            "NAME@ALIAS); each applied to its "
                                                                            "request alone (diffusers models)")
    max_loras: int = Field(2, ge=1, le=64, description="adapters a replica keeps loaded (least recently used "
                                                       "unloaded first); each is its peft layers' memory")

    @model_validator(mode="after")
    def _defaults_within_budget(self):
        """The tier's own default sizes must fit its budget, or every request naming none would be refused."""
        budget = self.work_budget
        for field in ("frames", "height", "width", "steps"):
            size = getattr(self, field)
            if size is not None and size > getattr(budget, f"max_{field}"):
                raise ValueError(f"{field} {size} is over work_budget.max_{field} {getattr(budget, f'max_{field}')}: "
                                 f"lower {field} or raise work_budget.max_{field}")
        sizes = (self.frames, self.height, self.width, self.steps)
        if None not in sizes and clip_work(*sizes) > budget.max_work:
            raise ValueError(f"the default clip {'x'.join(map(str, sizes))} (frames x height x width x steps) is "
                             f"{clip_work(*sizes):,}, over work_budget.max_work {budget.max_work:,}: lower the "
                             "defaults or raise work_budget.max_work")
        return self

    @model_validator(mode="after")
    def _batch_fits(self):
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(f"max_batch_size ({self.max_batch_size}) is above max_ongoing_requests "
                             f"({self.max_ongoing_requests}): a batch can never fill; raise max_ongoing_requests")
        return self

    @model_validator(mode="after")
    def _rollback_needs_an_alias(self):
        follows_latest = "@" in self.model and self.model.rpartition("@")[2] == "latest"
        if self.quality_probe and self.quality_probe.rollback and follows_latest:
            raise ValueError(f"quality_probe.rollback is on but model {self.model!r} follows @latest, which no "
                             "rollback can move: name an alias (e.g. NAME@production) or set quality_probe.rollback "
                             "false")
        return self

    @model_validator(mode="after")
    def _per_request_adapters_fit(self):
        if self.loras and self.int8:
            raise ValueError("loras: per-request adapters sit beside unquantized linear weights; set int8 false on "
                             "a tier that serves loras")
        if self.loras and self.pipeline.lora:
            raise ValueError(f"pipeline.lora fuses {self.pipeline.lora} into every render and loras applies one per "
                             "request: use one of them")
        return self

    def actor_options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources)}

    def adapter_reference(self, requested: str) -> str | None:
        """The reference of the adapter a request's `lora` names (one of `loras`, by name or by reference); None
        when the tier does not serve it."""
        if requested in self.loras:
            return self.loras[requested]
        return requested if requested in self.loras.values() else None


class Limits(BaseModel):
    """What one request may ask for; beyond it the API answers 422 naming the field."""

    model_config = ConfigDict(extra="forbid")

    max_prompt_chars: int = Field(200, ge=1, le=MAX_PROMPT_CHARS)
    max_steps: Steps = DEFAULT_MAX_STEPS
    body_timeout_s: float = Field(10.0, gt=0, description="a request body must have arrived this long after the "
                                                          "request began (else 408): trickling clients hold no slot")


class AuthConfig(BaseModel):
    """Bearer-token auth: one caller (the token from `token_env` on the router's node, or only its sha256 in this
    file), or several, each with its own token and limits, in a keys file (`cluster.callers`).

    There is deliberately no way to switch auth off here: only `vidgen serve up --insecure-local`, which serves on
    this machine's loopback, can (it passes `insecure_local` to `build_app` itself).
    """

    model_config = ConfigDict(extra="forbid")

    token_env: str = Field("VIDGEN_SERVE_TOKEN", description="the one caller's token, from this environment variable")
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="or only its sha256")
    keys_file: str | None = Field(None, min_length=1, description="a YAML keys file (key id -> token_sha256 and "
                                                                  "limits; a mounted Kubernetes Secret works) on "
                                                                  "the router's node: its callers replace the one "
                                                                  "token, and edits are picked up while serving")

    @model_validator(mode="after")
    def _one_way(self):
        if self.keys_file and self.token_sha256:
            raise ValueError("auth: keys_file and token_sha256 both set; give the token's sha256 as a key in the keys "
                             "file, or leave keys_file out")
        return self


class ServeConfig(BaseModel):
    """The whole serving application."""

    model_config = ConfigDict(extra="forbid")

    app_name: str = Field("vidgen", description="the application's `name` in the deploy file (set from it)")
    tiers: dict[TierName, TierConfig]
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    limits: Limits = Field(default_factory=Limits)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    renders_uri: str = Field("out/serve-renders", description="where asynchronous renders are written (folder or s3://)")
    sync_max_ms: float = Field(10_000, gt=0, description="POST /v1/videos/sync requests estimated to take longer "
                                                         "are answered 202 and a video to poll")
    async_lease_s: float = Field(30.0, gt=0, description="a queued render whose router stops is recorded failed "
                                                         "this long after its last lease renewal")
    renders_retention_s: float = Field(7 * 86_400, gt=0, description="asynchronous renders (status and MP4) are "
                                                                     "deleted this long after they were made")
    tier_calls: Literal["grpc", "object_store"] = Field(
        "grpc", description="how the router calls its tiers' replicas: over gRPC (Ray Serve's `_by_reference=False`: "
                            "less CPU a request) or through Ray's object store (Ray's default)")
    report_every_s: float = Field(0.25, gt=0, description="how often each replica reports its queue and timing")
    stale_after_s: float = Field(3.0, gt=0, description="a replica silent this long no longer counts")

    @model_validator(mode="after")
    def _both_tiers(self):
        missing = {"edge", "cloud"} - set(self.tiers)
        if missing:
            raise ValueError(f"tiers: {', '.join(sorted(missing))} missing; configure both edge and cloud")
        self.tiers = {name: self.tiers[name] for name in ("edge", "cloud")}  # one order in every listing
        return self


# The deploy files shipped inside this package (package data: a wheel install has them too), by name.
SHIPPED_DEPLOY_FILES = {"local": "serve-local.yaml", "cluster": "serve.yaml", "diffusers": "serve-diffusers.yaml"}


def deploy_file_path(config: str | Path) -> Path:
    """A deploy file: a path, or the name of a shipped one (`local`, `cluster`, `diffusers`), found in the installed
    package whatever the working directory."""
    path = Path(config)
    if path.is_file():
        return path
    if str(config) in SHIPPED_DEPLOY_FILES:
        return Path(__file__).resolve().parent / SHIPPED_DEPLOY_FILES[str(config)]
    names = ", ".join(SHIPPED_DEPLOY_FILES)
    raise FileNotFoundError(f"serve config {config} is neither a file nor a shipped config ({names}); pass --config "
                            f"local, or a copy of {Path(__file__).resolve().parent / 'serve.yaml'} edited for you")


def read_deploy_file(path: str | Path) -> tuple[dict, ServeConfig]:
    """A Serve deploy file (a path or a shipped name: `deploy_file_path`) -> (the whole file as a dict, the vidgen
    application's ServeConfig)."""
    path = deploy_file_path(path)
    deploy = yaml.safe_load(path.read_text()) or {}
    apps = [a for a in deploy.get("applications", []) if str(a.get("import_path", "")).startswith("cluster.serve_app")]
    if len(apps) != 1:
        raise ValueError(f"{path}: expected one application with import_path cluster.serve_app:build_app, "
                         f"found {len(apps)}")
    app = apps[0]
    return deploy, ServeConfig.model_validate({**(app.get("args") or {}), "app_name": app.get("name", "vidgen")})
