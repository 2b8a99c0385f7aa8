"""The project against the official code's own numbers.

tests/data/official_parity.json holds what the official code computed (scripts/official_parity.py ran it from
checkouts of the repositories at the commits recorded there, on weights drawn from each parameter's name and
shape and on seeded inputs: tests/official_numbers.py). Each test rebuilds those weights from the recorded
names and shapes, loads them into the project's model (through ``official_state_dict`` where the method has
one) and compares outputs and loss terms. The project runs with the options that are the official code's
(e.g. ShaSpec ``fill="first", aux_over="all"``; RFNet ``sep_over="all"``), since these numbers are the code's.

What is compared:
- ShaSpec (github.com/billhhh/ShaSpec): DualNet_SS with its ResNet-50-3D backbone at 16 x 32 x 64, float32:
  logits and train_SS.py's loss terms (Dice, BCE, 0.1 x the L1 cycle of shared features, 0.02 x domain CE);
- RFNet (github.com/dyh127/RFNet): models.Model at 16^3: fused probabilities and train.py's six loss terms;
- mmFormer (github.com/YaoZhang93/mmFormer): mmformer.Model with smaller module constants at 32^3 (2^3 tokens):
  fused probabilities and the six loss terms (its "prm" terms are the deep supervision);
- U-HVED / U-HeMIS (github.com/ReubenDo/U-HVED): the product-of-experts posterior (GaussianSampler,
  Product_Gaussian_main), compute_KLD's terms and HeMISAbstractionBlock (the network is TensorFlow 1 /
  NiftyNet, which does not run here; see the script);
- SMIL (github.com/mengmenm/SMIL): SoundLenet5New + InferNetNew, image-only and paired forwards in
  evaluation mode and the meta-validation loss (KDLossAlignTwo);
- UL4M4 (github.com/h-ismkhan/Multimodal-Learning-with-Missing-Modalities-via-Unsupervised-Learning):
  normalisation statistics, partial-modality k-means from the code's seed samples, distances and completion.
"""

from __future__ import annotations

import pytest
import torch

from conftest import classification_task
from missbench.core.regions import REGIONS
from missbench.core.tasks import get_task
from missbench.experiment.registry import method_class
from missbench.nets.fusion import moments_over_available, product_of_experts
from official_numbers import (AVAILABLE, DATA_ORDER, assert_summary_close, brain_case, load, seeded_input, seeded_state,
                              summary)

RECORD = load()
#: Relative tolerance of float64 results (the official RFNet/mmFormer cross-entropy casts its log to float32,
#: criterions.py ``.float()``: their losses are compared to 1e-6).
F64 = 1e-9


def record(name: str) -> dict:
    return RECORD[name]


@pytest.fixture(scope="module")
def seg():
    return get_task("segmentation")


def test_every_record_names_the_official_code_it_is_of():
    assert set(RECORD) == {"shaspec", "rfnet", "mmformer", "uhved", "smil", "ul4m4"}
    for name, rec in RECORD.items():
        assert rec["repository"].startswith("github.com/") and len(rec["commit"]) == 40 and rec["files"], name


def losses_close(got: dict[str, torch.Tensor], expected: dict[str, float], rtol: float, rename: dict[str, str] | None = None) -> None:
    rename = rename or {}
    for key, value in expected.items():
        ours = got[rename.get(key, key)]
        assert float(ours) == pytest.approx(value, rel=rtol, abs=1e-7), f"loss {key}: ours {float(ours)!r}, official {value!r}"


# --- RFNet and mmFormer -----------------------------------------------------------------------------


def brain_parity(model, rec: dict, rename: dict[str, str] | None = None) -> None:
    state = seeded_state(rec["state"], rec["seed"])
    model = model.double().eval()
    model.load_state_dict(model.official_state_dict(state), strict=True)
    x, available, labels = brain_case(tuple(rec["input"]["size"]), rec["seed"], torch.float64)
    with torch.no_grad():
        out = model.training_output(x, available, labels)
    assert_summary_close(summary(out.logits.softmax(1), "fuse"), rec["outputs"]["fuse_probabilities"], "fused probabilities", F64, 1e-12)
    losses_close(out.losses, rec["losses"], 1e-6, rename)


def test_rfnet_matches_the_official_code(seg):
    brain_parity(method_class("rfnet")(seg, DATA_ORDER, sep_over="all", fusion_start=0.0), record("rfnet"))


def test_mmformer_matches_the_official_code(seg):
    rec = record("mmformer")
    c = rec["setting"]["module_constants"]
    model = method_class("mmformer")(seg, DATA_ORDER, fusion_order="official", aux_over="all", width=8,
                                     dim=c["transformer_basic_dims"], mlp_dim=c["mlp_dim"], heads=c["num_heads"], pos_grid=c["patch_size"])
    brain_parity(model, rec, {"prm_ce": "deep_ce", "prm_dice": "deep_dice"})


