#!/usr/bin/env python
"""Run each method's official code on seeded weights and inputs and write what it computes (numbers only) to
tests/data/official_parity.json, which tests/test_official_parity.py compares this project against.

    python scripts/official_parity.py --checkout shaspec=/tmp/ShaSpec --checkout rfnet=/tmp/RFNet \\
        --checkout mmformer=/tmp/mmFormer --checkout uhved=/tmp/U-HVED --checkout smil=/tmp/SMIL \\
        --checkout ul4m4=/tmp/UL4M4 [--only rfnet,mmformer] [--out PATH]

Each checkout is a clone of the repository below at the commit below (the script refuses another commit,
and records the one it ran); nothing of them is copied into this repository, and this script contains none
of their code: it imports their files from the checkout and calls them. What it adds is named where it
happens: the loss compositions of the training scripts (a few lines of train.py / train_SS.py that sum the
official loss functions; each written out below with its line), import stubs for packages the model files
import but these calls never reach (matplotlib windows, CLIP, NiftyNet's layer classes), ShaSpec's own
documented fix for torch's InstanceNorm size check, and, for U-HVED (TensorFlow 1 / NiftyNet, not runnable
here), a numpy stand-in for the dozen TensorFlow array operations its fusion and loss functions call, so that
those functions (GaussianSampler, Product_Gaussian_main, compute_KLD, HeMISAbstractionBlock) run as written.

Weights: every tensor of the official model's state dict is drawn from (seed, its name, its shape)
(tests/official_numbers.py); the names and shapes are recorded, so the test rebuilds the same weights and
maps them with the method's ``official_state_dict`` (or, for SMIL, the test's renaming). Inputs are seeded
too. Models run in float64, in evaluation mode with the
training outputs switched on where the code has such a switch (RFNet's and mmFormer's ``is_training``), so
that dropout draws nothing.

Requires torch, numpy, scipy and scikit-learn (the project's environment).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from official_numbers import AVAILABLE, DATA, DATA_ORDER, brain_case, seeded_input, seeded_state, summary  # noqa: E402

SEED = 0
#: The official repositories and the commits whose code the numbers are of.
REPOSITORIES = {
    "shaspec": ("github.com/billhhh/ShaSpec", "081fe7a1e40d6bbc0736dc93e779a0a5a439d091"),
    "rfnet": ("github.com/dyh127/RFNet", "1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4"),
    "mmformer": ("github.com/YaoZhang93/mmFormer", "b18663adbfd0323656083e0470420c8c715c1782"),
    "uhved": ("github.com/ReubenDo/U-HVED", "1d293a87d496c52adafd69dbcea37767ac6a7ee8"),
    "smil": ("github.com/mengmenm/SMIL", "0d0e827a31097650db7f6b487e2cccbeee39b29c"),
    "ul4m4": ("github.com/h-ismkhan/Multimodal-Learning-with-Missing-Modalities-via-Unsupervised-Learning",
              "0f84e8fb5e81707f0e4ee36b1b277429f042dc5c"),
}
#: RFNet's and mmFormer's input order (preprocess.py stacks FLAIR, T1ce, T1, T2).
BRAIN_ORDER = ("FLAIR", "T1c", "T1", "T2")


def head_commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def on_path(path: Path, stubs: dict[str, types.ModuleType] | None = None):
    """``path`` first on sys.path with ``stubs`` installed; the modules imported meanwhile are dropped afterwards
    (the repositories share module names: models, layers, utils)."""
    before = set(sys.modules)
    saved = {name: sys.modules.get(name) for name in (stubs or {})}
    sys.modules.update(stubs or {})
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for name in set(sys.modules) - before:
            del sys.modules[name]
        for name, module in saved.items():
            if module is not None:
                sys.modules[name] = module


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def seed_module(module: torch.nn.Module, dtype: torch.dtype, prefix: str = "") -> dict[str, list[int]]:
    """Load the seeded weights of the module's own parameter names (``prefix`` + name) into it; their shapes."""
    state = module.state_dict()
    named = {prefix + k: list(v.shape) for k, v in state.items()}
    seeded = seeded_state(named, SEED, dtype)
    module.load_state_dict({k[len(prefix):]: v for k, v in seeded.items()}, strict=True)
    return named


