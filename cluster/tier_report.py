"""What a tier replica tells the `TierBoard` every `report_every_s`: what placement reads, and the model it serves.

One typed report, built by the replica (`cluster.tier_replica`), checked where it arrives (`cluster.tier_board`) and
read by attribute wherever it is used: the router places requests and answers GET /v1/models from it, and
`vidgen serve up` waits for it. Each fact is held once: the default steps and clip shape are the capabilities'.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cluster.serve_config import TierName
from vidgen.clip_request import Capabilities


class ServedModel(BaseModel):
    """The model a replica serves now, as GET /v1/models lists it (what it can make is `TierReport.capabilities`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the tier's model reference as configured (an alias or @latest stays one)")
    label: str = Field(description="NAME@vN#digest of the model loaded (an alias resolved)")
    folder: str = Field(description="the name of the model's folder")
    backend: str = Field(description="vidgen or diffusers")
    pipeline_class: str = Field(description="VideoDiT, or the diffusers pipeline class")
    int8: bool = Field(description="whether its linear weights are int8")
    max_batch_size: int = Field(ge=1, description="requests it samples together")


class TierReport(BaseModel):
    """One replica's state: what it holds and how fast it samples (what placement reads), what it serves, and what
    its monitors measure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: TierName
    replica: str = Field(description="Serve's replica id")
    actor_name: str = Field(description="the replica's Ray actor (namespace `serve`)")
    resources: dict[str, float] = Field(description="what Ray assigned the replica")
    held: int = Field(ge=0, description="requests waiting or sampling on the replica")
    rendered: int = Field(ge=0, description="clips it has made since it started")
    largest_batch: int = Field(ge=0, description="the most requests it has sampled together")
    steps_sampled: int = Field(0, ge=0, description="sampler steps it has run, one per step of each sampler call")
    seconds_per_work: float = Field(ge=0, description="sampling seconds per unit of work (frames x height x width x "
                                                      "steps of a clip, `cluster.serve_config.clip_work`): measured, a "
                                                      "running average over its renders; placement's estimate of a "
                                                      "clip is this times the clip's work")
    serves: ServedModel
    capabilities: Capabilities = Field(description="what its model makes, with the tier's defaults applied")
    prompt_ood_share: float | None = Field(None, ge=0, le=1, description="share of recent prompts out of its "
                                                                         "model's training distribution")
    quality: float | None = Field(None, description="rolling prompt accuracy of probed clips")
    temporal_consistency: float | None = Field(None, description="rolling temporal consistency of probed clips")
    follow_error: str | None = Field(None, description="the version its alias names that it cannot load (and keeps "
                                                       "serving the old one), with the error; None when all is well")
