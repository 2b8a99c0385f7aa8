"""The engine's results versions are bumped whenever its numbers move (missbench/experiment/spec.py).

tests/data/results_version.json pins, at the smoke budget, what training gives (each model's last logged
losses) under TRAINING_VERSION and what scoring gives (each score's mean value per region and metric)
under SCORING_VERSION. A commit that changes either without bumping the version fails here; after a
deliberate change, bump the version, add its line to docs/results_versions.md and write the new pins
(``python tests/test_results_version.py --write``).
"""

import json
import re
import sys
from pathlib import Path

# Run as a script (--write): this checkout's package and conftest, as under pytest.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import pytest  # noqa: E402

from conftest import CHECKOUT  # noqa: E402
from missbench.cli import main as bench  # noqa: E402
from missbench.experiment.spec import SCORING_VERSION, TRAINING_VERSION  # noqa: E402
from missbench.store.run_folder import sweep_models  # noqa: E402

PINS = Path(__file__).parent / "data" / "results_version.json"
CHANGELOG = CHECKOUT / "docs" / "results_versions.md"
#: What is trained and scored: (protocol, methods); smoke budgets, one seed.
SWEEPS = (("non_dedicated", "zero_fill,shaspec"), ("audio_rate", "zero_fill"))


def measured(out: Path) -> dict:
    """{"models": {protocol/method/rate: last losses}, "scores": {the same: {region or condition/metric: mean}}} of fresh
    smoke runs."""
    models, scores = {}, {}
    for protocol, methods in SWEEPS:
        sweep = out / protocol
        assert bench(["--protocol", protocol, "--methods", methods, "--budget", "smoke", "--seeds", "0", "--threads", "1",
                      "--no-progress", "--out", str(sweep)]) == 0
        for folder in sweep_models(sweep):
            model = folder.spec()
            key = f"{protocol}/{model.method}/{model.missing_rate}"
            models[key] = folder.meta()["final_losses"]
            (score,) = folder.scores()
            rows = score.rows()
            by = [c for c in ("region", "condition", "metric") if c in rows]
            scores[key] = {"/".join(map(str, k)): float(g.value.mean()) for k, g in rows.groupby(by)}
    return {"training_version": TRAINING_VERSION, "scoring_version": SCORING_VERSION, "models": models, "scores": scores}


def test_smoke_numbers_move_only_with_a_results_version_bump(tmp_path):
    pinned, now = json.loads(PINS.read_text()), measured(tmp_path)
    changelog = CHANGELOG.read_text()
    for kind, version in (("training", TRAINING_VERSION), ("scoring", SCORING_VERSION)):
        assert re.search(rf"^\| {kind} {version} \|", changelog, re.M), f"docs/results_versions.md has no line for {kind} {version}"
    assert (TRAINING_VERSION, SCORING_VERSION) >= (pinned["training_version"], pinned["scoring_version"])
    if TRAINING_VERSION != pinned["training_version"] or SCORING_VERSION != pinned["scoring_version"]:
        pytest.fail("a results version was bumped: write the new pins with `python tests/test_results_version.py --write`")
    assert sorted(now["models"]) == sorted(pinned["models"])
    for key, losses in pinned["models"].items():
        assert now["models"][key] == pytest.approx(losses, rel=1e-4, abs=1e-6), \
            f"training numbers of {key} moved: bump TRAINING_VERSION (missbench/experiment/spec.py) with a changelog line"
    for key, values in pinned["scores"].items():
        assert now["scores"][key] == pytest.approx(values, rel=1e-4, abs=1e-6), \
            f"scores of {key} moved with the same training: bump SCORING_VERSION with a changelog line"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        PINS.write_text(json.dumps(measured(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINS}")