# --- ShaSpec ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shaspec_official_backbone_matches_the_official_code(seg):
    """187.7M parameters in float64 (float32 is ill-conditioned here: the script's docstring)."""
    rec = record("shaspec")
    model = method_class("shaspec")(seg, DATA_ORDER, backbone="official", fill="first", aux_over="all").double().eval()
    model.load_state_dict(model.official_state_dict(seeded_state(rec["state"], rec["seed"])), strict=True)
    x, available, labels = brain_case(tuple(rec["input"]["size"]), rec["seed"], torch.float64)
    with torch.no_grad():
        out = model.training_output(x, available, labels)
    code_channels = [REGIONS.index(r) for r in ("ET", "WT", "TC")]  # BraTSDataSet.py id2trainId's order
    assert_summary_close(summary(out.logits[:, code_channels], "logits"), rec["outputs"]["logits"], "logits (ET, WT, TC)", 1e-7, 1e-9)
    losses_close(out.losses, rec["losses"], 1e-7)


# --- U-HVED / U-HeMIS -------------------------------------------------------------------------------

#: U-HVED's modality names (application.py MODALITIES_img) -> the data set's.
UHVED_NAMES = {"T1": "T1", "T1c": "T1c", "T2": "T2", "Flair": "FLAIR"}


def uhved_inputs(rec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The script's means and log-variances (B x D x H x W x C per U-HVED modality) as B x M x C x D x H x W in data order."""
    by_data = {v: k for k, v in UHVED_NAMES.items()}
    shape = tuple(rec["setting"]["shape"])
    mu = torch.stack([seeded_input(f"uhved_mu_{by_data[m]}", shape, rec["seed"]).permute(0, 4, 1, 2, 3) for m in DATA_ORDER], 1)
    logvar = torch.stack([seeded_input(f"uhved_logvar_{by_data[m]}", shape, rec["seed"]).permute(0, 4, 1, 2, 3) for m in DATA_ORDER], 1)
    return mu, logvar


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 4, 1)


def test_uhved_fusion_kl_and_hemis_abstraction_match_the_official_code(seg):
    rec = record("uhved")
    mu, logvar = uhved_inputs(rec)
    uhved = method_class("uhved")(seg, DATA_ORDER, kl_over="all")
    for k, pattern in enumerate(AVAILABLE):
        available = torch.tensor([pattern], dtype=torch.bool)
        post_mu, post_logvar = product_of_experts(mu, logvar, available)
        assert_summary_close(summary(channels_last(post_mu), f"uhved_mu{k}"), rec["outputs"][f"pattern{k}.posterior_mean"],
                             f"pattern {k}: posterior mean", F64, 1e-12)
        assert_summary_close(summary(channels_last(post_logvar), f"uhved_logvar{k}"), rec["outputs"][f"pattern{k}.posterior_logvar"],
                             f"pattern {k}: posterior log-variance", F64, 1e-12)
        kl = uhved.kl_loss([mu], [logvar], available)
        official = rec["losses"][f"pattern{k}.kl_inter"] + rec["losses"][f"pattern{k}.kl_prior"]
        assert float(kl) == pytest.approx(official, rel=F64), f"pattern {k}: KL"
        hemis = moments_over_available(mu, available)
        assert_summary_close(summary(channels_last(hemis), f"hemis{k}"), rec["outputs"][f"pattern{k}.hemis"],
                             f"pattern {k}: HeMIS mean and variance", F64, 1e-12)


# --- SMIL -------------------------------------------------------------------------------------------

#: The official fusion model's and InferNetNew's parameters (``encoder.`` prefix) -> ours (image 0, audio 1).
SMIL_NAMES = {
    "img_extractor.conv1": "net.encoders.0.net.0", "img_extractor.conv2": "net.encoders.0.net.3",
    "img_extractor.fc1": "net.unimodal.0.0", "img_extractor.fc2": "net.unimodal.0.3",
    "sound_extractor.conv1": "net.encoders.1.net.0", "sound_extractor.bn1": "net.encoders.1.net.1",
    "sound_extractor.conv2": "net.encoders.1.net.3", "sound_extractor.bn2": "net.encoders.1.net.4",
    "sound_extractor.conv3": "net.encoders.1.net.6", "sound_extractor.bn3": "net.encoders.1.net.7",
    "fc1": "net.head.0", "fc2": "net.head.3",
    "encoder.fc0": "net.recon.weights.1_0", "encoder.fc1": "net.fused_noise.0", "encoder.fc2": "net.hidden_noise",
}
#: Official parameters no forward of the avMNIST run reads (SNetPluse's own classifier; InferNetNew's unused heads).
SMIL_UNUSED = ("sound_extractor.fc", "encoder.conv", "encoder.fc11", "encoder.fc21")


