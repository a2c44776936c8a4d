"""Data sets in a local folder: opening, verification, leakage, and the errors a user meets (no Ray needed)."""

import json

import pytest

from jobs.prepare import PrepareConfig, card_meta, make_shard, plan_shards
from storage.datasets import finish_dataset, leakage_problems, open_dataset, verify_dataset
from storage.objectstore import NotFound, ObjectStore, StorageError
from storage.shards import Index


def _make(out, n=60, per_shard=16, **overrides):
    """What `jobs.prepare.prepare` does, shard by shard in this process."""
    cfg = PrepareConfig(n=n, out=str(out), samples_per_shard=per_shard, **overrides)
    store = ObjectStore()
    entries = [make_shard(plan, cfg, store) for plan in plan_shards(cfg)]
    return finish_dataset(store, cfg.out, entries, *card_meta(cfg))


@pytest.fixture
def dataset(tmp_path):
    index = _make(tmp_path / "ds")
    return tmp_path / "ds", index


def test_a_fresh_data_set_verifies_clean(dataset):
    folder, index = dataset
    assert index.counts() == {"train": 54, "eval": 3, "heldout": 3}
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "index.json", "shards"]
    opened = open_dataset(ObjectStore(), str(folder))
    assert opened.card["splits"] == index.counts() and opened.card["license"] == "cc0-1.0"
    seen = []
    assert verify_dataset(ObjectStore(), str(folder), on_shard=lambda s, p: seen.append((s.name, p))) == []
    assert len(seen) == len(index.shards) and all(p == [] for _, p in seen)


def test_a_flipped_byte_is_named_by_shard_and_key(dataset):
    folder, index = dataset
    shard = folder / "shards" / index.shards[1].name
    data = bytearray(shard.read_bytes())
    data[512 + 100] ^= 0xFF  # inside the first member's data: the first sample's mp4
    shard.write_bytes(bytes(data))
    problems = verify_dataset(ObjectStore(), str(folder))
    key = index.shards[1].samples[0].key
    assert len(problems) == 1 and index.shards[1].name in problems[0] and repr(key) in problems[0]


def test_a_missing_or_unlisted_shard_and_an_edited_card_are_found(dataset):
    folder, index = dataset
    (folder / "shards" / index.shards[0].name).rename(folder / "shards" / "stray-00000.tar")
    problems = verify_dataset(ObjectStore(), str(folder))
    assert any(f"{index.shards[0].name} is listed in the index but missing" in p for p in problems)
    assert any("stray-00000.tar is not listed" in p for p in problems)
    card = folder / "README.md"
    card.write_text(card.read_text().replace("cc0-1.0", "mit"))
    with pytest.raises(StorageError, match="README.md does not match the sha256"):
        open_dataset(ObjectStore(), str(folder))


def test_shards_without_an_index_empty_and_missing_data_sets_say_what_to_do(dataset, tmp_path):
    folder, _ = dataset
    (folder / "index.json").unlink()  # as if prepare died before its last write
    with pytest.raises(StorageError, match=r"has \d+ shards but no index.json.*vidgen data prepare"):
        open_dataset(ObjectStore(), str(folder))
    with pytest.raises(NotFound, match="no data set at .*vidgen data prepare --n"):
        open_dataset(ObjectStore(), str(tmp_path / "nothing"))
    empty = tmp_path / "empty"
    finish_dataset(ObjectStore(), str(empty), [], *card_meta(PrepareConfig()))
    with pytest.raises(StorageError, match="is empty"):
        open_dataset(ObjectStore(), str(empty))


def test_leakage_check_catches_shared_content_and_heldout_compositions(dataset):
    folder, index = dataset
    assert leakage_problems(index, open_dataset(ObjectStore(), str(folder)).card["heldout_groups"]) == []
    raw = json.loads(index.to_json())
    train = next(s for s in raw["shards"] if s["split"] == "train")
    held = next(s for s in raw["shards"] if s["split"] == "heldout")
    held["samples"][0]["content_sha256"] = train["samples"][0]["content_sha256"]  # an eval clip copied from train
    train["samples"][1]["group"] = held["samples"][1]["group"]  # a held-out composition in train
    problems = leakage_problems(Index.from_json(json.dumps(raw).encode(), "index.json"),
                                [s["group"] for s in held["samples"]])
    assert any("leak: heldout sample" in p and "same content as train sample" in p for p in problems)
    assert any("leak: train sample" in p and "held-out composition" in p for p in problems)


def test_splits_use_their_own_compositions(dataset):
    folder, index = dataset
    opened = open_dataset(ObjectStore(), str(folder))
    groups = {split: {s.group for sh in index.shards if sh.split == split for s in sh.samples}
              for split in ("train", "heldout")}
    assert groups["heldout"] <= set(opened.card["heldout_groups"])
    assert not groups["train"] & set(opened.card["heldout_groups"])
