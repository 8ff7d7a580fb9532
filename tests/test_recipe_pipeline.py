"""Recipes validate against the pass registry; the pipeline checks the whole plan before work."""
import pytest

from edgesparse.build_api import pipeline_for
from edgesparse.errors import UserError
from edgesparse.passes import load_builtin_passes
from edgesparse.pipeline import (ARTIFACTS, LABELS, QUANT_PLAN, TEACHER, DataInfo, Instrument, Pass, PassConfig,
                                 Pipeline, RecordsInstrument, RunContext, Stage)
from edgesparse.recipe import load_recipe, parse_recipe
from edgesparse.state import ModelState
from edgesparse.targets import load_target

RPI4 = load_target("rpi4")
LABELLED = DataInfo(real=True, labelled=True, source="x.npz")
UNLABELLED = DataInfo(real=True, labelled=False, source="x.npz")
SYNTHETIC = DataInfo(real=False, labelled=False)


def test_every_target_default_recipe_is_valid_and_plans():
    for name in ("rpi4", "android-nnapi", "coral"):
        t = load_target(name)
        r = parse_recipe(t.recipe, name)
        assert pipeline_for(r).validate(t, LABELLED) == []


def test_unknown_key_names_file_entry_and_known_keys(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("passes:\n  - pass: distill\n    epocs: 3\n")
    with pytest.raises(UserError) as e:
        load_recipe(f)
    msg = str(e.value)
    assert str(f) in msg and "passes[0]" in msg and "'epocs'" in msg and "epochs" in msg


def test_wrong_type_names_the_key(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("passes:\n  - pass: distill\n    epochs: many\n")
    with pytest.raises(UserError, match=r"passes\[0\] \(distill\): epochs:"):
        load_recipe(f)


@pytest.mark.parametrize("text,match", [
    ("passes:\n  - pass: nosuch\n", "unknown pass 'nosuch'"),
    ("passes:\n  - distill\n", "needs a 'pass' key"),
    ("pases: []\n", "unknown key 'pases'"),
    ("max_accuracy_drop: -1\npasses: []\n", "non-negative"),
    ("max_accuracy_drop: lots\npasses: []\n", "max_accuracy_drop"),
    ("passes: [\n", "cannot read recipe"),
    ("- 1\n- 2\n", "mapping"),
    # What YAML or pydantic would have read silently as something else than was written.
    ("passes: []\n", "'passes' is empty"),
    ("passes:\n  - pass: prune\n    macs: 0.5\n    macs: 0.9\n", "line 4: the key 'macs' is given twice"),
    ("passes:\n  - pass: prune\n    macs: true\n", r"macs: true is not a number"),
    ("passes:\n  - pass: distill\n    epochs: '3'\n", r"epochs: the text '3' is not a number"),
    ("seed: '3'\npasses:\n  - pass: quantize\n", "seed: the text '3' is not a number"),
    ("passes:\n  - pass: quantize\n  - pass: export\n  - pass: quantize\n",
     r"passes\[0\] and passes\[2\] are both 'quantize'"),
])
def test_bad_recipes(tmp_path, text, match):
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=match):
        load_recipe(f)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")


def _plan(*entries):
    """The plan a build runs: the import pass, then the recipe's passes."""
    return pipeline_for(parse_recipe({"passes": list(entries)}, "test"))


def test_plan_order_and_needs_are_checked_before_work():
    passes = load_builtin_passes()
    if "export" not in passes or "verify" not in passes:
        pytest.skip("export/verify passes not registered yet")
    # verify with nothing exported before it
    problems = _plan({"pass": "verify"}).validate(RPI4, LABELLED)
    assert any("needs artifacts" in p for p in problems)
    # a model transform after export is out of order
    problems = _plan({"pass": "export"}, {"pass": "distill"}).validate(RPI4, LABELLED)
    assert any("cannot run after" in p for p in problems)


def test_passes_that_need_real_data_refuse_synthetic():
    problems = _plan({"pass": "distill"}).validate(RPI4, SYNTHETIC)
    assert problems and "real inputs" in problems[0]


def test_labels_need_is_checked():
    class NeedsLabels(Pass):
        name = "needs-labels-test"
        Config = PassConfig
        needs = frozenset({LABELS})

    assert Pipeline([NeedsLabels()]).validate(RPI4, LABELLED) == []
    assert "needs labelled data" in Pipeline([NeedsLabels()]).validate(RPI4, UNLABELLED)[0]


def test_state_needs_must_be_produced_earlier():
    class Producer(Pass):
        name = "producer-test"
        produces = frozenset({ARTIFACTS})
        stage = 3

    class Consumer(Pass):
        name = "consumer-test"
        needs = frozenset({ARTIFACTS})
        stage = 4

    assert Pipeline([Producer(), Consumer()]).validate(RPI4, LABELLED) == []
    assert Pipeline([Consumer()]).validate(RPI4, LABELLED)


def test_every_state_need_is_checked_and_says_how_to_fix_it():
    load_builtin_passes()
    recipe = parse_recipe({"passes": [{"pass": "distill"}, {"pass": "export"}]}, "test")
    problems = recipe.pipeline().validate(RPI4, LABELLED)      # no import pass, no quantize pass
    assert any("(distill) needs teacher" in p and "after import" in p for p in problems)
    assert any("(export) needs quant_plan" in p and "add a quantize pass" in p for p in problems)
    assert pipeline_for(recipe).validate(RPI4, LABELLED) == [
        "passes[1] (export) needs quant_plan from an earlier pass, and none produces it; "
        "add a quantize pass before it (precisions: [fp32] for float artifacts only)"]


class _Step(Pass):
    """A pass that appends its tag to the state's facts, so order and nesting are visible."""

    name = "step-test"
    changes_model = True

    def __init__(self, tag, stage=Stage.TRANSFORM, needs=(), produces=()):
        super().__init__()
        self.tag, self.stage = tag, stage
        self.needs, self.produces = frozenset(needs), frozenset(produces)

    def run(self, state, ctx):
        state.facts.setdefault("order", {}).setdefault("tags", []).append(self.tag)
        return state


class _Log(Instrument):
    def __init__(self, tag, log):
        self.tag, self.log = tag, log

    def before_pass(self, p, state, ctx):
        self.log.append(f"{self.tag}>{p.tag}")

    def after_pass(self, p, state, ctx):
        self.log.append(f"{self.tag}<{p.tag}")


def test_a_pipeline_is_a_pass_and_its_records_come_from_an_instrument(tmp_path):
    inner = Pipeline([_Step("b", needs={TEACHER}, produces={QUANT_PLAN}),
                      _Step("c", Stage.EXPORT, needs={QUANT_PLAN}, produces={ARTIFACTS})])
    assert isinstance(inner, Pass) and inner.needs == {TEACHER} and inner.produces == {QUANT_PLAN, ARTIFACTS}
    assert inner.stage == Stage.TRANSFORM and inner.changes_model
    outer = Pipeline([_Step("a", Stage.IMPORT, produces={TEACHER}), inner])
    assert outer.validate(RPI4, LABELLED) == [] and outer.needs == frozenset()
    log: list[str] = []
    records = RecordsInstrument(measure=lambda state, ctx: {"seen": len(state.facts["order"]["tags"])},
                                step="back-off strength 0.5")
    state = outer.run(ModelState(model=None, name="m"), RunContext(target=RPI4, data=None, workdir=tmp_path),
                      [_Log("x", log), _Log("y", log), records])
    assert isinstance(state, ModelState) and state.facts["order"]["tags"] == ["a", "b", "c"]
    # a nested pipeline is observed pass by pass; after-hooks nest (reverse order)
    assert log[:4] == ["x>a", "y>a", "y<a", "x<a"] and len(log) == 12
    assert [(r.name, r.metrics["seen"], r.step) for r in records.records] == \
        [("step-test", n, "back-off strength 0.5") for n in (1, 2, 3)]
    assert all(r.seconds >= 0 for r in records.records)


def test_a_plan_error_names_every_problem_by_the_recipes_own_numbering(tmp_path):
    """Numbered as parse errors number them (passes[i] of the file, not counting the import pass
    edgesparse adds), and all of them on the one line, not "(and 1 more)"."""
    from pathlib import Path

    from edgesparse.build_api import plan_build

    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: export\n    formats: [tflite, onnx]\n")
    model = Path(__file__).resolve().parents[1] / "sample_models" / "digits_mlp.keras"
    with pytest.raises(UserError) as e:
        plan_build(model, "coral", recipe=recipe, out=tmp_path / "o")
    message = str(e.value)
    assert "passes[0] (export) needs quant_plan" in message and "; also passes[0] (export): target coral" in message
    assert "more)" not in message and "\n" not in message


def test_an_import_pass_after_another_pass_is_told_to_come_first():
    load_builtin_passes()
    recipe = parse_recipe({"passes": [{"pass": "quantize"}, {"pass": "import"}, {"pass": "export"}]}, "r.yaml")
    (problem,) = pipeline_for(recipe).validate(RPI4, LABELLED)
    assert problem.startswith("passes[1] (import) cannot run after a later-stage pass")
    assert "import runs first" in problem


def test_distill_feature_layers_that_are_not_layers_are_one_line(tmp_path, capsys):
    """They were an internal ValueError from get_layer once the build had started."""
    from pathlib import Path

    from edgesparse.cli import run

    samples = Path(__file__).resolve().parents[1] / "sample_models"
    recipe = tmp_path / "r.yaml"
    args = ["build", str(samples / "digits_mlp.keras"), "--data", str(samples / "digits.npz"),
            "--recipe", str(recipe), "--out", str(tmp_path / "o")]
    recipe.write_text("passes:\n  - pass: distill\n    epochs: 1\n    feature_layers: [[nosuch, fc1]]\n"
                      "  - pass: quantize\n  - pass: export\n")
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "feature_layers: the student has no layer 'nosuch'; its layers are" in err and "internal" not in err
    assert not (tmp_path / "o").exists()
    recipe.write_text("passes:\n  - pass: distill\n    feature_layers: [fc1, fc2]\n")
    assert run(args) == 2
    assert "give [student_layer, teacher_layer] pairs" in capsys.readouterr().err


def test_a_recipe_that_exports_nothing_is_refused_before_any_work(tmp_path):
    """It wrote report files, no artifact, and exited 0 ("wrote ... (artifacts, ...)")."""
    from pathlib import Path

    from edgesparse.build_api import plan_build

    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: quantize\n")
    model = Path(__file__).resolve().parents[1] / "sample_models" / "digits_mlp.keras"
    with pytest.raises(UserError, match="no pass exports an artifact"):
        plan_build(model, "rpi4", recipe=recipe, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
