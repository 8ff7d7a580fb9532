"""Per-group overrides in prune (`per_group`: keep fraction by producer layer name), the knob a
per-layer search sets: the named group ends at the requested width, the rest of the budget goes
to the other groups, and a name the channel graph does not know fails before any work."""
from __future__ import annotations

import pytest

from edgesparse.data import synthetic
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.pipeline import DataInfo, Pipeline, RunContext
from edgesparse.state import ModelState
from edgesparse.targets import load_target

import prune_models as zoo


def _prune(model, **config):
    data = synthetic(tuple(model.inputs[0].shape[1:]))
    ctx = RunContext(target=load_target("rpi4"), data=data, workdir=None)
    return PrunePass(criterion="l1", **config).run(ModelState(model=model, name="m", reference=model), ctx)


def _groups(model):
    return [g for g in ChannelGraph(model).prunable_groups]


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_the_named_group_ends_at_the_requested_width_and_the_budget_still_holds(allocation):
    model = zoo.conv_bn()
    pinned, *others = _groups(model)
    name = pinned.producers[0]
    width = round(0.7 * pinned.size)           # 16 -> 11: not a multiple of rpi4's SIMD width 4
    f = _prune(model, macs=0.4, allocation=allocation, per_group={name: 0.7}).facts["prune"]
    assert f["channels"][name] == [pinned.size, width]
    assert f["macs_kept"] <= 0.4
    # the remaining budget went to the other groups, rounded to the target's width as usual
    rest = [f["channels"][g.producers[0]] for g in others]
    assert any(after < before for before, after in rest)
    assert all(after % 4 == 0 for _, after in rest)


def test_a_tied_group_is_addressed_by_any_of_its_producers():
    model = zoo.residual()
    tied = max(_groups(model), key=lambda g: len(g.producers))
    assert len(tied.producers) >= 3, "the Add ties the stem and both block outputs"
    f = _prune(model, ratio=0.25, per_group={tied.producers[-1]: 0.5}).facts["prune"]
    assert {p: f["channels"][p][1] for p in tied.producers} == {p: tied.size // 2 for p in tied.producers}


def test_an_unknown_name_fails_before_work_and_lists_valid_ones():
    model = zoo.conv_bn()
    with pytest.raises(UserError) as e:
        _prune(model, macs=0.5, per_group={"no_such_layer": 0.5})
    msg = str(e.value)
    assert "'no_such_layer'" in msg and _groups(model)[0].producers[0] in msg


def test_a_group_that_cannot_be_pruned_is_refused():
    model = zoo.conv_bn()
    fixed = [g for g in ChannelGraph(model).groups if not g.prunable]
    assert fixed, "the classifier head's width is the number of classes"
    with pytest.raises(UserError, match="cannot be pruned"):
        _prune(model, macs=0.5, per_group={fixed[0].producers[0]: 0.5})


def test_keep_fractions_are_checked_with_the_plan():
    problems = Pipeline([PrunePass(macs=0.5, per_group={"conv": 1.5})]).validate(
        load_target("rpi4"), DataInfo(real=True, labelled=True))
    assert any("per_group keep fraction of conv is 1.5" in p for p in problems), problems


def test_an_unreachable_budget_at_the_smallest_settings_does_not_ask_to_lower_them():
    """At min_channels=1 and round_to=1 the message still said "or lower min_channels/round_to"."""
    model = zoo.conv_bn()
    with pytest.raises(UserError) as e:
        _prune(model, macs=0.001, min_channels=1, round_to=1)
    assert "lower min_channels" not in str(e.value) and "edgesparse inspect" in str(e.value)
    with pytest.raises(UserError, match="or lower min_channels/round_to"):
        _prune(model, macs=0.001, min_channels=2, round_to=1)
