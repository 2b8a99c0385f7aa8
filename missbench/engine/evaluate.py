"""Evaluation: sliding-window inference of every case on every evaluation subset, scored per case.

Every subset is scored on the same cases in the same order (DESIGN invariant 2). Methods that
encode each modality on its own are encoded once per window: the features of an available modality
are the same in every subset that contains it, and a missing modality's are those of an all-zero
input (the harness zeroes missing inputs), computed once per window shape. Only fusion and decoding
run per subset. Other methods run one full pass per subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from missbench.core.dataset import Case, Samples
from missbench.core.availability import Inputs, batch_size, device, shape_key, zero_inputs, zeros_like
from missbench.core.method import Method
from missbench.core.metrics import score_case
from missbench.engine.profile import PhaseTimer
from missbench.experiment.spec import Execution, RunSpec
from missbench.core.subsets import Subset, subset_from_mask
from missbench.core.tasks.segmentation import sliding_window


def subset_predictor(method: Method, subsets: list[Subset], shared: bool = True,
                     timer: PhaseTimer | None = None) -> Callable[[Inputs], list[torch.Tensor]]:
    """A function mapping a batch of windows (B x M x ..., or a list of per-modality batches) to one
    probability map per subset.

    The features of an all-zero window are cached per window shape for the predictor's lifetime.
    With a ``timer``, encoding, decoding and plain forward passes are timed as phases.
    """
    timer = timer or PhaseTimer()
    masks = torch.tensor([s.mask for s in subsets])
    zero_cache: dict[tuple[int, ...], list] = {}

    def plain(windows: Inputs) -> list[torch.Tensor]:
        outs = []
        for mask in masks:
            avail = mask.expand(batch_size(windows), -1).to(device(windows))
            with timer.phase("forward"):
                logits = method(zero_inputs(windows, avail), avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def shared_encoding(windows: Inputs) -> list[torch.Tensor] | None:
        with timer.phase("encode"):
            feats = method.encode(windows)
        if feats is None:
            return None
        key = shape_key(windows)
        if key not in zero_cache:
            zero_cache[key] = method.encode(zeros_like(windows))
        zeros = zero_cache[key]
        outs = []
        for mask in masks:
            avail = mask.expand(batch_size(windows), -1).to(device(windows))
            mixed = [f if a else z for f, z, a in zip(feats, zeros, mask.tolist())]
            with timer.phase("decode"):
                logits = method.decode(mixed, avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def predict(windows: Inputs) -> list[torch.Tensor]:
        if shared:
            outs = shared_encoding(windows)
            if outs is not None:
                return outs
        return plain(windows)

    return predict


@torch.inference_mode()
def predict_case(predict: Callable[[torch.Tensor], list[torch.Tensor]], method: Method, case: Case, spec: RunSpec, exe: Execution) -> list:
    """Label maps of one case, one per subset of ``predict`` (a `subset_predictor`)."""
    volume = torch.from_numpy(case.image).float()[None].to(exe.device)
    with exe.autocast():
        probs = sliding_window(volume, spec.budget.patch, lambda w: predict(exe.prepare(w)), spec.budget.overlap, exe.window_batch,
                               spec.metric.get("window", "uniform"))
    return [method.task.to_labels(p[0].cpu().numpy(), method.output) for p in probs]


def evaluate(method: Method, cases: Iterator[Case] | Samples, subsets: list[Subset], spec: RunSpec, exe: Execution,
             masks: np.ndarray | None = None, timer: PhaseTimer | None = None) -> list[dict]:
    """Long-format rows: one per (case, subset, region, metric) on segmentation; on classification
    (``cases`` a `Samples` split) one per (sample, condition), see `classify`."""
    if isinstance(cases, Samples):
        return classify(method, cases, subsets, exe, masks, timer)
    timer = timer or PhaseTimer()
    method.eval()
    predict = subset_predictor(method, subsets, timer=timer)
    rows = []
    for case in cases:
        for subset, pred in zip(subsets, predict_case(predict, method, case, spec, exe)):
            where = {"case_id": case.case_id, "eval_subset": subset.label, "eval_code": subset.code, "n_available": len(subset)}
            with timer.phase("metric"):
                rows += [where | score for score in score_case(pred, case.target, case.spacing, spec.metric["empty"], spec.metric["et_threshold"])]
    return rows


#: Samples per forward pass on classification (evaluation, and the data a training stage sees).
EVAL_BATCH = 256


@torch.inference_mode()
def classify(method: Method, samples: Samples, subsets: list[Subset], exe: Execution, masks: np.ndarray | None = None,
             timer: PhaseTimer | None = None) -> list[dict]:
    """Rows of a classification split: every sample on every subset, or, with ``masks`` (N x M), each
    sample once with its own availability. Batched; per-modality features are shared across the
    subsets of a batch when the method encodes modalities separately. Rows are in sample order.

    Each row: case_id, eval_subset (the sample's actual available subset), eval_code, n_available,
    condition (the subset, or "masks"), target, pred, prob (class probabilities), metric "correct", value 0/1.
    """
    method.eval()
    mods = method.modalities
    if masks is None:
        plan = [(np.arange(len(samples)), subsets)]
    else:
        codes = masks.astype(np.int64) @ (1 << np.arange(masks.shape[1]))
        plan = [(np.flatnonzero(codes == c), [subset_from_mask(masks[codes == c][0].tolist(), mods)]) for c in np.unique(codes)]
    rows: list[tuple[int, int, dict]] = []
    for idx_all, subs in plan:
        predict = subset_predictor(method, subs, timer=timer)
        for start in range(0, len(idx_all), EVAL_BATCH):
            idx = idx_all[start:start + EVAL_BATCH]
            with exe.autocast():
                probs = predict(exe.prepare([torch.from_numpy(a[idx]).float() for a in samples.x]))
            for k, (subset, p) in enumerate(zip(subs, probs)):
                p = p.float().cpu().numpy()
                pred = method.task.to_labels(p, method.output)
                for j, i in enumerate(idx.tolist()):
                    target = int(samples.y[i])
                    rows.append((i, k, {
                        "case_id": samples.ids[i], "eval_subset": subset.label, "eval_code": subset.code, "n_available": len(subset),
                        "condition": subset.label if masks is None else "masks", "target": target, "pred": int(pred[j]),
                        "prob": p[j].tolist(), "metric": "correct", "value": float(pred[j] == target),
                    }))
    return [r for *_, r in sorted(rows, key=lambda t: (t[1], t[0]))]
