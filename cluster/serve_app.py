"""`build_app`: the Serve application builder named by `import_path` in `cluster/serve.yaml`.

Four deployments: the `Router` (FastAPI ingress, `cluster.router`), the `TierBoard` the replicas report to
(`cluster.tier_board`), and each tier's replicas (`cluster.tier_replica`), deployed as `EdgeGenerator` and
`CloudGenerator` (the names operators see in `vidgen serve status`), each with the tier's own autoscaling,
resources and `max_ongoing_requests`. `serve deploy cluster/serve.yaml` and `vidgen serve up` both end here.
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application

from cluster.router import Router
from cluster.serve_config import ServeConfig
from cluster.tier_board import TierBoard
from cluster.tier_replica import TierReplica

DEPLOYMENT_NAMES = {"edge": "EdgeGenerator", "cloud": "CloudGenerator"}


def build_app(args: dict, insecure_local: bool = False) -> Application:
    """The bound application for a ServeConfig given as a dict (the deploy file's `args`).

    `insecure_local` (no bearer token) is not part of the file: only `vidgen serve up --insecure-local` passes it,
    after checking that it serves on loopback.
    """
    cfg = ServeConfig.model_validate(args)
    board = serve.deployment(TierBoard, name="TierBoard", num_replicas=1, ray_actor_options={"num_cpus": 0},
                             max_ongoing_requests=1000,
                             logging_config={"enable_access_log": False}).bind(cfg.stale_after_s)
    tiers = {}
    for name, tier in cfg.tiers.items():
        deployment = serve.deployment(TierReplica, name=DEPLOYMENT_NAMES[name],
                                      ray_actor_options=tier.actor_options(),
                                      autoscaling_config=tier.autoscaling.serve_dict(),
                                      max_ongoing_requests=tier.max_ongoing_requests,
                                      logging_config={"enable_access_log": False})  # the router logs each request
        tiers[name] = deployment.bind(name, tier.model_dump(mode="json"), board, cfg.report_every_s)
    return Router.bind(cfg.model_dump(mode="json"), tiers["edge"], tiers["cloud"], board, insecure_local)
