"""What a clip to make is: one typed request with its bounds written once, and the one rule that resolves it
against what a model can make.

Manifest rows (`vidgen.manifest`) and HTTP bodies (`cluster.api`) are ClipRequests with a few fields of
their own. `resolve_clip` fills the defaults from the model's `Capabilities` and reports every field the model
cannot honour, so bulk render, serving and `vidgen generate` refuse the same things in the same words.
Pure pydantic (no torch), so the HTTP router can import it without loading model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

Steps = Annotated[int, Field(ge=1, le=1000, description="sampler steps (model evaluations) per clip")]
Guidance = Annotated[float, Field(ge=1.0, le=20.0, description="classifier-free guidance scale; 1 turns it off")]
Seed = Annotated[int, Field(ge=0, lt=2**63, description="noise seed: the same request and seed give the same clip")]
MAX_PROMPT_CHARS = 1000
# What one clip may cost by default where requests come from others (manifest rows, HTTP bodies): steps are the cost
# knob a caller controls; 64 is 2.7x the shipped model's 24 and above what diffusers' video pipelines default to.
DEFAULT_MAX_STEPS = 64


class ClipRequest(BaseModel):
    """One clip to make. Unset optional fields take the model's (or the run's) defaults."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                        description="what the clip shows, e.g. 'a red square moving right'")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                                        description="what the clip should not show (models that take one)")
    seed: Seed | None = None
    frames: int | None = Field(None, ge=1, le=1024, description="frames per clip; must be one the model makes")
    height: int | None = Field(None, ge=1, le=4096, description="pixels; must be one the model makes")
    width: int | None = Field(None, ge=1, le=4096, description="pixels; must be one the model makes")
    steps: Steps | None = None
    guidance: Guidance | None = None


class ClipDefaults(BaseModel):
    """A run's (bulk render) or a tier's (serving) defaults for what a request leaves out; None: the model's own.
    Configs that hold them inherit this class, so the keys stay at the top level of their YAML."""

    model_config = ConfigDict(extra="forbid")

    steps: Steps | None = Field(None, description="sampler steps of a request that names none; None: the model's")
    guidance: Guidance | None = Field(None, description="guidance of a request that names none; None: the model's")
    frames: int | None = Field(None, ge=1, description="frames of a request that names none; None: the model's")
    height: int | None = Field(None, ge=1, description="height of a request that names none; None: the model's")
    width: int | None = Field(None, ge=1, description="width of a request that names none; None: the model's")

    def applied_to(self, caps: Capabilities) -> Capabilities:
        """The model's capabilities with these defaults; a default size it cannot make is a ValueError naming it."""
        return caps.with_defaults(self.steps, self.guidance, self.frames, self.height, self.width)


def limit_problems(prompt: str, steps: int | None, max_steps: int,
                   max_prompt_chars: int = MAX_PROMPT_CHARS) -> list[FieldProblem]:
    """What a deployment's (or a run's) limits refuse of a request: steps are the cost a caller controls, and a
    prompt longer than the limit is refused rather than cut."""
    problems = []
    if len(prompt) > max_prompt_chars:
        problems.append(FieldProblem("prompt", f"{len(prompt)} characters; at most {max_prompt_chars}"))
    if steps is not None and steps > max_steps:
        problems.append(FieldProblem("steps", f"{steps}; at most {max_steps} (max_steps)"))
    return problems


