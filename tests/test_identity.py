"""What makes two numbers the same experiment: a model's identity (training and its code) and a score's
(a model plus evaluation), each normalised, neither holding a protocol file's name (issue: models and scores)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECKOUT, bench_here, make_root
from missbench.cli import main
from missbench.experiment import registry
from missbench.experiment.protocol import identity_params, load_protocol
from missbench.report import load_store
from missbench.report.model import pools
from missbench.store.run_folder import ROWS, sweep_models

BRATS = registry.dataset_class("brats_synthetic")
SMOKE = ["--budget", "smoke", "--no-progress", "--threads", "1"]


def expand(protocol: str, method: str = "shaspec", budget: str = "smoke", **kw):
    return load_protocol(registry.protocol_path(protocol)).expand([method], BRATS, {}, budget, **kw)


def test_one_value_in_two_spellings_is_one_model():
    """``--param shaspec.alpha=1`` and ``alpha=1.0`` were two run ids: one experiment trained twice."""
    (a,) = expand("non_dedicated", method_params={"shaspec": {"alpha": 1}})
    (b,) = expand("non_dedicated", method_params={"shaspec": {"alpha": 1.0}})
    assert a.model.method_params == {"alpha": 1.0} and a.run_id == b.run_id
    (c,) = expand("non_dedicated", training={"lr": 1})
    (d,) = expand("non_dedicated", training={"lr": 1.0})
    assert c.model.model_id == d.model.model_id != a.model.model_id
    (default,) = expand("non_dedicated", training={"lr": registry.method_class("shaspec").training_for("segmentation").lr})
    assert default.run_id == expand("non_dedicated")[0].run_id  # an override equal to the default is no override


def test_the_protocol_file_name_is_in_no_identity():
    """alpha_beta's default grid point is the non-dedicated model, scored alike, under the same seed."""
    (nd,) = expand("non_dedicated", budget="default")
    point = next(s for s in expand("alpha_beta", budget="default") if not s.model.method_params)
    assert point.model == nd.model and point.score == nd.score and point.protocol != nd.protocol
    assert point.model.derived_seed == nd.model.derived_seed


def test_evaluation_settings_change_the_score_and_never_the_model(tmp_path):
    base = expand("non_dedicated")[0]
    (tmp_path / "nan.yaml").write_text("inherit: non_dedicated\nmetric: {empty: nan, hd95: max_directed}\n")
    (tmp_path / "gauss.yaml").write_text("inherit: non_dedicated\nmetric: {window: gaussian}\nbudgets: {smoke: {overlap: 0.25}}\n")
    others = [load_protocol(tmp_path / f).expand(["shaspec"], BRATS, {}, "smoke")[0] for f in ("nan.yaml", "gauss.yaml")]
    more_cases = load_protocol(registry.protocol_path("non_dedicated")).expand(["shaspec"], BRATS, {"n_test": 5}, "smoke")[0]
    for other in [*others, more_cases]:
        assert other.model == base.model and other.score.score_id != base.score.score_id
    assert others[0].score.metric == {"empty": "nan", "hd95": "max_directed", "et_threshold": 50}
    assert others[1].score.window == {"overlap": 0.25, "weighting": "gaussian"}
    (dedicated,) = [s for s in expand("dedicated") if s.model.train_subset == "T1"]
    assert dedicated.model.model_id != base.model.model_id  # what it trains on is the model's


def test_where_data_lie_is_in_no_identity():
    brats = registry.dataset_class("brats2018")
    a = identity_params(brats, {"root": "/data/a", "cache": "/tmp/x", "split": "lists/train1.txt"}, training=True)
    b = identity_params(brats, {"root": "/scratch/b", "split": "lists/train1.txt"}, training=True)
    assert a == b == {"split": "lists/train1.txt"}
    assert identity_params(BRATS, {"n_test": 4, "size": 24}, training=True) == {"size": 24}
    assert identity_params(BRATS, {"n_test": 4, "size": 24, "seed": 0}, training=False) == {"n_test": 4, "size": 24}


