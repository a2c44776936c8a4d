"""vidgen: the model and everything pure PyTorch (see docs/ARCHITECTURE in ../shared/design and README.md)."""

import logging

# torchao (int8 weights, and imported by transformers when installed) logs one warning per CUDA kernel library it
# cannot load on a CPU-only machine, and its import makes torch warn twice about how it registers two enums: noise
# on every process start.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
