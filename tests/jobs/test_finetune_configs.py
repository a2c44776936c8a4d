"""The shipped fine-tuning config validates and makes the DeepSpeed config it says (the GPU path is configuration
only here: no GPU)."""

from pathlib import Path

from jobs.finetune_config import FinetuneConfig, finetune_deepspeed_config
from vidgen.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "finetune-wan-1.3b-lora.yaml"


def test_the_wan_1_3b_lora_config_validates_and_shards_as_it_says():
    cfg = load_config(FinetuneConfig, CONFIG)
    assert cfg.method == "lora" and cfg.lora.rank == 32 and cfg.use_gpu and cfg.precision == "bfloat16"
    assert cfg.gradient_checkpointing and cfg.max_shape == (81, 480, 832)
    deepspeed = finetune_deepspeed_config(cfg)
    assert deepspeed["zero_optimization"]["stage"] == 2
    assert deepspeed["train_micro_batch_size_per_gpu"] == 1 and deepspeed["gradient_accumulation_steps"] == 2


def test_offload_without_zero_is_refused_naming_the_fields():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="offload_optimizer needs zero_stage"):
        FinetuneConfig(model="m", data="d", zero_stage=0, offload_optimizer=True)
