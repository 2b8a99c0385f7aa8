#!/usr/bin/env python
"""Numbers the official code computes on seeded weights and inputs, for the parity tests of gss, m2ftrans, demoseg.

The 2023-24 methods' counterpart of scripts/official_parity.py: one record per method (tests/data/parity_<method>.json)
with weights drawn in the state dict's order, as those records were made.

    python scripts/official_parity_2024.py gss      CHECKOUT   # github.com/qysgithubopen/GSS
    python scripts/official_parity_2024.py m2ftrans CHECKOUT   # github.com/Jun-Jie-Shi/M2FTrans
    python scripts/official_parity_2024.py demoseg  CHECKOUT   # github.com/kk42yy/DeMoSeg (loss terms need monai)

CHECKOUT is a checkout of the official repository (any folder holding its files; ``--commit`` records which).
The script builds the official model at a small size (through the module globals or the constructor its code
exposes), fills every entry of its state dict from a seeded generator in the state dict's order (`fill`),
runs it in float64 on seeded inputs (`inputs`, data set order FLAIR, T1, T1c, T2, permuted to the code's
order) with one availability pattern per sample, and computes the loss terms the official training script
computes, with the official functions. It writes tests/data/parity_<method>.json: the commit, the
configuration, the state dict's keys and shapes (the test regenerates the same weights from them and loads
them through the method's ``official_state_dict``), and `fingerprint`s of the outputs and the loss values:
numbers only, nothing of the official code. It also loads the same weights into this repository's method and
records the largest absolute difference over the full output tensors (``max_abs_diff``), which the test cannot
recompute without the official code.

GSS's random mask (random_mask.py) writes a float32 zero into its tensors with ``index_put``, which refuses
float64, so GSS's loss terms are computed in float32 (its outputs and soft target in float64).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The data set's modality order, and one availability pattern per sample in it.
MODS = ("FLAIR", "T1", "T1c", "T2")
AVAILABLE = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]]
#: Seeds of the weights, the inputs and the random draws of the loss.
WEIGHT_SEED, INPUT_SEED, LOSS_SEED = 7, 11, 13
#: Small configurations: the official model's and this repository's method's, and the patch.
CONFIG = {
    "gss": {"official": {"basic_dims": 4}, "ours": {"width": 4, "sep_over": "all", "gss_over": "all", "pretrain": 0.0}, "size": 16,
            "order": ("FLAIR", "T1c", "T1", "T2")},
    "m2ftrans": {"official": {"basic_dims": 4, "mlp_dim": 64, "num_heads": 8, "depth": 3, "patch_size": 2},
                 "ours": {"width": 4, "mlp_dim": 64, "heads": 8, "layers": 3, "pos_grid": 2, "sep_over": "all"}, "size": 32,
                 "order": ("FLAIR", "T1c", "T1", "T2")},
    "demoseg": {"official": {"base_num_features": 8, "num_pool": 3}, "ours": {"width": 8, "pools": 3}, "size": 16,
                "order": ("T1", "T1c", "T2", "FLAIR")},
}
#: The code's 15 missing-modality cases of DeMoSeg (DeMoSeg.py), availability in its order T1, T1ce, T2, FLAIR.
DEMOSEG_CASES = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0],
                 [0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]


def fill(keys: list[tuple[str, list[int]]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """A float64 state dict for ``keys`` (name, shape), in order from one seeded generator: weight tensors
    N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2), other vectors N(0, 0.1^2), learnable token and position tables
    N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in keys:
        v = torch.randn(shape, generator=g, dtype=torch.float64)
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("pos", "fusion"):
            pass
        elif len(shape) >= 2:
            v = v / math.sqrt(math.prod(shape[1:]))
        elif "norm" in name and leaf == "weight":
            v = 1 + 0.1 * v
        else:
            v = 0.1 * v
        out[name] = v
    return out


