"""Issue 29, item 6: an imported pipeline's card says the same largest clip in its header as in its text (the
header said frames max 1024 where the text said 1 to 1021: Wan makes 4k+1 frames)."""

from storage.cards import parse_card
from vidgen.pipelines.model_import import import_diffusers_folder


def test_the_card_header_and_text_name_the_same_sizes(tiny_pipelines, tmp_path):
    package = import_diffusers_folder(tiny_pipelines["ltx"], tmp_path / "ltx", licence="apache-2.0")
    meta, body = parse_card((package / "card.md").read_text())
    frames, height = meta["capabilities"]["frames"], meta["capabilities"]["height"]
    assert (frames["max"] - frames["remainder"]) % frames["multiple"] == 0
    rule = f"{frames['multiple']}k+{frames['remainder']}"
    assert f"frames {rule} from {frames['min']} to {frames['max']}" in body.replace("\n", " ")
    assert f"height multiples of {height['multiple']} from {height['multiple']} to {height['max']}" in body
