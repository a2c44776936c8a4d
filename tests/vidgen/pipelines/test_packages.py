import pytest
import torch

from storage.package import verify_package
from vidgen.model import VideoDiT
from vidgen.pipelines.packages import ModelFileError, load_model, save_model


def _saved(tmp_path, micro_config):
    torch.manual_seed(0)
    model = VideoDiT(micro_config).eval()
    folder = save_model(model, tmp_path / "m", card="# card\n", extra={"sampler": {"steps": 4, "guidance": 2.0}})
    return model, folder


def test_round_trip_gives_identical_outputs(tmp_path, micro_config):
    model, folder = _saved(tmp_path, micro_config)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "card.md", "SHA256SUMS"}
    loaded = load_model(folder)
    x = torch.randn(1, *micro_config.latent_shape)
    args = (x, torch.tensor([0.5]), torch.randn(1, 16, 384), torch.ones(1, 16, dtype=torch.bool), torch.randn(1, 384))
    assert torch.equal(model(*args), loaded(*args))


def test_missing_weights_are_refused(tmp_path, micro_config):
    _, folder = _saved(tmp_path, micro_config)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="has no model.safetensors"):
        load_model(folder)


def test_tampered_weights_are_refused_before_loading(tmp_path, micro_config):
    _, folder = _saved(tmp_path, micro_config)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="model.safetensors does not match its SHA256SUMS"):
        verify_package(folder)


def test_tampered_card_is_refused_too_and_missing_folder_is_named(tmp_path, micro_config):
    _, folder = _saved(tmp_path, micro_config)
    (folder / "card.md").write_text("# edited\n")
    with pytest.raises(ModelFileError, match="card.md"):
        load_model(folder)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_float16_weights_halve_the_file_and_load_back_close(tmp_path, micro_config):
    model, full = _saved(tmp_path, micro_config)
    half = save_model(model, tmp_path / "half", weights_dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for a, b in zip(model.parameters(), loaded.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
