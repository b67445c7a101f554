"""``sparsekits compare`` as a user runs it: real subprocesses that train, predict (one fresh
process per case) and score two methods on the same phantoms; then the same models given back
with ``--model``; and its refusals."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli
from sparsekits.compare import budget_plan
from sparsekits.methods import get_method

METHODS = ("sscn-twostage", "dense-coarse2fine")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    run = run_cli("compare", "--out", out, "--methods", *METHODS, "--quick", timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_compare_trains_predicts_and_scores_every_method_on_the_same_cases(compared):
    results = json.loads((compared / "compare.json").read_text())
    assert [result["method"] for result in results] == list(METHODS)
    test_cases = sorted(path.name for path in (compared / "test").glob("case_*"))
    for result in results:
        assert result["trained_here"]
        assert sorted(case["case"] for case in result["cases"]) == test_cases
        for case in result["cases"]:
            assert case["seconds"] > 0 and case["peak_rss_mb"] > 100  # torch alone is more
            prediction = compared / result["method"] / "predictions" / f"{case['case']}.nii.gz"
            assert prediction.is_file()
        roles = get_method(result["method"]).roles
        assert set(result["step_s"]) == set(roles) and all(result["steps"][r] > 0 for r in roles)
        assert 0 <= result["scores"]["Dice_kidney"] <= 1
    table = (compared / "compare.md").read_text()
    assert all(f"| {method} |" in table for method in METHODS)
    assert (compared / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_given_models_are_not_trained_again_and_score_the_same(compared, tmp_path):
    models = [f"--model={method}={compared / method / 'model'}" for method in METHODS]
    out = tmp_path / "again"
    run = run_cli("compare", "--out", out, "--methods", *METHODS, "--quick", *models, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    first = json.loads((compared / "compare.json").read_text())
    again = json.loads((out / "compare.json").read_text())
    for before, after in zip(first, again, strict=True):
        assert not after["trained_here"] and after["steps"] == {}
        assert after["scores"] == pytest.approx(before["scores"])
    assert not (out / METHODS[0] / "runs").exists()
    assert "given" in (out / "compare.md").read_text()


def test_compare_refuses_bad_models_in_one_line(compared, tmp_path):
    sscn_model = compared / METHODS[0] / "model"
    for model, problem in (
        ("nonsense", "METHOD=MODEL_FOLDER"),
        ("no-such-method=x", "unknown method"),
        (f"{METHODS[1]}={sscn_model}", "holds a sscn-twostage model"),
    ):
        run = run_cli(
            "compare", "--out", tmp_path / "x", "--methods", *METHODS, "--quick", "--model", model
        )
        assert run.returncode == 2, run.stderr
        assert problem in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "x").exists()


def test_the_budget_scales_every_stage_s_steps():
    plan = get_method("dense-coarse2fine").default_plan("demo")
    halved = budget_plan(plan, 0.5)
    for stage, short in zip(plan.stages, halved.stages, strict=True):
        assert short.recipe.epochs == max(1, round(stage.recipe.epochs * 0.5))
        assert short.recipe.lr == stage.recipe.lr
    assert all(stage.recipe.epochs >= 1 for stage in budget_plan(plan, 1e-6).stages)
