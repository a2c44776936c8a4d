import pytest

from vidgen.config import ConfigError, apply_override, load_config, preset_names
from vidgen.training import TrainConfig


def test_every_shipped_config_loads_and_names_a_model_preset():
    assert {"tiny", "small", "base"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(TrainConfig, name)
        cfg.model_config_resolved()


def test_overrides_are_typed():
    cfg = load_config(TrainConfig, "tiny", ["lr=5e-4", "flow.t_mean=0.5", "model.depth=2", "max_minutes=null"])
    assert cfg.lr == 5e-4 and cfg.flow.t_mean == 0.5 and cfg.max_minutes is None
    assert cfg.model_config_resolved().depth == 2


def test_unknown_keys_presets_and_bad_values_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(TrainConfig, "tiny", ["learning_rate=1"])
    with pytest.raises(ConfigError, match="flow.t_sdt"):
        load_config(TrainConfig, "tiny", ["flow.t_sdt=1"])
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(TrainConfig, "huge")
    with pytest.raises(ConfigError, match="preset"):
        load_config(TrainConfig, "tiny", ["preset=huge"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(TrainConfig, "tiny", ["batch_size=0"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_override({}, "lr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(TrainConfig, str(bad))
