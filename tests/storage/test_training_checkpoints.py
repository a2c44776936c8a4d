"""Training checkpoints: hash lists authenticated by the run's key for one checkpoint of one run, links refused, a
private copy verified before anything may unpickle it; run keys derived from a machine's runs secret."""

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest

from storage.training_checkpoints import (
    CheckpointError,
    CheckpointId,
    RunKeyError,
    load_verified,
    new_key,
    run_key,
    verify_checkpoint,
    write_rank_sums,
)

KEY = new_key()
STEP4 = CheckpointId("tiny-20261205-120000", 4, 1)


class Payload:
    """Unpickling this writes a marker: what an attacker's .pt file would do when DeepSpeed loads it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def _checkpoint(folder: Path, checkpoint: CheckpointId = STEP4, ranks: tuple[int, ...] = (0,)) -> Path:
    for rank in ranks:
        (folder / "deepspeed" / "state").mkdir(parents=True, exist_ok=True)
        (folder / "deepspeed" / "state" / f"mp_rank_{rank:02d}_model_states.pt").write_bytes(b"weights")
        staging = folder.parent / f"{folder.name}-rank{rank}"  # each rank hashes only what it wrote
        shutil.copytree(folder / "deepspeed", staging / "deepspeed",
                        ignore=lambda _, names, r=rank: [n for n in names if n.startswith("mp_rank_") and
                                                         n != f"mp_rank_{r:02d}_model_states.pt"])
        if rank == 0:
            (staging / "trainer_state.json").write_text(json.dumps({"step": checkpoint.step}))
        write_rank_sums(staging, rank, KEY, checkpoint)
        shutil.copytree(staging, folder, dirs_exist_ok=True)
    return folder


def _load(folder: Path, checkpoint: CheckpointId = STEP4, key: bytes = KEY) -> list[Path]:
    """What a resume does: copy, verify, and only then let the loader (DeepSpeed's, which unpickles) read."""
    loaded = []
    with load_verified(lambda dest: shutil.copytree(folder, dest, symlinks=True, dirs_exist_ok=True), checkpoint,
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
    write_rank_sums(folder, 0, new_key(), STEP4)  # a consistent list, under a key of the attacker's own
    with pytest.raises(CheckpointError, match="not written for this checkpoint"):
        _load(folder)
    (folder / "SHA256SUMS.rank0.hmac").write_bytes("é\xff not hex".encode())  # garbage: refused, not a crash
    with pytest.raises(CheckpointError, match="not written for this checkpoint"):
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
    write_rank_sums(staging, 0, KEY, STEP4)  # even made with the run's own key, by someone who has it
    for sums in staging.glob("SHA256SUMS.rank0*"):
        shutil.copy(sums, folder)
    (folder / "deepspeed").symlink_to(evil, target_is_directory=True)
    for check in (lambda: verify_checkpoint(folder, STEP4, KEY), lambda: _load(folder)):
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
        verify_checkpoint(folder, STEP4, KEY)
    with pytest.raises(CheckpointError, match="ranks \\[0\\], expected 0..1"):
        _load(_checkpoint(tmp_path / "two"), CheckpointId(STEP4.run, 4, 2))


def test_an_older_checkpoint_or_another_runs_cannot_stand_in_and_two_cannot_be_mixed(tmp_path):
    """Every list is authenticated for its run, its checkpoint folder (its step) and its rank of how many: a
    genuine, older checkpoint copied over the newest one, a checkpoint of another run under the same key, and
    one rank's list from an older checkpoint beside the other's from the newer are all refused."""
    step8 = CheckpointId(STEP4.run, 8, 2)
    older = _checkpoint(tmp_path / STEP4.folder_name, CheckpointId(STEP4.run, 4, 2), ranks=(0, 1))
    newest = _checkpoint(tmp_path / step8.folder_name, step8, ranks=(0, 1))
    assert [p.name for p in _load(newest, step8)] == ["mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]
    replayed = shutil.copytree(older, tmp_path / "replayed")
    with pytest.raises(CheckpointError, match=f"not written for this checkpoint \\({step8.folder_name} of run"):
        _load(replayed, step8)
    with pytest.raises(CheckpointError, match="not written for this checkpoint"):
        _load(newest, CheckpointId("tiny-another-run", 8, 2))
    mixed = shutil.copytree(newest, tmp_path / "mixed")
    for name in ("SHA256SUMS.rank1", "SHA256SUMS.rank1.hmac", "deepspeed/state/mp_rank_01_model_states.pt"):
        shutil.copy(older / name, mixed / name)
    with pytest.raises(CheckpointError, match="hash list of rank 1 was not written for this checkpoint"):
        _load(mixed, step8)
    assert CheckpointId.of_folder(STEP4.run, "checkpoint_step00000008", 2) == step8
    with pytest.raises(CheckpointError, match="not one this vidgen writes"):
        CheckpointId.of_folder(STEP4.run, "checkpoint_2026-12-05_12-00-00.000000", 2)


def test_a_run_key_is_derived_from_the_machine_secret_and_never_needs_to_travel(tmp_path, monkeypatch):
    """Driver and workers derive the same key from the same secret (environment or file); another run or another
    secret gives another key; a machine with no secret says how to give it one, and only a new run makes one."""
    monkeypatch.setenv("VIDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIDGEN_RUNS_SECRET", raising=False)
    with pytest.raises(RunKeyError, match="no runs secret on this machine: set VIDGEN_RUNS_SECRET"):
        run_key("s3://runs", "tiny-1")
    made = run_key("s3://runs", "tiny-1", create_secret=True)
    secret_file = tmp_path / "home" / "runs-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and len(made) == 32
    assert run_key("s3://runs", "tiny-1") == made != run_key("s3://runs", "tiny-2") != run_key("s3://other", "tiny-1")
    monkeypatch.setenv("VIDGEN_RUNS_SECRET", secret_file.read_text())  # a node given the secret at `ray start`
    monkeypatch.setenv("VIDGEN_HOME", str(tmp_path / "elsewhere"))
    assert run_key("s3://runs", "tiny-1") == made
    monkeypatch.setenv("VIDGEN_RUNS_SECRET", "another cluster's secret")
    assert run_key("s3://runs", "tiny-1") != made
    assert not os.path.exists(tmp_path / "elsewhere")