def inputs(size: int, batch: int = len(AVAILABLE)) -> tuple[torch.Tensor, torch.Tensor]:
    """(B x 4 x S^3 float64 images in the data set's order, B x S^3 labels in 0/1/2/4)."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(batch, 4, size, size, size, generator=g, dtype=torch.float64)
    index = torch.randint(0, 4, (batch, size, size, size), generator=g)
    return x, torch.tensor([0, 1, 2, 4])[index]


def fingerprint(t: torch.Tensor, samples: int = 64) -> dict[str, Any]:
    """Shape, sums and ``samples`` evenly spaced entries of ``t`` (as float64 numbers)."""
    flat = t.detach().to(torch.float64).flatten()
    at = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel())).round().long()
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "samples": [float(v) for v in flat[at]]}


def code_order(x: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    return x[:, [MODS.index(m) for m in order]]


def available(order: tuple[str, ...] | None = None) -> torch.Tensor:
    a = torch.tensor(AVAILABLE, dtype=torch.bool)
    return a if order is None else code_order(a, order)


def our_method(name: str, keys: list[tuple[str, list[int]]], dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """This repository's method at the small configuration with the filled official weights loaded."""
    from missbench.core.tasks import get_task
    from missbench.experiment.registry import method_class

    model = method_class(name)(get_task("segmentation"), MODS, **CONFIG[name]["ours"]).to(dtype).eval()
    model.load_state_dict({k: v.to(dtype) for k, v in model.official_state_dict(fill(keys)).items()}, strict=True)
    return model


