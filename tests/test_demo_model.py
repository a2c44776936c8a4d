"""The shipped demo model (vidgen/shipped_models/shapes-tiny): loads verified, meets its bar, `vidgen demo` runs."""

import pytest
from typer.testing import CliRunner

from storage.package import verify_package
from vidgen.cli import app
from vidgen.pipelines.packages import load_model
from vidgen.pipelines.references import DEFAULT_MODEL, resolve_model
from vidgen.runs.eval_runs import evaluate_model

pytestmark = pytest.mark.slow

SEEN_BAR = 0.80  # the foundation issue's bar; the shipped model measured 0.97 on 192 clips (card.md)
HELDOUT_BAR = 0.80  # compositions never seen in training; measured 0.98


def test_shipped_model_is_small_verified_and_documented():
    folder = resolve_model(DEFAULT_MODEL)
    verify_package(folder)
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20
    card = (folder / "card.md").read_text()
    for field in ("pipeline_tag: text-to-video", "training_minutes:", "seed:", "prompt_accuracy_seen:",
                  "prompt_accuracy_heldout:", "vidgen train --preset tiny"):
        assert field in card
    assert load_model(folder).num_params() > 1e6


@pytest.fixture(scope="module")
def demo_eval():
    return evaluate_model(DEFAULT_MODEL, clips=96, seed=1)  # ~2 points of noise a split, against 15+ of margin


def test_demo_model_meets_the_accuracy_bar_on_new_seeds(demo_eval):
    assert demo_eval["seen"]["all_three"] >= SEEN_BAR, demo_eval
    assert demo_eval["heldout"]["all_three"] >= HELDOUT_BAR, demo_eval


def test_paraphrased_prompts_score_within_ten_points(demo_eval):
    assert demo_eval["paraphrase"]["all_three"] >= demo_eval["seen"]["all_three"] - 0.10, demo_eval


def test_make_demo_command_writes_clips_and_reports(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.mp4"))) == 8 and len(list(tmp_path.glob("*.gif"))) == 8
    assert (tmp_path / "contact_sheet.png").stat().st_size > 1000
    assert "prompt accuracy on these 8 clips" in result.output


STUDENT = "shapes-tiny-k1"  # the edge tier's model: the 1-step distilled student of the demo model


def test_the_shipped_student_names_its_teacher_and_is_small():
    student, teacher = resolve_model(STUDENT), resolve_model(DEFAULT_MODEL)
    verify_package(student)
    assert sum(p.stat().st_size for p in student.iterdir()) < 20 * 2**20
    card = (student / "card.md").read_text()
    assert verify_package(teacher)["model.safetensors"] in card and "trajectory distillation" in card
    for field in ("steps: 1", "trajectories:", "FVD-vidgen", "prompt_accuracy_seen:"):
        assert field in card


def test_the_student_keeps_the_teachers_accuracy_in_one_unguided_step(demo_eval):
    student = evaluate_model(STUDENT, clips=96, seed=1)
    assert student["sampler"] == {"steps": 1, "guidance": 1.0}
    # the serving benchmark's goal is 5 points (docs/BENCHMARKS.md); 96 clips a split leave ~2.5 points of noise
    # on the difference, so 8 points is 3 standard errors
    for split in ("seen", "heldout"):
        assert student[split]["all_three"] >= demo_eval[split]["all_three"] - 0.08, (split, student, demo_eval)
