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


def test_layers_apply_in_one_order_file_then_set_then_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 0.002\nseed: 1\nmax_steps: 7\nflow: {t_mean: 0.2}\n")
    cfg = load_config(TrainConfig, path, ["seed=2", "max_steps=8", "flow.t_std=2"],
                      {"max_steps": 9, "flow.t_mean": 0.4, "max_minutes": None})
    assert (cfg.lr, cfg.seed, cfg.max_steps, cfg.flow.t_mean, cfg.flow.t_std) == (0.002, 2, 9, 0.4, 2.0)
    assert cfg.max_minutes == TrainConfig().max_minutes  # a flag that was not given (None) leaves the key alone


def test_a_path_is_always_a_file_and_a_mapping_source_is_not_changed(tmp_path):
    plain = tmp_path / "tiny"  # no suffix: a str would name the preset, a Path names this file
    plain.write_text("lr: 0.003\n")
    assert load_config(TrainConfig, plain).lr == 0.003
    saved = {"flow": {"t_mean": 0.1}}
    assert load_config(TrainConfig, saved, ["flow.t_mean=0.9"]).flow.t_mean == 0.9
    assert saved == {"flow": {"t_mean": 0.1}}


def test_errors_name_the_key_and_the_fix_on_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid config 'tiny': lrr: unknown field; did you mean 'lr'\?$"):
        load_config(TrainConfig, "tiny", ["lrr=1"])
    with pytest.raises(ConfigError, match=r"flow.x: unknown field; the keys here are t_mean, t_std"):
        load_config(TrainConfig, "tiny", ["flow.x=1"])
    with pytest.raises(ConfigError, match=r"invalid TrainConfig: batch_size: Input should be greater than"):
        load_config(TrainConfig, None, flags={"batch_size": 0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: .* at line 2") as err:
        load_config(TrainConfig, bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
