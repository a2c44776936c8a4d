"""Aliases in the registry, on a local folder and on the loopback S3: moves by compare-and-swap (two racing moves,
one wins), the history, and NAME@ALIAS resolving wherever a reference is accepted."""

import threading

import pytest

from storage.aliases import AliasConflict, aliases, current, history, move_alias
from storage.objectstore import StorageError
from storage.registry import parse_ref, pull, push, resolve
from tests.storage.test_registry import _package


def test_an_alias_moves_by_compare_and_swap_and_keeps_its_history(store_root, tmp_path):
    store, root = store_root
    model = f"{root}/shapes"
    for i, weights in enumerate((b"first", b"second", b"third")):
        push(_package(tmp_path / f"p{i}", weights), model, store)
    first = move_alias(model, "production", "v1", "initial release", store, by="ci")
    assert (first.revision, first.previous, first.by) == (1, None, "ci")
    assert resolve(f"{model}@production", store=store).version == "v1"
    folder = pull("shapes@production", root, store, cache_dir=tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == b"first" and folder.name.startswith("v1-")

    barrier, outcomes = threading.Barrier(2), []

    def mover(version):
        barrier.wait()
        try:
            outcomes.append(move_alias(model, "production", version, "race", store, expected=1).version)
        except AliasConflict as e:
            outcomes.append(e)

    threads = [threading.Thread(target=mover, args=(v,)) for v in ("v2", "v3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1 and sum(isinstance(o, AliasConflict) for o in outcomes) == 1
    assert "decide again" in str(next(o for o in outcomes if isinstance(o, AliasConflict)))
    now = current(model, "production", store)
    assert (now.version, now.previous, now.revision) == (winners[0], "v1", 2)
    with pytest.raises(AliasConflict, match="moved to revision 2"):
        move_alias(model, "production", "v1", "stale", store, expected=1)
    move_alias(model, "staging", "v3", "try it", store)
    assert aliases(model, store) == ["production", "staging"]
    assert [r.version for r in history(model, "production", store)] == ["v1", winners[0]]


def test_alias_names_and_unknown_aliases_are_clear_errors(store_root, tmp_path):
    store, root = store_root
    push(_package(tmp_path / "p"), f"{root}/shapes", store)
    assert parse_ref("shapes@production").version == "production"
    with pytest.raises(StorageError, match="no alias 'canary'.*vidgen models promote shapes@vN --to canary"):
        resolve(f"{root}/shapes@canary", store=store)
    for bad in ("latest", "v3", "Prod", "has space"):
        with pytest.raises(StorageError, match="not an alias name"):
            move_alias(f"{root}/shapes", bad, "v1", "", store)
