"""GSS's category-aware group self-support (Qiu et al., ICCV 2023; code github.com/qysgithubopen/GSS at
4af911815a5cc8d619de955a277555c7600d9b46, GSS_choice.py, random_mask.py, train_GSS.py), a loss that plugs
into any network with per-modality predictions (GSS ships it on RFNet; methods/gss.py).

Written from the code's functions, not copied. Per class c, the four modalities' separate predictions of
c form a group with one leader (or two), and a soft target is built voxel by voxel from the leader's and
the members' predictions:

- `single_leader_target` (the code's ``singel_teacher``): where the leader's probability (softmax at T=1)
  is above ``leader_threshold`` (the code's TP, 0.75), the leader's softened probability (softmax at the
  temperature T); else, where every member's probability is above ``member_threshold`` (TM, 0.85), 0;
  else the minimum of the four softened probabilities. (The code builds a mean of the members for the
  second case, but masks it with the leader's region and then with its complement, so it is zero
  everywhere; `single_leader_target` computes what the code computes, and tests/test_gss.py compares it
  with a transcription of the code.)
- `double_leader_target` (``double_teacher``, used for oedema with FLAIR and T2 leading): where both
  leaders are confident, max + (max - P (max - min)) of their softened probabilities; where one is,
  max - P (max - min) (P the code's DTP, 0.3; the second term is masked with the union of the leaders'
  regions, not with its one-leader part, so it also counts where both are confident); where neither is
  but both members are above ``member_threshold``, the members' mean; else the minimum of the four.
- `group_soft_target`: the per-class targets, divided by their sum over classes (per voxel).
- `random_voxel_keep`: the code's ``random_mask``: per sample, int(D*H*W*rate) voxel positions drawn
  with replacement (depth, height, width index in that order, from torch's global generator) and zeroed
  in both target and prediction, all classes alike.
"""

from __future__ import annotations

import torch


def single_leader_target(leader: torch.Tensor, members: list[torch.Tensor], soft: list[torch.Tensor],
                         leader_threshold: float, member_threshold: float) -> torch.Tensor:
    """One class's target where one modality leads. ``leader`` and ``members`` (three): probabilities at
    temperature 1; ``soft``: the four softened probabilities, leader first. All B x 1 x ... ."""
    led = leader > leader_threshold
    agree = ~led & torch.stack([m > member_threshold for m in members]).all(0)
    low = torch.stack(soft).amin(0)
    zero = torch.zeros((), dtype=leader.dtype, device=leader.device)
    return torch.where(led, soft[0], torch.where(agree, zero, low))


def double_leader_target(leaders: list[torch.Tensor], members: list[torch.Tensor], soft: list[torch.Tensor],
                         leader_threshold: float, member_threshold: float, p: float) -> torch.Tensor:
    """One class's target where two modalities lead: ``leaders`` and ``members`` two each (temperature 1),
    ``soft`` the four softened probabilities, leaders first."""
    l1, l2 = (x > leader_threshold for x in leaders)
    either, both = l1 | l2, l1 & l2
    hi, lo = torch.maximum(soft[0], soft[1]), torch.minimum(soft[0], soft[1])
    agree = ~either & (members[0] > member_threshold) & (members[1] > member_threshold)
    zero = torch.zeros((), dtype=hi.dtype, device=hi.device)
    led = torch.where(both, hi, zero) + torch.where(either, hi - p * (hi - lo), zero)
    rest = torch.where(agree, (soft[2] + soft[3]) / 2, torch.where(either, zero, torch.stack(soft).amin(0)))
    return led + rest


#: Per class (BG, NCR/NET, ED, ET, the task's label order), the leading modalities, by name (train_GSS.py):
#: FLAIR leads background, T1c the necrotic core and the enhancing tumour, FLAIR and T2 the oedema.
LEADERS = (("FLAIR",), ("T1c",), ("FLAIR", "T2"), ("T1c",))


def group_soft_target(probs: dict[str, torch.Tensor], soft: dict[str, torch.Tensor], leader_threshold: float,
                      member_threshold: float, p: float, leaders: tuple[tuple[str, ...], ...] = LEADERS) -> torch.Tensor:
    """The self-support target, B x C x ...: per class c, the group target of the modalities' class-c
    probabilities (``probs``: name -> B x C x ... at temperature 1; ``soft``: softened), normalised over
    classes voxel by voxel."""
    names = list(probs)
    out = []
    for c, lead in enumerate(leaders):
        others = [n for n in names if n not in lead]
        pc = {n: probs[n][:, c : c + 1] for n in names}
        sc = [soft[n][:, c : c + 1] for n in (*lead, *others)]
        if len(lead) == 1:
            out.append(single_leader_target(pc[lead[0]], [pc[n] for n in others], sc, leader_threshold, member_threshold))
        else:
            out.append(double_leader_target([pc[n] for n in lead], [pc[n] for n in others], sc, leader_threshold,
                                            member_threshold, p))
    target = torch.cat(out, 1)
    return target / target.sum(1, keepdim=True)


def random_voxel_keep(shape: torch.Size | tuple[int, ...], rate: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """B x 1 x D x H x W booleans, False at int(D*H*W*rate) positions per sample drawn with replacement (the
    code's ``randn_sampling``: for each sample a depth, a height and a width index vector, in that order, from
    torch's global CPU generator)."""
    b, d, h, w = shape[0], *shape[-3:]
    n = int(d * h * w * rate)
    keep = torch.ones(b, 1, d, h, w, dtype=torch.bool)
    for i in range(b):
        zd, zh, zw = torch.randint(d, (n, 1)), torch.randint(h, (n, 1)), torch.randint(w, (n, 1))
        keep[i, 0, zd[:, 0], zh[:, 0], zw[:, 0]] = False
    return keep.to(device)
