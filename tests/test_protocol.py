import re

import pytest

from missbench.experiment import registry
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.core.subsets import all_subsets

BRATS = registry.dataset_class("brats_synthetic")


def test_non_dedicated_file_lists_all_15_subsets_in_canonical_order():
    proto = load_protocol(registry.protocol_path("non_dedicated"))
    specs = proto.expand(["shaspec", "zero_fill"], BRATS, {}, "smoke", [0, 1])
    assert len(specs) == 4 and {s.model.train_subset for s in specs} == {None}
    assert list(specs[0].score.subsets) == [s.label for s in all_subsets(BRATS.modalities)]
    assert len({s.run_id for s in specs}) == 4
    assert len({s.model.derived_seed for s in specs}) == 4


def test_run_id_is_stable_and_depends_on_everything():
    proto = load_protocol(registry.protocol_path("non_dedicated"))
    a = proto.expand(["shaspec"], BRATS, {}, "smoke")[0]
    assert a.run_id == proto.expand(["shaspec"], BRATS, {}, "smoke")[0].run_id
    assert a.run_id != proto.expand(["shaspec"], BRATS, {}, "smoke", method_params={"shaspec": {"alpha": 0}})[0].run_id
    # A setting equal to the default is the same model: the same run.
    assert a.run_id == proto.expand(["shaspec"], BRATS, {}, "smoke", method_params={"shaspec": {"alpha": 0.1}})[0].run_id
    assert a.run_id != proto.expand(["shaspec"], BRATS, {"seed": 1}, "smoke")[0].run_id


BASE = """
mode: non_dedicated
subsets: [FLAIR, T1c+T2]
seeds: [0]
default_budget: tiny
budgets:
  tiny: {iterations: 2, patch: 16, batch: 1, checkpoint_every: 1}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "colour: red\n", "unknown key 'colour'"),
        (BASE.replace("seeds: [0]", "seeds: [zero]"), "seeds[0] must be an integer"),
        (BASE.replace("iterations: 2", "iterations: two"), "budgets.tiny.iterations='two': expected an integer >= 1"),
        (BASE.replace("mode: non_dedicated", "mode: semi"), "mode 'semi'"),
        (BASE.replace("default_budget: tiny", "default_budget: huge"), "default_budget 'huge'"),
        (BASE + "training: {lr: fast}\n", "training.lr='fast': expected a number > 0"),
        (BASE + "training: {momentun: 0.9}\n", "training: unknown parameter 'momentun'"),
        (BASE + "metric: {empty: zero}\n", "metric.empty='zero': expected one of"),
        (BASE + "subsets: [\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
        (BASE.replace("seeds: [0]\n", ""), "missing required key 'seeds'"),
    ],
)
def test_malformed_protocol_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=re.escape(message)) as err:
        load_protocol(path)
    assert str(path) in str(err.value)


def test_subset_names_are_checked_against_the_data_set(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("T1c+T2", "T1c+DWI"))
    with pytest.raises(ProtocolError, match=r"subsets\[1\].*'DWI'"):
        load_protocol(path).expand(["shaspec"], BRATS, {})


def test_sweep_files_inherit_and_expand_their_grids():
    ab = load_protocol(registry.protocol_path("alpha_beta"))
    specs = ab.expand(["shaspec", "zero_fill"], BRATS, {}, "smoke")
    points = sorted((s.model.method_params.get("alpha", 0.1), s.model.method_params.get("beta", 0.02))
                    for s in specs if s.model.method == "shaspec")
    assert points == sorted({(a, 0.02) for a in (0, 0.01, 0.1, 1)} | {(0.1, b) for b in (0, 0.002, 0.02, 0.2, 1)})
    assert [s.model.method_params for s in specs if s.model.method == "zero_fill"] == [{}]
    assert len(specs[0].score.subsets) == 15  # inherited from non_dedicated
    dao = load_protocol(registry.protocol_path("dao_loss")).expand(["shaspec"], BRATS, {}, "smoke")
    assert [s.model.variant for s in dao] == ["shaspec"] + [f"shaspec[dao={d}]" for d in ("kl", "mse", "ce")]


def test_dedicated_trains_one_model_per_subset():
    proto = load_protocol(registry.protocol_path("dedicated"))
    specs = proto.expand(["shaspec"], BRATS, {}, "smoke")
    assert [s.model.train_subset for s in specs] == [s.label for s in all_subsets(BRATS.modalities)]
    assert all(s.score.subsets == (s.model.train_subset,) for s in specs)


def test_inherit_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b\n")
    (tmp_path / "b.yaml").write_text("inherit: a\n")
    with pytest.raises(ProtocolError, match="inherit loops"):
        load_protocol(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("inherit: nosuch\n")
    with pytest.raises(ProtocolError, match=re.escape(f"{tmp_path / 'c.yaml'}: inherit 'nosuch'")):
        load_protocol(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text(BASE + "grid: {shaspec: {alpha: 0.1}}\n")
    with pytest.raises(ProtocolError, match=r"grid.shaspec\[0\] must map"):
        load_protocol(tmp_path / "d.yaml")