def in_order(t: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    return t[:, [DATA_ORDER.index(m) for m in order]]


def onehot4(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """RFNet's target: label 4 -> class 3, one-hot over 4 classes (data/datasets_nii.py)."""
    index = labels.clone()
    index[labels == 4] = 3
    return F.one_hot(index, 4).movedim(-1, 1).to(dtype)


# --------------------------------------------------------------------------------------------- RFNet


def rfnet_like(model: torch.nn.Module, criterions: types.ModuleType, size: int) -> dict[str, Any]:
    """RFNet's / mmFormer's training forward and train.py's loss terms (train.py lines 163-182 of both: the
    weighted CE and Dice of the fused prediction, of each separate-decoder prediction summed, and of each
    region / deep-supervision prediction summed)."""
    x, available, labels = brain_case((size,) * 3, SEED, torch.float64)
    model.eval()  # instance norms only; eval draws no dropout (mmFormer's Transformer)
    model.is_training = True
    with torch.no_grad():
        fuse, seps, prms = model(in_order(x, BRAIN_ORDER), in_order(available, BRAIN_ORDER))
    target = onehot4(labels, torch.float64)
    losses = {"fuse_ce": criterions.softmax_weighted_loss(fuse, target, num_cls=4),
              "fuse_dice": criterions.dice_loss(fuse, target, num_cls=4)}
    for name, preds in (("sep", seps), ("prm", prms)):
        losses[f"{name}_ce"] = sum(criterions.softmax_weighted_loss(p, target, num_cls=4) for p in preds)
        losses[f"{name}_dice"] = sum(criterions.dice_loss(p, target, num_cls=4) for p in preds)
    return {"outputs": {"fuse_probabilities": summary(fuse, "fuse")}, "losses": {k: float(v) for k, v in losses.items()},
            "input": {"size": [size] * 3, "batch": len(AVAILABLE), "dtype": "float64"}}


def run_rfnet(path: Path) -> dict[str, Any]:
    with on_path(path):
        models = importlib.import_module("models")
        criterions = load_file("rfnet_criterions", path / "utils" / "criterions.py")
        torch.manual_seed(SEED)
        model = models.Model(num_cls=4).double()
        state = seed_module(model, torch.float64)
        out = rfnet_like(model, criterions, 16)  # 16^3: the deepest scale 2^3
    return {"files": ["models.py", "layers.py", "utils/criterions.py", "train.py (loss terms, lines 163-182)"],
            "setting": {"num_cls": 4}, "state": state, **out}


# --------------------------------------------------------------------------------------------- mmFormer

#: mmformer.py's module constants set before the model is built (its defaults: 512, 4096, 8, 8 for 128^3):
#: a 32^3 input leaves 2^3 tokens per modality, and the widths shrink so the test runs in seconds.
MMFORMER_CONSTANTS = {"transformer_basic_dims": 32, "mlp_dim": 64, "num_heads": 8, "patch_size": 2}


def run_mmformer(path: Path) -> dict[str, Any]:
    with on_path(path / "mmformer"):
        mm = importlib.import_module("mmformer")
        for name, value in MMFORMER_CONSTANTS.items():
            setattr(mm, name, value)
        criterions = load_file("mmformer_criterions", path / "mmformer" / "utils" / "criterions.py")
        torch.manual_seed(SEED)
        model = mm.Model(num_cls=4).double()
        state = seed_module(model, torch.float64)
        out = rfnet_like(model, criterions, 32)
    return {"files": ["mmformer/mmformer.py", "mmformer/layers.py", "mmformer/utils/criterions.py",
                      "mmformer/train.py (loss terms, lines 163-182)"],
            "setting": {"num_cls": 4, "module_constants": MMFORMER_CONSTANTS}, "state": state, **out}


# --------------------------------------------------------------------------------------------- ShaSpec


def run_shaspec(path: Path) -> dict[str, Any]:
    """DualNet_SS at the smallest input its decoder divides (16 x 32 x 64), float64 (in float32 the instance norms
    over layer4's two voxels amplify rounding: the code's own batch of four and its single samples then differ
    by 1.3); one forward per sample with its availability as ``mode`` (indices in the code's order FLAIR, T1,
    T1ce, T2); train_SS.py's loss terms."""
    # The README's "Bug Fixing": InstanceNorm on the ASPP's 1x1x1 global branch (torch refuses it since 1.8).
    verify = getattr(torch.nn.functional, "_verify_spatial_size", None)
    torch.nn.functional._verify_spatial_size = lambda size: None
    try:
        with on_path(path):
            dual = importlib.import_module("DualNet_SS")
            loss = importlib.import_module("loss_Dual")
            torch.manual_seed(SEED)
            model = dual.DualNet_SS(types.SimpleNamespace(), norm_cfg="IN", activation_cfg="LeakyReLU", num_classes=3,
                                    weight_std=True, self_att=False, cross_att=False).double()
            state = seed_module(model, torch.float64)
            model.eval()
            x, available, labels = brain_case((16, 32, 64), SEED, torch.float64)
            dice, bce, dom, l1 = loss.DiceLoss4BraTS(), loss.BCELoss4BraTS(), loss.DomainClsLoss(), torch.nn.L1Loss()
            logits, terms = [], []
            with torch.no_grad():
                for b in range(len(AVAILABLE)):
                    mode = ",".join(str(i) for i in available[b].nonzero().flatten().tolist())
                    image = x[b : b + 1]
                    preds, shared, spec, _ = model(image, mode=mode)
                    label = labels[b : b + 1]
                    # BraTSDataSet.id2trainId: channels ET, WT, TC
                    region = torch.stack([label == 4, label > 0, (label == 1) | (label == 4)], 1).double()
                    n, c = image.shape[:2]
                    # train_SS.py lines 277-297: Dice + BCE, the L1 cycle of the shared features, the domain CE
                    shared_term = (l1(shared[0::c], shared[1::c]) + l1(shared[1::c], shared[2::c])
                                   + l1(shared[2::c], shared[3::c]) + l1(shared[3::c], shared[0::c]))
                    spec_labels = torch.arange(c).repeat(n)
                    terms.append({"dice": dice(preds, region), "bce": bce(preds, region), "dao": 0.1 * shared_term,
                                  "dco": 0.02 * dom(spec, spec_labels)})
                    logits.append(preds)
    finally:
        if verify is not None:
            torch.nn.functional._verify_spatial_size = verify
    logits_all = torch.cat(logits)
    losses = {k: float(sum(t[k] for t in terms) / len(terms)) for k in terms[0]}
    return {"files": ["DualNet_SS.py", "Res50.py", "loss_Dual.py", "train_SS.py (loss terms, lines 277-297; alpha 0.1, beta 0.02)"],
            "setting": {"norm_cfg": "IN", "activation_cfg": "LeakyReLU", "num_classes": 3, "weight_std": True,
                        "outputs": "ET, WT, TC (id2trainId)", "losses": "per sample (its own mode), then the mean over samples"},
            "state": state, "outputs": {"logits": summary(logits_all, "logits")}, "losses": losses,
            "input": {"size": [16, 32, 64], "batch": len(AVAILABLE), "dtype": "float64"}}


# --------------------------------------------------------------------------------------------- SMIL


def run_smil(path: Path) -> dict[str, Any]:
    """SoundLenet5New (LeNet5 + SNetPluse) with InferNetNew, evaluation mode: the image-only forward with the
    audio reconstructed from the priors (``mode='one'``, ``noise_layer=['fc0','fc1','fc2']``, ``meta_train=False``,
    as eval_image_test), the paired forward (``mode='two'``), and the meta-validation loss of
    train_missing_eval_missing.py (``KDLossAlignTwo(alpha=0.01, beta=0.01)`` of the two) on the paired samples."""
    with on_path(path / "src"):
        lenet5 = importlib.import_module("models.lenet5")
        snet = importlib.import_module("models.snet")
        sound = importlib.import_module("models.soundlenet5")
        infer = importlib.import_module("models.newencoder")
        losses_mod = importlib.import_module("models.loss")
        torch.manual_seed(SEED)
        model = sound.SoundLenet5New(lenet5.LeNet5(), snet.SNetPluse()).double()
        encoder = infer.InferNetNew().double()
        state = seed_module(model, torch.float64) | seed_module(encoder, torch.float64, "encoder.")
        model.eval(), encoder.eval()
        n = 6
        image = seeded_input("smil_image", (n, 1, 28, 28), SEED)
        audio = seeded_input("smil_audio", (n, 1, 20, 20), SEED)
        labels = torch.from_numpy(np.arange(n) % 10)
        priors = seeded_input("smil_priors", (10, 320), SEED)  # get_sound_mean_kmean.py saves K x 320; main() transposes
        with torch.no_grad():
            one = model(labels, image, sound=None, encoder=encoder, sound_mean=priors.T, noise_layer=["fc0", "fc1", "fc2"],
                        meta_train=False, mode="one")
            two = model(labels, image, sound=audio, mode="two")
            paired = slice(0, 4)
            kd = losses_mod.KDLossAlignTwo(alpha=0.01, beta=0.01)
            outer = kd(two[3][paired], one[3][paired], two[1][paired], one[1][paired], two[2][paired], one[2][paired],
                       one[0][paired], two[0][paired], labels[paired])
    names = ("logits", "fused", "hidden", "audio_feature")
    outputs = {f"image_only.{k}": summary(v, f"one.{k}") for k, v in zip(names, one)}
    outputs |= {f"paired.{k}": summary(v, f"two.{k}") for k, v in zip(names[:3], two[:3])}
    return {"files": ["src/models/soundlenet5.py", "src/models/lenet5.py", "src/models/snet.py", "src/models/newencoder.py",
                      "src/models/loss.py", "src/train_missing_eval_missing.py (eval_image_test; meta_training lines 241-248)"],
            "setting": {"k": 10, "image": [1, 28, 28], "audio": [1, 20, 20], "paired_samples": 4, "batch": n},
            "state": state, "outputs": outputs, "losses": {"outer": float(outer)}}


# --------------------------------------------------------------------------------------------- U-HVED


def numpy_tf() -> types.ModuleType:
    """The TensorFlow 1 operations u_hved_net.py, u_hemis_net.py and application.py call in the functions run
    here, on numpy arrays (float64), each with TF's meaning; the graph-building calls are no-ops."""
    tf = types.ModuleType("tensorflow")
    tf.set_random_seed = lambda seed: None
    tf.shape = lambda a: np.shape(a)
    tf.zeros = lambda shape: np.zeros(shape)
    tf.exp, tf.log, tf.square = np.exp, np.log, np.square
    tf.boolean_mask = lambda a, mask: np.asarray(a)[np.asarray(mask, dtype=bool)]
    tf.concat = lambda values, axis: np.concatenate([np.asarray(v) for v in values], axis)
    tf.reduce_sum = lambda a, axis=None: np.sum(a, axis)
    tf.reduce_mean = lambda a, axis=None: np.mean(a, axis)
    tf.add_n = lambda values: np.sum(np.stack(values), 0)
    tf.random_normal = lambda shape, mean=0.0, stddev=1.0: np.random.default_rng(0).normal(mean, stddev, shape)
    tf.nn = types.SimpleNamespace(moments=lambda a, axes: (np.mean(a, tuple(axes)), np.var(a, tuple(axes))))
    return tf


class _Stub(types.ModuleType):
    """A module whose every attribute is a placeholder class (NiftyNet's imports these functions never use)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class TrainableLayer:
    """NiftyNet's ``TrainableLayer`` as far as these layers use it: a name, and calling runs ``layer_op``."""

    def __init__(self, name: str = "", **kwargs: Any) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.layer_op(*args, **kwargs)


def niftynet_stubs() -> dict[str, types.ModuleType]:
    names = ["niftynet", "niftynet.layer", "niftynet.layer.base_layer", "niftynet.application", "niftynet.engine", "niftynet.io",
             "niftynet.evaluation", "niftynet.utilities"]
    names += [f"niftynet.layer.{m}" for m in ("convolution", "deconvolution", "fully_connected", "activation", "bn", "elementwise",
                                              "downsample", "linear_resize", "binary_masking", "discrete_label_normalisation",
                                              "histogram_normalisation", "loss_segmentation", "mean_variance_normalisation", "pad",
                                              "post_processing", "rand_flip", "rand_rotation", "rand_spatial_scaling",
                                              "rand_elastic_deform")]
    names += [f"niftynet.engine.{m}" for m in ("application_factory", "application_variables", "sampler_grid_v2", "sampler_resize_v2",
                                               "sampler_uniform_v2", "sampler_weighted_v2", "sampler_balanced_v2",
                                               "windows_aggregator_grid", "windows_aggregator_resize")]
    names += ["niftynet.application.base_application", "niftynet.io.image_reader", "niftynet.evaluation.segmentation_evaluator"]
    stubs: dict[str, types.ModuleType] = {n: _Stub(n) for n in names}
    stubs["niftynet.layer.base_layer"].TrainableLayer = TrainableLayer
    stubs["tensorflow"] = numpy_tf()
    stubs["multi_modal_application"] = _Stub("multi_modal_application")
    return stubs


#: U-HVED's modality order (application.py ``MODALITIES_img``).
UHVED_ORDER = ("T1", "T1c", "T2", "Flair")


def run_uhved(path: Path) -> dict[str, Any]:
    """Per availability pattern: GaussianSampler's posterior mean (``is_inference``), Product_Gaussian_main's
    log-variance, compute_KLD's two terms (1/14 x the inter-subset KL sum, 1/15 x the prior KL sum, over the 15
    subsets), and U-HeMIS's HeMISAbstractionBlock (mean and population variance over the kept modalities), on
    one scale's TF layout (B x D x H x W x C)."""
    with on_path(path / "extensions", niftynet_stubs()):
        net = load_file("u_hved_net", path / "extensions" / "u_hved" / "u_hved_net.py")
        app = load_file("u_hved_application", path / "extensions" / "u_hved" / "application.py")
        hemis = load_file("u_hemis_net", path / "extensions" / "u_hemis" / "u_hemis_net.py")
        shape = (1, 4, 4, 4, 3)
        names = {"T1": "T1", "T1c": "T1c", "T2": "T2", "Flair": "FLAIR"}
        means = {m: seeded_input(f"uhved_mu_{m}", shape, SEED).numpy() for m in UHVED_ORDER}
        logvars = {m: seeded_input(f"uhved_logvar_{m}", shape, SEED).numpy() for m in UHVED_ORDER}
        outputs, losses = {}, {}
        for k, pattern in enumerate(AVAILABLE):
            choices = [bool(pattern[DATA_ORDER.index(names[m])]) for m in UHVED_ORDER]
            post_mu = net.GaussianSampler()(means, logvars, list(UHVED_ORDER), choices, True)
            _, post_logvar = app.Product_Gaussian_main(means, logvars, list(UHVED_ORDER), choices)
            inter, prior = app.compute_KLD(means, logvars, choices)
            abstraction = hemis.HeMISAbstractionBlock()(np.stack([means[m] for m in UHVED_ORDER]), choices, False)
            outputs[f"pattern{k}.posterior_mean"] = summary(torch.from_numpy(post_mu), f"uhved_mu{k}")
            outputs[f"pattern{k}.posterior_logvar"] = summary(torch.from_numpy(post_logvar), f"uhved_logvar{k}")
            outputs[f"pattern{k}.hemis"] = summary(torch.from_numpy(abstraction), f"hemis{k}")
            losses[f"pattern{k}.kl_inter"], losses[f"pattern{k}.kl_prior"] = float(inter), float(prior)
    return {"files": ["extensions/u_hved/u_hved_net.py (GaussianSampler)", "extensions/u_hved/application.py (KL_divergence, "
                      "Product_Gaussian, Product_Gaussian_main, compute_KLD, SUBSETS_MODALITIES)",
                      "extensions/u_hemis/u_hemis_net.py (HeMISAbstractionBlock)"],
            "setting": {"layout": "B x D x H x W x C", "shape": list(shape), "modality_order": list(UHVED_ORDER),
                        "tensorflow": "numpy stand-in for tf.exp, log, square, zeros, shape, boolean_mask, concat, reduce_sum, "
                                      "reduce_mean, add_n, nn.moments (population variance)"},
            "state": {}, "outputs": outputs, "losses": losses}


# --------------------------------------------------------------------------------------------- UL4M4


def run_ul4m4(path: Path) -> dict[str, Any]:
    """MM-IMDb/mmimdb_ul4m4.py on two seeded partial modalities of 8 dimensions (the script stacks them: equal sizes):
    compute_norm_stats, the k-means of
    kmeans_partial_modality (k 5, seed 0; its seed samples recorded, so the test starts from them),
    partial_distance_matrix of a query set to the centres, and impute_split of that query set."""
    stubs = {"clip": _Stub("clip"), "mmimdb_loader": _Stub("mmimdb_loader"), "tqdm": types.SimpleNamespace(tqdm=lambda it, **k: it)}
    with on_path(path / "MM-IMDb", stubs):
        ul = load_file("mmimdb_ul4m4", path / "MM-IMDb" / "mmimdb_ul4m4.py")
        rng = np.random.default_rng([SEED, 4])
        n, q, dims = 40, 12, (8, 8)
        z = [rng.standard_normal((n + q, d)) * (1 + i) + 2 * i for i, d in enumerate(dims)]
        has = rng.random((n + q, 2)) < 0.7
        has[~has.any(1), 0] = True
        train, query = slice(0, n), slice(n, n + q)
        mu_i, sd_i, mu_t, sd_t = ul.compute_norm_stats(z[0][train], z[1][train], has[train, 0], has[train, 1])
        # missing slots hold 0 after normalisation (the project's convention, and the code's fallback value)
        zn = [np.where(has[:, m, None], ul.normalise(z[m], mu, sd), 0.0) for m, (mu, sd) in enumerate(((mu_i, sd_i), (mu_t, sd_t)))]
        seeds: list[np.ndarray] = []
        real_argmin = ul.np.argmin

        def recording_argmin(a, axis=None, **kw):  # the seed samples: kmeans_partial_modality's first argmin over axis 0
            out = real_argmin(a, axis=axis, **kw)
            if axis == 0 and not seeds:
                seeds.append(np.asarray(out))
            return out

        ul.np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        ul.np.argmin = recording_argmin
        ci, ct, hi, ht, assign = ul.kmeans_partial_modality(zn[0][train], zn[1][train], has[train, 0], has[train, 1], k=5,
                                                            max_iter=50, seed=0, d_img=dims[0], d_txt=dims[1])
        ul.np = np
        dist = ul.partial_distance_matrix(zn[0][query], has[query, 0], zn[1][query], has[query, 1], ci, hi, ct, ht, dims[0], dims[1])
        out_i, out_t = ul.impute_split(zn[0][query], zn[1][query], has[query, 0], has[query, 1], ci, hi, ct, ht, dims[0], dims[1])
    arrays = {"embeddings": [zm.tolist() for zm in z], "available": has.tolist(), "train": n,
              "mean": [mu_i.tolist(), mu_t.tolist()], "std": [sd_i.tolist(), sd_t.tolist()],
              "seed_samples": seeds[0].tolist(), "centres": [ci.tolist(), ct.tolist()],
              "centre_available": np.stack([hi, ht], 1).tolist(), "assignments": assign.tolist(),
              "query_distances": np.where(np.isinf(dist), -1.0, dist).tolist(), "completed": [out_i.tolist(), out_t.tolist()]}
    return {"files": ["MM-IMDb/mmimdb_ul4m4.py (compute_norm_stats, normalise, partial_distance_matrix, kmeans_partial_modality, "
                      "complete_sample, impute_split)"],
            "setting": {"dims": list(dims), "k": 5, "max_iter": 50, "seed": 0, "train": n, "query": q,
                        "note": "missing slots 0 after normalisation; distances -1 where infinite"},
            "state": {}, "arrays": arrays, "outputs": {}, "losses": {}}


RUNNERS = {"shaspec": run_shaspec, "rfnet": run_rfnet, "mmformer": run_mmformer, "uhved": run_uhved, "smil": run_smil,
           "ul4m4": run_ul4m4}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH", help=f"one of {', '.join(RUNNERS)}")
    p.add_argument("--only", default="", help="comma-separated names to (re)run; the others keep their recorded numbers")
    p.add_argument("--out", type=Path, default=DATA)
    args = p.parse_args()
    checkouts = dict(item.split("=", 1) for item in args.checkout)
    only = [n for n in args.only.split(",") if n] or list(checkouts)
    unknown = [n for n in [*checkouts, *only] if n not in RUNNERS]
    if unknown:
        p.error(f"unknown name(s) {unknown}; expected {list(RUNNERS)}")
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in only:
        if name not in checkouts:
            p.error(f"--only {name}: no --checkout {name}=PATH")
        path = Path(checkouts[name]).expanduser().resolve()
        repository, commit = REPOSITORIES[name]
        found = head_commit(path)
        if found != commit:
            p.error(f"{path}: HEAD is {found}; the numbers are of {repository} at {commit}")
        print(f"{name}: running {repository} at {commit[:10]} ...", flush=True)
        record[name] = {"repository": repository, "commit": found, "seed": SEED, **RUNNERS[name](path)}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