def bench(root: Path, *args: str) -> subprocess.CompletedProcess:
    """bench.py in a fresh process (plugins are imported once per process: an edit shows in the next one)."""
    return subprocess.run([sys.executable, str(CHECKOUT / "bench.py"), *args, "--root", str(root)], capture_output=True, text=True)


def in_process(root: Path, *args: str) -> subprocess.CompletedProcess:
    """bench.py in this process: what a command after a plugin edit cannot use (see `bench`)."""
    return bench_here(*args, "--root", str(root))


def test_an_edited_method_is_another_model_and_never_pools_with_the_old_code(tmp_path):
    """Seeds 0-1 of zero_fill, then its width 8 -> 4 and seeds 0-2: three new models (none 'skipped, done before'),
    and the table shows two zero_fill columns named by their code, never 'zero_fill (4 seeds)'."""
    source = (CHECKOUT / "methods" / "zero_fill.py").read_text()
    root = make_root(tmp_path / "root", {"zero_fill.py": source})
    sweep = root / "results" / "s"
    first = in_process(root, "--methods", "zero_fill", *SMOKE, "--seeds", "0,1", "--out", str(sweep))
    assert first.returncode == 0, first.stderr
    edited = source.replace('defaults = {"width": 8,', 'defaults = {"width": 4,')
    assert edited != source
    (root / "methods" / "zero_fill.py").write_text(edited)
    second = bench(root, "--methods", "zero_fill", *SMOKE, "--seeds", "0,1,2", "--out", str(sweep))
    assert second.returncode == 0, second.stderr
    assert "skipped" not in second.stdout and second.stdout.count(": done") == 3
    models = sweep_models(sweep)
    assert len(models) == 5 and len({m.spec().code["method"] for m in models}) == 2
    assert {m.meta()["parameters"] for m in models} == {316_587, 79_575}
    (pool,) = pools(load_store(sweep))
    assert sorted(len(c.runs) for c in pool.columns) == [2, 3]  # old code's seeds 0-1, new code's 0-2: never one column
    assert all(c.label.startswith("zero_fill[") and ",code=" in c.label for c in pool.columns)  # zero_fill[width=4,code=e9c8ac2f]


def test_a_changed_method_file_is_refused_before_scoring_its_old_models(tmp_path):
    source = (CHECKOUT / "methods" / "zero_fill.py").read_text()
    root = make_root(tmp_path / "root", {"zero_fill.py": source})
    assert in_process(root, "--methods", "zero_fill", *SMOKE, "--out", str(root / "results" / "s")).returncode == 0
    (root / "methods" / "zero_fill.py").write_text(source + "\n# edited\n")
    refused = bench(root, "evaluate", str(root / "results" / "s"), "--metric", "empty=nan")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "methods/zero_fill.py is not the code of model" in refused.stderr and "changed since" in refused.stderr


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """zero_fill and shaspec at the smoke budget under a protocol that scores with empty=nan and HD95 max_directed,
    trained and scored from scratch: the rows a re-score must reproduce."""
    tmp = tmp_path_factory.mktemp("fresh")
    (tmp / "strict.yaml").write_text("inherit: non_dedicated\nmetric: {empty: nan, hd95: max_directed}\n")
    assert main(["--protocol", str(tmp / "strict.yaml"), "--methods", "zero_fill,shaspec", *SMOKE, "--out", str(tmp / "s")]) == 0
    return tmp


def rows_bytes(sweep: Path, metric: dict) -> dict[str, bytes]:
    """rows.parquet of every score of ``sweep`` scored with ``metric`` (its non-default settings), by model id."""
    return {m.model_id: s.file(ROWS).read_bytes() for m in sweep_models(sweep) for s in m.scores()
            if s.spec().metric == metric and s.is_done()}


STRICT = {"empty": "nan", "hd95": "max_directed", "et_threshold": 50}