def onehot4(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    index = torch.zeros_like(labels)
    for i, lab in enumerate((0, 1, 2, 4)):
        index[labels == lab] = i
    return F.one_hot(index, 4).movedim(-1, 1).to(dtype)


# --- GSS ---


def gss(checkout: Path) -> dict[str, Any]:
    sys.path.insert(0, str(checkout))
    import models_GSS  # noqa: E402  (the official files)
    from GSS_choice import double_teacher, singel_teacher  # noqa: E402
    from random_mask import random_mask  # noqa: E402
    from utils import criterions  # noqa: E402

    cfg = CONFIG["gss"]
    models_GSS.basic_dims = cfg["official"]["basic_dims"]
    torch.manual_seed(0)
    official = models_GSS.Model(num_cls=4)
    keys = [(k, list(v.shape)) for k, v in official.state_dict().items()]
    official.double().load_state_dict(fill(keys))  # float64 first: loading casts to the parameters' dtype
    x, labels = inputs(cfg["size"])
    xc, mask = code_order(x, cfg["order"]), available(cfg["order"])
    out: dict[str, Any] = {"keys": keys}

    def run(dtype: torch.dtype) -> dict[str, Any]:
        model = official.to(dtype).eval()
        model.is_training = True
        target = onehot4(labels, dtype)
        with torch.no_grad():
            fuse_pred, sep_preds, prm_preds, seg_logits = model(xc.to(dtype), mask)
            temp, tp, tm, p = 8.0, 0.75, 0.85, 0.3  # train_GSS.py's defaults
            flair, t1ce, t1, t2 = (F.softmax(s / temp, dim=1) for s in seg_logits)
            fp, cp, tp1, t2p = sep_preds
            c = [slice(i, i + 1) for i in range(4)]
            # train_GSS.py, the soft target: the official functions on the official arguments.
            s1 = singel_teacher(fp[:, c[0]].clone(), cp[:, c[0]].clone(), tp1[:, c[0]].clone(), t2p[:, c[0]].clone(), 0, 1,
                                flair[:, c[0]].clone(), t1ce[:, c[0]].clone(), t1[:, c[0]].clone(), t2[:, c[0]].clone(), tp, tm)
            s2 = singel_teacher(cp[:, c[1]].clone(), fp[:, c[1]].clone(), tp1[:, c[1]].clone(), t2p[:, c[1]].clone(), 0, 1,
                                t1ce[:, c[1]].clone(), flair[:, c[1]].clone(), t1[:, c[1]].clone(), t2[:, c[1]].clone(), tp, tm)
            s3 = double_teacher(fp[:, c[2]].clone(), t2p[:, c[2]].clone(), cp[:, c[2]].clone(), tp1[:, c[2]].clone(), 0, 1,
                                flair[:, c[2]].clone(), t2[:, c[2]].clone(), t1ce[:, c[2]].clone(), t1[:, c[2]].clone(), tp, tm, p)
            s4 = singel_teacher(cp[:, c[3]].clone(), fp[:, c[3]].clone(), tp1[:, c[3]].clone(), t2p[:, c[3]].clone(), 0, 1,
                                t1ce[:, c[3]].clone(), flair[:, c[3]].clone(), t1[:, c[3]].clone(), t2[:, c[3]].clone(), tp, tm)
            total = s1 + s2 + s3 + s4
            soft_target = torch.cat([s1 / total, s2 / total, s3 / total, s4 / total], dim=1)
            result = {"fuse_pred": fuse_pred, "soft_target": soft_target}
            if dtype == torch.float32:
                torch.manual_seed(LOSS_SEED)
                soft = 0
                for student in (flair, t1ce, t1, t2):
                    t_masked, s_masked = random_mask(soft_target, student, 0.2)
                    soft = soft + criterions.softmax_weighted_loss(s_masked, t_masked, num_cls=4)
                result["losses"] = {
                    "fuse_ce": criterions.softmax_weighted_loss(fuse_pred, target, num_cls=4),
                    "fuse_dice": criterions.dice_loss(fuse_pred, target, num_cls=4),
                    "sep_ce": 0.7 * sum(criterions.softmax_weighted_loss(s, target, num_cls=4) for s in sep_preds),
                    "sep_dice": 0.7 * sum(criterions.dice_loss(s, target, num_cls=4) for s in sep_preds),
                    "prm_ce": sum(criterions.softmax_weighted_loss(q, target, num_cls=4) for q in prm_preds),
                    "prm_dice": sum(criterions.dice_loss(q, target, num_cls=4) for q in prm_preds),
                    "gss_ce": soft * 0.3 * temp * temp / 10,
                }
        return result

    ref64, ref32 = run(torch.float64), run(torch.float32)
    out["outputs"] = {"fuse_probs": fingerprint(ref64["fuse_pred"]), "soft_target": fingerprint(ref64["soft_target"])}
    out["losses_float32"] = {k: float(v) for k, v in ref32["losses"].items()}
    # Ours, for the record: the full tensors.
    ours = our_method("gss", keys)
    with torch.no_grad():
        probs = ours(x, available()).logits.softmax(1)
    out["max_abs_diff"] = {"fuse_probs": float((probs - ref64["fuse_pred"]).abs().max())}
    return out


# --- M2FTrans ---


def m2ftrans(checkout: Path) -> dict[str, Any]:
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the code moves its attention masks to CUDA
    sys.path.insert(0, str(checkout / "M2FTrans_v1"))
    from models import fusiontrans  # noqa: E402
    from utils import criterions  # noqa: E402

    cfg = CONFIG["m2ftrans"]
    for k, v in cfg["official"].items():
        setattr(fusiontrans, k, v)
    torch.manual_seed(0)
    official = fusiontrans.Model(num_cls=4)
    keys = [(k, list(v.shape)) for k, v in official.state_dict().items()]
    official = official.double()
    official.load_state_dict(fill(keys))
    official.eval()
    official.is_training = True
    x, labels = inputs(cfg["size"])
    target = onehot4(labels, torch.float64)
    with torch.no_grad():
        fuse_pred, sep_preds, prm_preds = official(code_order(x, cfg["order"]), available(cfg["order"]))
    losses = {
        "fuse_ce": criterions.softmax_weighted_loss(fuse_pred, target, num_cls=4),
        "fuse_dice": criterions.dice_loss(fuse_pred, target, num_cls=4),
        "sep_ce": sum(criterions.softmax_weighted_loss(s, target, num_cls=4) for s in sep_preds),
        "sep_dice": sum(criterions.dice_loss(s, target, num_cls=4) for s in sep_preds),
        "prm_ce": sum(criterions.softmax_weighted_loss(q, target, num_cls=4) for q in prm_preds),
        "prm_dice": sum(criterions.dice_loss(q, target, num_cls=4) for q in prm_preds),
    }
    out: dict[str, Any] = {"keys": keys, "outputs": {"fuse_probs": fingerprint(fuse_pred)},
                           "losses": {k: float(v) for k, v in losses.items()}}
    ours = our_method("m2ftrans", keys)
    with torch.no_grad():
        probs = ours(x, available()).logits.softmax(1)
    out["max_abs_diff"] = {"fuse_probs": float((probs - fuse_pred).abs().max())}
    return out


# --- DeMoSeg ---


def demoseg(checkout: Path) -> dict[str, Any]:
    sys.path.insert(0, str(checkout / "DeMoSeg"))
    from training.network.DeMoSeg import DeMoSeg  # noqa: E402

    cfg = CONFIG["demoseg"]
    torch.manual_seed(0)
    official = DeMoSeg(input_channels=4, num_classes=4, **cfg["official"])
    keys = [(k, list(v.shape)) for k, v in official.state_dict().items()]
    official = official.double()
    official.load_state_dict(fill(keys))
    official.eval()
    x, labels = inputs(cfg["size"])
    xc, mask = code_order(x, cfg["order"]), available(cfg["order"])
    cases = [DEMOSEG_CASES.index(row) for row in mask.int().tolist()]
    outputs, per_sample = {}, []
    with torch.no_grad():
        for b, case in enumerate(cases):
            official.modality = case  # the evaluation's missing-modality case
            ds = official(xc[b : b + 1])  # deep-supervision logits, full resolution first
            per_sample.append(ds)
            for k, t in enumerate(ds):
                outputs[f"sample{b}_out{k}"] = fingerprint(t)
        stem = official.conv_blocks_context[0].train()
        fused, kl = stem(xc * mask.to(xc.dtype)[:, :, None, None, None], cases)  # the code masks the inputs first
    out: dict[str, Any] = {"keys": keys, "cases": cases, "outputs": {**outputs, "rcr": fingerprint(fused)},
                           "losses": {"kd": float(kl)}}
    try:
        from monai.losses.dice import DiceCELoss
    except ImportError:
        print("monai is not installed: the deep-supervision loss is not recorded")
    else:
        loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
        index = torch.zeros_like(labels)
        for i, lab in enumerate((0, 1, 2, 4)):
            index[labels == lab] = i
        n = len(per_sample[0])
        w = torch.tensor([1 / 2**i for i in range(n)], dtype=torch.float64)  # the code: numpy float64
        w[-1] = 0
        w = w / w.sum()
        total = 0.0
        for b, ds in enumerate(per_sample):
            for k, t in enumerate(ds):
                lab = F.interpolate(index[b : b + 1, None].double(), size=t.shape[2:], mode="nearest")  # the harness's resize
                total += float(w[k]) * float(loss(t, lab))
        out["losses"]["ds_per_sample_sum"] = total
    ours = our_method("demoseg", keys)
    with torch.no_grad():
        mine = ours(x, available()).logits
    diff = max(float((mine[b : b + 1] - per_sample[b][0]).abs().max()) for b in range(len(cases)))
    out["max_abs_diff"] = {"logits": diff}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", choices=sorted(CONFIG))
    p.add_argument("checkout", type=Path)
    p.add_argument("--commit", default=None, help="the checkout's commit (default: git rev-parse HEAD in it)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    commit = args.commit or subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    torch.set_num_threads(1)
    result = {"method": args.method, "commit": commit, "config": CONFIG[args.method], "available": AVAILABLE,
              "seeds": {"weights": WEIGHT_SEED, "inputs": INPUT_SEED, "loss": LOSS_SEED}, "torch": torch.__version__,
              **{"gss": gss, "m2ftrans": m2ftrans, "demoseg": demoseg}[args.method](args.checkout.resolve())}
    path = args.out or ROOT / "tests" / "data" / f"parity_{args.method}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{path}: max abs difference, ours vs the code, {result['max_abs_diff']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
