"""hemis: HeMIS as benchmarks run it, i.e. U-HeMIS (HeMIS's fusion in a 3-D U-Net).

Papers: M. Havaei, N. Guizard, N. Chapados, Y. Bengio, "HeMIS: Hetero-Modal Image Segmentation",
MICCAI 2016, arXiv 1607.05194 (the abstraction layer); R. Dorent, S. Joutard, M. Modat,
S. Ourselin, T. Vercauteren, "Hetero-Modal Variational Encoder-Decoder for Joint Modality
Completion and Segmentation", MICCAI 2019, arXiv 1907.11150 (U-HeMIS, the baseline RFNet, mmFormer
and ShaSpec tabulate as "HeMIS"/"U-HeMIS").
Official code: github.com/ReubenDo/U-HVED (MIT), ``extensions/u_hemis/{u_hemis_net.py,
application.py, config.ini}`` at commit f5254a8. Building blocks: missbench/nets/uhemis.py.

What is built (the code):
- one encoder per modality: 1x1x1 conv to 8 channels + LeakyReLU, then four pre-activation blocks
  (IN -> LeakyReLU -> conv3, twice) with n = 8/16/32/64 and a 2x max-pool between; U-HeMIS's
  blocks end in n/2 channels, so the skips have 4/8/16/32 channels;
- HeMIS abstraction at each of the 4 scales (``HeMISAbstractionBlock``): ``tf.boolean_mask`` keeps
  the available modalities, ``tf.nn.moments`` over the modality axis gives the mean and the
  *population* variance (divide by the number available; 0 with one modality), concatenated
  [mean, variance] on the channels (8/16/32/64 channels);
- one decoder: trilinear resize to the next scale, concatenation with its fused skip, block
  (96->32->16, 32->16->8, 16->8->4 at width 8), 1x1x1 conv to the 4 classes;
- loss: cross-entropy + Dice on the softmax over labels 0/1/2/4 (NiftyNet ``CrossEntropy`` +
  ``Dice``), plus the code's L2 regulariser, ``l2`` = 1e-5 x the mean over conv kernels of
  sum(w^2)/2 (NiftyNet ``reg_type = L2``, ``decay = 1e-5``; the application adds the *mean* of the
  regularisation collection), reported as the ``l2`` term.

Parameters at width 8 with 4 modalities and 4 classes: 565,888 (each encoder 111,776; decoder
118,784), counted in tests/test_hemis.py.

Training defaults (config.ini, application.py): Adam (TF defaults, betas 0.9/0.999), lr 1e-3, batch
1, 60k iterations, per iteration a kept-modality count uniform in 1..4 then a uniform subset of that
size (``count_then_subset``), no warm-up.

Not built: the original HeMIS network (2-D, per-modality conv branches without downsampling, a
curriculum that raises the drop probability over training); no official code of it is public, and
the published comparisons (RFNet, mmFormer, ShaSpec) run U-HeMIS.

``backbone="common"`` (``--backbone common``): per-modality harness U-Net encoders
(missbench/nets/unet3d.py, width 8, depth 3) with the same mean/variance fusion at every scale and
the harness U-Net decoder: 1,263,044 parameters.

Classification (issue #4; HeMIS has no classification experiment): one encoder per modality from
missbench/nets/classification.py (SMIL's LeNet image and MFCC audio encoders, an MLP for tables),
each followed by FC -> ReLU to ``features`` (64, ``projected_encoders``) so that every modality's
vector lives in the same space (HeMIS averages post-activation feature maps); the abstraction
layer's [mean, population variance] over the available modalities' vectors (2 x 64); the shared
FC-ReLU-dropout-FC head (``ClassifierHead``); cross-entropy. No L2 term there (the code's regulariser is
on its 3-D conv kernels). Training: the reference methods' avMNIST training (ShaSpec's: Adam 1e-3, weight decay
1e-2, x0.9 every third of the budget), not the 3-D schedule.

Deviations:
- schedule: the code divides the learning rate by 4 every 10k of its 60k iterations; here by 4
  every sixth of whatever budget the protocol sets (``schedule="step"``).
- the harness's CE + Dice (``Segmentation.loss(..., "labels")``): Dice per sample with Σp + Σt + 1
  in the denominator; NiftyNet's Dice uses Σp² + Σt + 1e-5. The L2 term is a loss term here, so
  the optimiser's own weight decay is 0.
- the harness zeroes a missing modality's input; the code still encodes the real image and masks
  it out in the abstraction. Either way a missing modality cannot reach the output.
- data pipeline (1 mm resampling, histogram standardisation, 112³ patches, ±10% scaling) is the
  harness's; trilinear resizing on the centred grid (see missbench/nets/uhemis.py).
"""

from __future__ import annotations

from typing import Any

import torch

from missbench.core.method import Method, Output
from missbench.nets.fusion import moments_over_available
from missbench.core.params import Between, OneOf
from missbench.core.training import SHASPEC_AVMNIST_TRAINING, UHVED_TRAINING
from missbench.nets.classification import ClassifierHead, projected_encoders
from missbench.nets.unet3d import PyramidDecoder, PyramidEncoder
from missbench.nets.uhemis import UHeMISDecoder, UHeMISEncoder, init_he_truncated, niftynet_l2


class HeMIS(Method):
    name = "hemis"
    citation = "Havaei et al., MICCAI 2016 (HeMIS); U-HeMIS of Dorent et al., MICCAI 2019; code github.com/ReubenDo/U-HVED"
    outputs = {"segmentation": "labels", "classification": "labels"}
    defaults = {"backbone": "paper", "width": 8, "depth": 3, "l2": 1e-5, "features": 64}
    constraints = {"backbone": OneOf("paper", "common"), "l2": Between(0),
                   **{key: Between(1, integer=True) for key in ("width", "depth", "features")}}
    #: No paper trains it on classification: the avMNIST training the reference methods use (ShaSpec's).
    training_defaults = {"segmentation": UHVED_TRAINING, "classification": SHASPEC_AVMNIST_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        w, out = self.params["width"], task.out_channels(self.output)
        self.classification = task.name == "classification"
        if self.classification:
            self.encoders = projected_encoders(task.inputs, self.modalities, self.params["features"])
            self.classifier = ClassifierHead(2 * self.params["features"], out)
        elif self.params["backbone"] == "paper":
            self.encoders = torch.nn.ModuleList(UHeMISEncoder(w, split_output=False) for _ in modalities)
            self.decoder = UHeMISDecoder([2 * c for c in self.encoders[0].out_channels], out, w)
            init_he_truncated(self)
        else:
            self.encoders = torch.nn.ModuleList(PyramidEncoder(1, w, self.params["depth"]) for _ in modalities)
            self.decoder = PyramidDecoder([2 * c for c in self.encoders[0].out_channels], out)

    def encode(self, x: torch.Tensor | list[torch.Tensor]) -> list[Any]:
        """Per modality: its four skip maps (full resolution first); on classification its feature vector."""
        if self.classification:
            return [enc(x[i]) for i, enc in enumerate(self.encoders)]
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def decode(self, features: list[Any], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        if self.classification:
            out = Output(self.classifier(moments_over_available(torch.stack(features, 1), available)))
        else:
            fused = [moments_over_available(torch.stack([f[k] for f in features], 1), available) for k in range(len(features[0]))]
            out = Output(self.decoder(fused))
        if target is not None and self.params["l2"] and not self.classification:
            out.losses["l2"] = niftynet_l2(self, self.params["l2"])
        return out
