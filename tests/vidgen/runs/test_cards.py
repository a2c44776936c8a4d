"""Every card a run writes has the one lineage schema: git commit, command and seed under `lineage`, beside what the
model was made from (distilled, imported and distributed cards: tests/jobs/test_distill.py,
tests/vidgen/pipelines/test_model_import.py, tests/jobs/test_train.py)."""

from storage.cards import git_commit, parse_card

SCHEMA = {"git_commit", "command", "seed"}


def test_a_trained_models_card_keeps_its_lineage_under_lineage(micro_model_dir):
    folder, summary = micro_model_dir
    meta, body = parse_card((folder / "card.md").read_text())
    lineage = meta["lineage"]
    assert SCHEMA <= lineage.keys() and not SCHEMA & meta.keys()
    assert lineage["git_commit"] == git_commit() and lineage["seed"] == 0 and lineage["command"] in body
    assert lineage["training_steps"] == summary["steps"] == 40 and lineage["dataset"] == meta["datasets"][0]


def test_a_feature_nets_card_has_the_header_and_lineage_of_every_model_card(tmp_path):
    from vidgen.runs.feature_nets import train_video_feature_net

    facts = train_video_feature_net(tmp_path / "net", steps=2, batch_size=4, seed=5)
    meta, body = parse_card((tmp_path / "net" / "card.md").read_text())
    assert meta["library_name"] == "vidgen" and meta["metrics"]["heldout_colour"] == round(
        facts["heldout_accuracy"]["colour"], 3)
    assert SCHEMA <= meta["lineage"].keys() and meta["lineage"]["seed"] == 5
    assert meta["lineage"]["training_steps"] == 2 and body.startswith("# fvd-vidgen v1")
