"""Model cards: one writer, one lineage schema (git commit, command, seed, then the source's own keys)."""

import pytest

from storage.cards import CardError, Lineage, git_commit, model_card, parse_card


def test_every_model_card_records_its_lineage_in_one_place():
    lineage = Lineage("vidgen train --steps 3", 7, {"dataset": "s3://b/data", "training_steps": 3})
    meta, body = parse_card(model_card({"pipeline_tag": "text-to-video", "params": 10}, lineage, "# a model\n"))
    assert list(meta) == ["pipeline_tag", "params", "lineage"] and body == "# a model\n"
    assert meta["lineage"] == {"git_commit": git_commit(), "command": "vidgen train --steps 3", "seed": 7,
                               "dataset": "s3://b/data", "training_steps": 3}
    assert git_commit() and "\n" not in git_commit()


def test_a_lineage_is_only_written_through_the_lineage_argument():
    with pytest.raises(ValueError, match="lineage's own"):
        Lineage("vidgen x", 0, {"git_commit": "abc"})
    with pytest.raises(ValueError, match="not a header key"):
        model_card({"lineage": {}}, Lineage("vidgen x", 0), "")


def test_a_card_without_a_header_is_refused_by_name():
    with pytest.raises(CardError, match="card.md does not start"):
        parse_card("# no header\n", "card.md")
