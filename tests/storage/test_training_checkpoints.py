"""Training checkpoints: hash lists authenticated by the run's key, links refused, a private copy verified before
anything may unpickle it."""

import json
import pickle
import shutil
from pathlib import Path

import pytest

from storage.training_checkpoints import CheckpointError, load_verified, new_key, verify_checkpoint, write_rank_sums

KEY = new_key()


class Payload:
    """Unpickling this writes a marker: what an attacker's .pt file would do when DeepSpeed loads it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def _checkpoint(folder: Path) -> Path:
    (folder / "deepspeed" / "state").mkdir(parents=True)
    (folder / "deepspeed" / "state" / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text(json.dumps({"step": 4}))
    write_rank_sums(folder, 0, KEY)
    return folder


def _load(folder: Path, world: int = 1, key: bytes = KEY) -> list[Path]:
    """What a resume does: copy, verify, and only then let the loader (DeepSpeed's, which unpickles) read."""
    loaded = []
    with load_verified(lambda dest: shutil.copytree(folder, dest, symlinks=True, dirs_exist_ok=True), world,
                       key) as copy:
        loaded.extend(sorted(copy.rglob("*.pt")))
    return loaded


def test_an_untouched_checkpoint_loads_from_a_private_copy(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt")
    loaded = _load(folder)
    assert [p.name for p in loaded] == ["mp_rank_00_model_states.pt"] and folder not in loaded[0].parents


def test_a_pickle_and_its_list_replaced_together_never_runs(tmp_path):
    """Whoever can write RUNS can rewrite a shard and its hash list, but not make the list's HMAC."""
    folder = _checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    (folder / "deepspeed" / "state" / "mp_rank_00_model_states.pt").write_bytes(pickle.dumps(Payload(marker)))
    write_rank_sums(folder, 0, new_key())  # a consistent list, under a key of the attacker's own
    with pytest.raises(CheckpointError, match="not written by this run"):
        _load(folder)
    (folder / "SHA256SUMS.rank0.hmac").write_bytes("é\xff not hex".encode())  # garbage: refused, not a crash
    with pytest.raises(CheckpointError, match="not written by this run"):
        _load(folder)
    assert not marker.exists()


def test_a_symlinked_folder_of_pickles_is_refused_even_with_a_valid_list(tmp_path):
    """The review's attack: deepspeed/ replaced by a link to pickles and the list rewritten to name only the
    state (a link hides its folder's files from a walk that does not follow links)."""
    folder = _checkpoint(tmp_path / "ckpt")
    evil = tmp_path / "evil"
    (evil / "state").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (evil / "state" / "mp_rank_00_model_states.pt").write_bytes(pickle.dumps(Payload(marker)))
    shutil.rmtree(folder / "deepspeed")
    staging = tmp_path / "staging"
    staging.mkdir()
    shutil.copy(folder / "trainer_state.json", staging)
    write_rank_sums(staging, 0, KEY)  # even made with the run's own key, by someone who has it
    for sums in staging.glob("SHA256SUMS.rank0*"):
        shutil.copy(sums, folder)
    (folder / "deepspeed").symlink_to(evil, target_is_directory=True)
    for check in (lambda: verify_checkpoint(folder, 1, KEY), lambda: _load(folder)):
        with pytest.raises(CheckpointError, match="symbolic link"):
            check()
    assert not marker.exists()


def test_a_changed_unlisted_or_hard_linked_file_is_refused(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt")
    states = folder / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    states.write_bytes(b"weightz")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        _load(folder)
    states.write_bytes(b"weights")
    (folder / "deepspeed" / "extra.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="files no rank recorded"):
        _load(folder)
    (folder / "deepspeed" / "extra.pt").unlink()
    (tmp_path / "outside.pt").hardlink_to(states)  # a file someone else can still change after the check
    with pytest.raises(CheckpointError, match="hard link"):
        verify_checkpoint(folder, 1, KEY)
    with pytest.raises(CheckpointError, match="ranks \\[0\\], expected 0..1"):
        _load(_checkpoint(tmp_path / "two"), world=2)