def test_changing_only_the_metric_policy_trains_nothing_and_gives_the_rows_of_a_fresh_run(fresh, tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main(["--methods", "zero_fill,shaspec", *SMOKE, "--out", str(sweep)]) == 0
    checkpoints = {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoint.pt")}
    capsys.readouterr()
    assert main(["--protocol", str(fresh / "strict.yaml"), "--methods", "zero_fill,shaspec", *SMOKE, "--out", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert out.count("trained before; 1 score to make") == 2
    assert checkpoints == {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoint.pt")}  # nothing trained
    assert all(log.read_text().count("trained in") == 1 for log in sweep.glob("*/log.txt"))
    assert rows_bytes(sweep, STRICT) == rows_bytes(fresh / "s", STRICT)  # byte for byte


def test_bench_evaluate_scores_policies_and_hd95_definitions_without_training(fresh, tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main(["--methods", "zero_fill,shaspec", *SMOKE, "--out", str(sweep)]) == 0
    checkpoints = {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoint.pt")}
    capsys.readouterr()
    assert main(["evaluate", str(sweep), "--protocol", str(fresh / "strict.yaml"), "--budget", "smoke",
                 "--metric", "empty=one,nan", "--metric", "hd95=pooled,max_directed", "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 scores of 2 models; 6 made, 2 done before" in out and "nothing was trained" in out
    assert checkpoints == {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoint.pt")}
    assert all(len(m.scores()) == 4 for m in sweep_models(sweep))
    assert rows_bytes(sweep, STRICT) == rows_bytes(fresh / "s", STRICT)
    capsys.readouterr()
    assert main(["evaluate", str(sweep), "--protocol", str(fresh / "strict.yaml"), "--budget", "smoke", "--no-progress",
                 "--threads", "1"]) == 0
    assert "2 scores of 2 models; 0 made, 2 done before" in capsys.readouterr().out  # done before: kept


COPYCAT = '''
"""brats_synthetic's cases under other ids: the same subjects in another data set."""
from missbench.core.dataset import Dataset
from missbench.experiment import registry


class Copycat(Dataset):
    name = "copycat"
    modalities = ("FLAIR", "T1", "T1c", "T2")
    defaults = {"size": 24, "offset": 0}

    def __init__(self, **params):
        super().__init__(**params)
        self.base = registry.dataset_class("brats_synthetic")(size=self.params["size"], n_train=3, n_val=1, n_test=2)
        self.ids = [f"cc{i}" for i in range(6)]

    def case_ids(self, split):
        start = self.params["offset"] if split == "test" else 0
        return {"train": [], "val": [], "test": self.ids[start:start + 2]}[split]

    def load(self, case_id):
        case = self.base.load(f"syn{int(case_id[2:]):04d}")
        case.case_id = case_id
        return case
'''


def test_scoring_on_another_data_set_refuses_the_training_cases(tmp_path, capsys):
    root = make_root(tmp_path / "root", {"zero_fill.py": (CHECKOUT / "methods" / "zero_fill.py").read_text()})
    (root / "datasets" / "copycat.py").write_text(COPYCAT)
    sweep = root / "results" / "s"
    assert in_process(root, "--methods", "zero_fill", *SMOKE, "--out", str(sweep)).returncode == 0
    before = sorted(p for p in sweep.rglob("*") if p.is_file())
    by_id = in_process(root, "evaluate", str(sweep), "--dataset", "brats_synthetic", "--dataset-param", "n_train=1")
    assert by_id.returncode == 2 and by_id.stderr.count("\n") == 1 and "are training cases of model" in by_id.stderr
    by_content = in_process(root, "evaluate", str(sweep), "--dataset", "copycat")  # cc0, cc1: syn0000, syn0001 renamed
    assert by_content.returncode == 2 and "cc0 (= syn0000)" in by_content.stderr
    assert sorted(p for p in sweep.rglob("*") if p.is_file()) == before  # refused before anything is written
    unseen = in_process(root, "evaluate", str(sweep), "--dataset", "copycat", "--dataset-param", "offset=4", "--no-progress")
    assert unseen.returncode == 0, unseen.stderr
    (model,) = sweep_models(sweep)
    assert {s.spec().dataset for s in model.scores()} == {"brats_synthetic", "copycat"}
