"""Evaluation: sliding-window inference of every case on every evaluation subset, scored per case.

Every subset is scored on the same cases in the same order (DESIGN invariant 2). Methods that
encode each modality on its own are encoded once per window: the features of an available modality
are the same in every subset that contains it, and a missing modality's are those of an all-zero
input (the harness zeroes missing inputs), computed once per window shape. Only fusion and decoding
run per subset. Other methods run one full pass per subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from missbench.dataset import Case
from missbench.dropout import zero_missing
from missbench.method import Method
from missbench.metrics import score_case
from missbench.spec import Execution, RunSpec
from missbench.subsets import Subset
from missbench.tasks.segmentation import sliding_window


def subset_predictor(method: Method, subsets: list[Subset], shared: bool = True) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A function mapping a batch of windows (B x M x ...) to one probability map per subset.

    The features of an all-zero window are cached per window shape for the predictor's lifetime.
    """
    masks = torch.tensor([s.mask for s in subsets])
    zero_cache: dict[tuple[int, ...], list] = {}

    def plain(windows: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for mask in masks:
            avail = mask.expand(windows.shape[0], -1).to(windows.device)
            logits = method(zero_missing(windows, avail), avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def shared_encoding(windows: torch.Tensor) -> list[torch.Tensor] | None:
        feats = method.encode(windows)
        if feats is None:
            return None
        key = tuple(windows.shape)
        if key not in zero_cache:
            zero_cache[key] = method.encode(torch.zeros_like(windows))
        zeros = zero_cache[key]
        outs = []
        for mask in masks:
            avail = mask.expand(windows.shape[0], -1).to(windows.device)
            mixed = [f if a else z for f, z, a in zip(feats, zeros, mask.tolist())]
            logits = method.decode(mixed, avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def predict(windows: torch.Tensor) -> list[torch.Tensor]:
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
    probs = sliding_window(volume, spec.budget.patch, lambda w: predict(exe.prepare(w)), spec.budget.overlap, exe.window_batch)
    return [method.task.to_labels(p[0].cpu().numpy(), method.output) for p in probs]


def evaluate(method: Method, cases: Iterator[Case], subsets: list[Subset], spec: RunSpec, exe: Execution) -> list[dict]:
    """Long-format rows: one per (case, subset, region, metric)."""
    method.eval()
    predict = subset_predictor(method, subsets)
    rows = []
    for case in cases:
        for subset, pred in zip(subsets, predict_case(predict, method, case, spec, exe)):
            where = {"case_id": case.case_id, "eval_subset": subset.label, "eval_code": subset.code, "n_available": len(subset)}
            rows += [where | score for score in score_case(pred, case.target, case.spacing, spec.metric["empty"], spec.metric["et_threshold"])]
    return rows
