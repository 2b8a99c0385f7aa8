"""Learning-rate schedules against the official code's formulas.

ShaSpec (github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091): run.sh runs train_SS.py twice,
``--num_steps=80000`` with every modality, then resumed from that run's last iteration (79,999) with
``--num_steps=180000 --mode=random``; train_SS.py ``lr_poly``: lr * (1 - i_iter / num_steps) ** 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest

from missbench.core.params import ParamError
from missbench.core.training import SHASPEC_TRAINING


def code_lr(i_iter: int) -> float:
    """The rate factor the official two runs use at iteration ``i_iter`` (the second run's first, 79,999, aside)."""
    return (1 - i_iter / 80000) ** 0.9 if i_iter < 80000 else (1 - i_iter / 180000) ** 0.9


def test_two_stage_poly_is_shaspecs_run_sh():
    cfg = SHASPEC_TRAINING.replace(schedule="two_stage_poly")
    total = 180000
    steps = np.arange(0, total, 7)
    ours = np.array([cfg.lr_factor(int(s), total) for s in steps])
    assert ours == pytest.approx([code_lr(int(s)) for s in steps], abs=1e-12)
    warm = steps < 80000
    assert cfg.lr * ours[warm].mean() == pytest.approx(0.00526, abs=5e-5)  # 1 / 1.9 of the base rate
    one_poly = np.array([SHASPEC_TRAINING.replace(schedule="poly").lr_factor(int(s), total) for s in steps])
    assert cfg.lr * one_poly[warm].mean() == pytest.approx(0.00797, abs=5e-5)  # what the single poly gave
    assert cfg.lr_factor(79999, total) < 1e-3 and cfg.lr_factor(80000, total) == pytest.approx((1 - 80000 / 180000) ** 0.9)
    # the boundary is the trainer's (round(warmup_fraction * budget)) at any budget
    assert cfg.lr_factor(443, 1000) > 0 and cfg.lr_factor(444, 1000) == pytest.approx((1 - 0.444) ** 0.9)
    # no warm-up: one poly
    assert cfg.replace(warmup_fraction=0.0).lr_factor(500, 1000) == pytest.approx(0.5 ** 0.9)


def test_schedule_and_sampler_are_checked():
    with pytest.raises(ParamError, match="schedule"):
        SHASPEC_TRAINING.replace(schedule="poly2")
    with pytest.raises(ParamError, match="sampler"):
        SHASPEC_TRAINING.replace(sampler="nnunet")
