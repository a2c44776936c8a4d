"""What a clip to make is: one typed request with its bounds written once, and the one rule that resolves it
against what a model can make.

Manifest rows (`vidgen.runtime.manifest`) and HTTP bodies (`cluster.api`) are ClipRequests with a few fields of
their own. `resolve_clip` fills the defaults from the model's `Capabilities` and reports every field the model
cannot honour, so bulk render, serving and `vidgen generate` refuse the same things in the same words.
Pure pydantic (no torch), so the HTTP router can import it without loading model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class Capabilities(BaseModel):
    """What a loaded model can make, and its defaults for what a request leaves out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int
    height: int
    width: int
    steps: Steps
    guidance: Guidance
    negative_prompt: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.frames, self.height, self.width

    def with_defaults(self, steps: int | None = None, guidance: float | None = None) -> Capabilities:
        """The same model with a run's (or a tier's) own defaults for steps and guidance, where given."""
        return self.model_copy(update={k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None})


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
    for name, native in zip(("frames", "height", "width"), caps.shape, strict=True):
        asked = getattr(request, name)
        if asked is not None and asked != native:
            problems.append(FieldProblem(name, f"{name}={asked} cannot be made by this model, which makes "
                                               f"{caps.frames}x{caps.height}x{caps.width} clips; leave {name} out "
                                               f"or set it to {native}"))
    if request.negative_prompt and not caps.negative_prompt:
        problems.append(FieldProblem("negative_prompt", "this model does not take negative prompts; leave the "
                                                        "field out"))
    if problems:
        return None, problems
    return ResolvedClip(prompt=request.prompt, negative_prompt=request.negative_prompt,
                        seed=default_seed if request.seed is None else request.seed,
                        frames=caps.frames, height=caps.height, width=caps.width,
                        steps=caps.steps if request.steps is None else request.steps,
                        guidance=caps.guidance if request.guidance is None else request.guidance), []


def field_problems(error: ValidationError) -> list[FieldProblem]:
    """pydantic's errors as FieldProblems: the dotted field name and the message (`unknown field` for extras)."""
    return [FieldProblem(".".join(str(p) for p in e["loc"]) or "(request)",
                         "unknown field" if e["type"] == "extra_forbidden" else e["msg"]) for e in error.errors()]
