"""vidgen: the model core (the modules directly in this folder: model, diffusion, text encoder, built-in world,
metrics, training step; pure PyTorch, no Ray or storage), the composition layer (`vidgen.pipelines`: load and run any
model by reference; `vidgen.runs`: what a run makes and keeps) and the CLI (`vidgen.cli`). README.md's piece table
maps the rest of the repository."""

import logging

# torchao (int8 weights, and imported by transformers when installed) logs one warning per CUDA kernel library it
# cannot load on a CPU-only machine, and its import makes torch warn twice about how it registers two enums: noise
# on every process start.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