class Dimension(BaseModel):
    """The sizes a model makes along one axis (frames, height or width): `default`, and every n in [min, max] with
    n % multiple == remainder. A fixed size has min == max; Wan's frames are 4k+1 (multiple 4, remainder 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: int = Field(ge=1)
    min: int = Field(ge=1)
    max: int = Field(ge=1)
    multiple: int = Field(1, ge=1)
    remainder: int = Field(0, ge=0)

    @classmethod
    def fixed(cls, size: int) -> Dimension:
        return cls(default=size, min=size, max=size)

    @model_validator(mode="after")
    def _default_admitted(self):
        if not self.admits(self.default):
            raise ValueError(f"default {self.default} is not one of {self.describe()}")
        return self

    def admits(self, n: int) -> bool:
        return self.min <= n <= self.max and n % self.multiple == self.remainder % self.multiple

    def nearest(self, n: int) -> int:
        """The admitted size closest to n (for the fix a refusal suggests)."""
        lowest = self.min + (self.remainder - self.min) % self.multiple
        highest = self.max - (self.max - self.remainder) % self.multiple
        return min(max(lowest + round((n - lowest) / self.multiple) * self.multiple, lowest), highest)

    def describe(self) -> str:
        if self.min == self.max:
            return str(self.min)
        if self.multiple == 1:
            return f"{self.min} to {self.max}"
        rule = f"{self.multiple}k+{self.remainder}" if self.remainder else f"multiples of {self.multiple}"
        lowest = self.min + (self.remainder - self.min) % self.multiple
        highest = self.max - (self.max - self.remainder) % self.multiple
        return f"{rule} from {lowest} to {highest}"


def _dimension(value):
    return Dimension.fixed(value) if isinstance(value, int) else value


SizeRule = Annotated[Dimension, BeforeValidator(_dimension)]


class Capabilities(BaseModel):
    """What a loaded model can make, and its defaults for what a request leaves out. `frames`, `height` and `width`
    take a Dimension, or an int for a model that makes only that size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: SizeRule
    height: SizeRule
    width: SizeRule
    steps: Steps
    guidance: Guidance
    negative_prompt: bool = False
    dtype: str = Field("float32", description="what the model computes in")
    device: str = Field("cpu", description="where it runs")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The default clip: (frames, height, width)."""
        return self.frames.default, self.height.default, self.width.default

    @property
    def fixed_shape(self) -> bool:
        return all(d.min == d.max for d in (self.frames, self.height, self.width))

    def describe(self) -> str:
        if self.fixed_shape:
            return "x".join(map(str, self.shape)) + " clips"
        return (f"frames {self.frames.describe()}, height {self.height.describe()}, "
                f"width {self.width.describe()}")

    def with_defaults(self, steps: int | None = None, guidance: float | None = None, frames: int | None = None,
                      height: int | None = None, width: int | None = None) -> Capabilities:
        """The same model with a run's (or a tier's) own defaults, where given; a default size the model cannot
        make is a ValueError naming it."""
        update: dict = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
        for name, size in (("frames", frames), ("height", height), ("width", width)):
            if size is not None:
                rule = getattr(self, name)
                if not rule.admits(size):
                    raise ValueError(f"{name}: {size} cannot be made by this model ({name} {rule.describe()})")
                update[name] = rule.model_copy(update={"default": size})
        return self.model_copy(update=update)


@dataclass(frozen=True)
class FieldProblem:
    """A request field the model cannot honour, and why (with the fix)."""

    field: str
    reason: str


@dataclass(frozen=True)
class ResolvedClip:
    """A request with every default filled in: exactly what the sampler is asked for."""

    prompt: str
    negative_prompt: str | None
    seed: int
    frames: int
    height: int
    width: int
    steps: int
    guidance: float

    @property
    def settings(self) -> tuple:
        """What clips sampled together in one batch must share."""
        return self.frames, self.height, self.width, self.steps, self.guidance


def resolve_clip(request: ClipRequest, caps: Capabilities, default_seed: int = 0
                 ) -> tuple[ResolvedClip | None, list[FieldProblem]]:
    """(the resolved clip, []) when the model can make `request`, else (None, every problem, field by field)."""
    problems = []
    for name, rule in (("frames", caps.frames), ("height", caps.height), ("width", caps.width)):
        asked = getattr(request, name)
        if asked is not None and not rule.admits(asked):
            if caps.fixed_shape:
                fix = f"which makes {caps.describe()}; leave {name} out or set it to {rule.default}"
            else:
                fix = f"which makes {name} {rule.describe()}; e.g. {rule.nearest(asked)}"
            problems.append(FieldProblem(name, f"{name}={asked} cannot be made by this model, {fix}"))
    if request.negative_prompt and not caps.negative_prompt:
        problems.append(FieldProblem("negative_prompt", "this model does not take negative prompts; leave the "
                                                        "field out"))
    if problems:
        return None, problems
    return ResolvedClip(prompt=request.prompt, negative_prompt=request.negative_prompt,
                        seed=default_seed if request.seed is None else request.seed,
                        frames=request.frames or caps.frames.default, height=request.height or caps.height.default,
                        width=request.width or caps.width.default,
                        steps=caps.steps if request.steps is None else request.steps,
                        guidance=caps.guidance if request.guidance is None else request.guidance), []


def field_problems(error: ValidationError, whole: str = "(request)") -> list[FieldProblem]:
    """pydantic's errors as FieldProblems: the dotted field name and the message (`unknown field` for extras); a
    problem of the whole object is named `whole`. The one formatter of pydantic errors in vidgen."""
    return [FieldProblem(".".join(str(p) for p in e["loc"]) or whole,
                         "unknown field" if e["type"] == "extra_forbidden" else e["msg"]) for e in error.errors()]


def problems_of(error: ValidationError) -> list[str]:
    """Each problem of a pydantic error as `field: reason`; a problem of the whole object is its reason alone,
    which names its own fields."""
    return [problem.reason if not problem.field else f"{problem.field}: {problem.reason}"
            for problem in field_problems(error, whole="")]
