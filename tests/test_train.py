"""Training pieces: modality-dropping schemes, learning-rate schedules, forced reruns."""

import torch

from missbench.core.availability import draw_available
from missbench.core.training import TrainingDefaults


def test_dropout_schemes_never_drop_everything():
    g = torch.Generator().manual_seed(0)
    for scheme in ("count_then_subset", "uniform_subset", "full"):
        a = draw_available(scheme, 2000, 4, g)
        assert a.any(1).all()
    counts = draw_available("count_then_subset", 8000, 4, g).sum(1).bincount(minlength=5)[1:]
    assert (abs(counts / 8000 - 0.25) < 0.03).all()  # kept count uniform in 1..4 (ShaSpec's --mode=random)
    codes = (draw_available("uniform_subset", 15000, 4, g).long() << torch.arange(4)).sum(1).bincount(minlength=16)[1:]
    assert (abs(codes / 15000 - 1 / 15) < 0.01).all()


def test_schedules():
    cosine, poly = TrainingDefaults(schedule="cosine"), TrainingDefaults(schedule="poly")
    assert cosine.lr_factor(0, 100) == 1 and abs(cosine.lr_factor(50, 100) - 0.5) < 1e-9
    assert abs(poly.lr_factor(50, 100) - 0.5**0.9) < 1e-9
    # U-HeMIS: divide by 4 every 10k of 60k iterations.
    step = TrainingDefaults(schedule="step", step_every=1 / 6, step_gamma=0.25)
    assert [step.lr_factor(s, 60_000) for s in (0, 9_999, 10_000, 59_999)] == [1, 1, 0.25, 0.25**5]


def test_forced_rerun_trains_from_scratch(tmp_path):
    from conftest import smoke_spec
    from missbench.engine.run import run
    from missbench.core.execution import Execution

    spec = smoke_spec("zero_fill")
    exe = Execution(progress=False)
    assert run(spec, tmp_path, exe) == "done"
    assert run(spec, tmp_path, exe) == "skipped"
    assert run(spec, tmp_path, exe, force=True) == "done"
    log = (tmp_path / spec.model.model_id / "log.txt").read_text()
    assert log.count("iteration 4 lr") == 2 and "resumed from" not in log  # trained twice, never resumed