def smil_model(rec: dict):
    task = classification_task(("image", "audio"), n_classes=10)
    model = method_class("smil")(task, ("image", "audio"), k=rec["setting"]["k"], inner_lr=0.0).double()
    state = seeded_state(rec["state"], rec["seed"])
    ours = {}
    for key, value in state.items():
        if key.startswith(SMIL_UNUSED):
            continue
        module, _, leaf = key.rpartition(".")
        ours[f"{SMIL_NAMES[module]}.{leaf}"] = value
    missing = set(model.state_dict()) - set(ours)
    assert all(k.startswith(("net.recon.weights.0_1", "net.fused_noise.1", "net.unimodal.1", "net.recon.centroids", "net.fitted",
                             "frozen", "seen_missing")) for k in missing), sorted(missing)  # the image-missing direction is ours
    model.load_state_dict(ours, strict=False)
    with torch.no_grad():
        model.net.recon.centroids(1).copy_(seeded_input("smil_priors", (10, 320), rec["seed"]))
        model.net.fitted.fill_(True)
    return model.eval()


def test_smil_forwards_and_meta_loss_match_the_official_code():
    rec = record("smil")
    model = smil_model(rec)
    n = rec["setting"]["batch"]
    image, audio = seeded_input("smil_image", (n, 1, 28, 28), rec["seed"]), seeded_input("smil_audio", (n, 1, 20, 20), rec["seed"])
    labels = torch.arange(n) % 10
    image_only = torch.tensor([[True, False]] * n)
    with torch.no_grad():
        one = model.net([image, audio * 0], image_only, "mean")
        two = model.net([image, audio], torch.ones(n, 2, dtype=torch.bool), "off")
    for prefix, pred in (("image_only", one), ("paired", two)):
        for name, value, tag in (("logits", pred.logits, "logits"), ("fused", pred.fused, "fused"), ("hidden", pred.hidden, "hidden")):
            key = "one" if prefix == "image_only" else "two"
            assert_summary_close(summary(value, f"{key}.{tag}"), rec["outputs"][f"{prefix}.{name}"], f"{prefix} {name}", F64, 1e-12)
    # the meta-validation loss: 4 paired samples (the outer loss) and 2 image-only ones (the inner step, here with rate 0)
    paired = rec["setting"]["paired_samples"]
    available = torch.tensor([[True, True]] * paired + [[True, False]] * (n - paired))
    out = model._meta([image, audio * available[:, 1:].double()[:, :, None, None]], available, labels)
    ours = (out.losses["outer_task"] + out.losses["fused_mse"] + out.losses["hidden_mse"]).detach()
    assert float(ours) == pytest.approx(rec["losses"]["outer"], rel=F64)


# --- UL4M4 ------------------------------------------------------------------------------------------


def test_ul4m4_imputer_matches_the_official_code(monkeypatch):
    from missbench.nets import imputation

    a = record("ul4m4")["arrays"]
    z = [torch.tensor(zm, dtype=torch.float64) for zm in a["embeddings"]]
    present = torch.tensor(a["available"])
    n = a["train"]
    means, stds = imputation.modality_statistics([zm[:n] for zm in z], present[:n])
    for m in range(2):
        torch.testing.assert_close(means[m], torch.tensor(a["mean"][m], dtype=torch.float64), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stds[m], torch.tensor(a["std"][m], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    zn = imputation.normalise(z, present, means, stds)
    # k-means from the code's seed samples (its sklearn k-means++ on the stacked modalities, mapped to samples)
    monkeypatch.setattr(imputation, "kmeans_plus_plus", lambda *args: torch.tensor(a["seed_samples"]))
    clustering = imputation.partial_kmeans([zm[:n] for zm in zn], present[:n], len(a["seed_samples"]), 50, torch.Generator())
    assert clustering.assignments.tolist() == a["assignments"]
    assert clustering.present.tolist() == a["centre_available"]
    for m in range(2):
        torch.testing.assert_close(clustering.centres[m], torch.tensor(a["centres"][m], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    query = [zm[n:] for zm in zn]
    dist = imputation.partial_distance(query, present[n:], clustering.centres, clustering.present)
    expected = torch.tensor(a["query_distances"], dtype=torch.float64)
    torch.testing.assert_close(torch.where(torch.isinf(dist), -1.0, dist), expected, rtol=1e-6, atol=1e-6)  # the code's float32
    completed, _ = imputation.complete(query, present[n:], clustering.centres, clustering.present)
    for m in range(2):
        torch.testing.assert_close(completed[m], torch.tensor(a["completed"][m], dtype=torch.float64), rtol=1e-12, atol=1e-12)
