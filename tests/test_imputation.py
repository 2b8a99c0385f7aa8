"""UL4M4's imputation (missbench/nets/imputation.py) against small examples worked by hand."""

import math

import pytest
import torch

from missbench.nets.imputation import (
    EmbeddingImputer, complete, kmeans_plus_plus, modality_statistics, normalise, partial_distance, partial_kmeans,
)


def column(*values):
    return torch.tensor([[float(v)] for v in values], dtype=torch.float64)


def test_partial_distance_by_hand_including_a_centre_lacking_a_modality_and_no_shared_modality():
    # modality 0 has 2 dims, modality 1 has 1.
    # sample 0 = ((1, 2), 3), both present; sample 1 = (-, 3), modality 0 missing (its values are garbage).
    z = [torch.tensor([[1.0, 2.0], [99.0, 99.0]]), torch.tensor([[3.0], [3.0]])]
    present = torch.tensor([[True, True], [False, True]])
    # centre 0 = ((0, 0), 1), complete; centre 1 = ((0, 0), -), lacks modality 1.
    centres = [torch.zeros(2, 2), torch.tensor([[1.0], [-50.0]])]
    centre_present = torch.tensor([[True, True], [True, False]])
    d = partial_distance(z, present, centres, centre_present)
    # s0-c0: ||(1,2)||^2/2 = 2.5 and (3-1)^2/1 = 4 -> sqrt((2.5 + 4)/2) = sqrt(3.25)
    assert d[0, 0].item() == pytest.approx(math.sqrt(3.25))
    # s0-c1: only modality 0 is shared -> sqrt(2.5)
    assert d[0, 1].item() == pytest.approx(math.sqrt(2.5))
    # s1-c0: only modality 1 is shared -> sqrt(4) = 2
    assert d[1, 0].item() == pytest.approx(2.0)
    # s1-c1: nothing shared -> infinite
    assert math.isinf(d[1, 1].item())


def test_greedy_completion_by_hand_takes_three_steps_because_centres_are_partial():
    # Three 1-d modalities. The sample observes only m0 = 1.
    z = [column(1), column(-7), column(-7)]  # -7: garbage in the missing slots, never read
    present = torch.tensor([[True, False, False]])
    # centre 0 = (0, 0, -), centre 1 = (5, -, 5), centre 2 = (-, 10, -)
    centres = [column(0, 5, 0), column(0, 0, 10), column(0, 5, 0)]
    centre_present = torch.tensor([[True, True, False], [True, False, True], [False, True, False]])
    # candidates: f0 = (1, 0, -), f1 = (1, -, 5), f2 = (1, 10, -)
    # f0: to c0 over m0, m1: sqrt((1 + 0)/2) = 0.707; to c1 over m0: 4; to c2 over m1: 10     -> min 0.707
    # f1: to c0 over m0: 1; to c1 over m0, m2: sqrt((16 + 0)/2) = 2.83; to c2: nothing shared -> min 1
    # f2: to c0 over m0, m1: sqrt((1 + 100)/2); to c1 over m0: 4; to c2 over m1: 0           -> min 0
    # step 1: pair (f2, c2) at 0: f2 fills m1 = 10; m2 still missing, f2 leaves the pool
    # step 2: pair (f0, c0) at 0.707: f0 has no m2, fills nothing
    # step 3: pair (f1, c0) at 1: f1 fills m2 = 5
    out, filled = complete(z, present, centres, centre_present)
    assert [o.item() for o in out] == [1.0, 10.0, 5.0]
    assert filled.tolist() == [[True, True, True]]


def test_completion_keeps_observed_values_and_leaves_a_modality_no_centre_has_at_zero():
    z = [column(2, 3), column(4, 0)]
    present = torch.tensor([[True, True], [True, False]])
    centres = [column(0), column(0)]
    centre_present = torch.tensor([[True, False]])  # no centre has modality 1
    out, filled = complete(z, present, centres, centre_present)
    assert out[0].flatten().tolist() == [2.0, 3.0] and out[1].flatten().tolist() == [4.0, 0.0]
    assert filled.tolist() == [[True, True], [True, False]]


def test_statistics_use_only_samples_that_have_the_modality_and_population_std():
    z = [column(0, 2, 10, 555), column(0, 20, 22, 555)]
    present = torch.tensor([[True, True], [True, False], [True, True], [False, True]])
    means, stds = modality_statistics(z, present)
    # m0 over (0, 2, 10): mean 4, variance (16 + 4 + 36)/3; m1 over (0, 22, 555): mean 192.33
    assert means[0].item() == pytest.approx(4.0)
    assert stds[0].item() == pytest.approx(math.sqrt(56 / 3))
    assert means[1].item() == pytest.approx(577 / 3)
    normed = normalise(z, present, means, stds)
    assert normed[0][3].item() == 0.0 and normed[1][1].item() == 0.0  # missing slots zeroed
    assert normed[0][2].item() == pytest.approx(6 / math.sqrt(56 / 3))


def test_kmeans_plus_plus_draws_a_sample_sharing_nothing_with_the_seeds_first():
    # samples 0, 1 have only m0; sample 2 has only m1: whichever m0 sample seeds first, sample 2 is at
    # infinite distance and must be the second seed.
    z = [column(0, 1, 0), column(0, 0, 5)]
    present = torch.tensor([[True, False], [True, False], [False, True]])
    for seed in range(6):
        seeds = kmeans_plus_plus(z, present, 2, torch.Generator().manual_seed(seed)).tolist()
        assert 2 in seeds and len(set(seeds)) == 2


def test_partial_kmeans_centres_are_member_means_per_modality_and_a_centre_can_lack_a_modality():
    # group A: (0, 0), (1, -), (0, 1); group B: (10, -), (11, -) -- no B member has m1
    z = [column(0, 1, 0, 10, 11), column(0, 0, 1, 0, 0)]
    present = torch.tensor([[True, True], [True, False], [True, True], [True, False], [True, False]])
    found = partial_kmeans(z, present, 2, 50, torch.Generator().manual_seed(1))
    a, b = found.assignments[0].item(), found.assignments[3].item()
    assert a != b and found.assignments.tolist() == [a, a, a, b, b]
    # A: m0 = (0 + 1 + 0)/3, m1 = (0 + 1)/2 over the members that have m1; B: m0 = 10.5, no m1
    assert found.centres[0][a].item() == pytest.approx(1 / 3) and found.centres[1][a].item() == pytest.approx(0.5)
    assert found.centres[0][b].item() == pytest.approx(10.5)
    assert found.present[a].tolist() == [True, True] and found.present[b].tolist() == [True, False]
    assert found.iterations == 2  # assignments repeat at the second pass


def test_imputer_fills_from_the_right_centre_in_the_encoder_space():
    z = [column(0, 1, 0, 10, 11), column(0, 0, 1, 0, 0)]
    present = torch.tensor([[True, True], [True, False], [True, True], [True, False], [True, False]])
    imputer = EmbeddingImputer([1, 1], k=2)
    imputer.fit([t.float() for t in z], present, seed=1)
    # centres (encoder space): A = (1/3, 0.5), B = (10.5, -).
    # query 0 = (-, 0.4): candidates (1/3, 0.4) and (10.5, 0.4). The second is at distance 0 from B,
    # as they share only m0, which it took from B itself; the first is at |0.4 - 0.5|/std1 > 0 from A.
    # So m0 = 10.5: a partial centre always matches the candidate it lends to on what it lends.
    # query 1 = (10.2, -): the candidate from B lacks m1, so whatever the order m1 comes from A: 0.5
    q = [torch.tensor([[123.0], [10.2]]), torch.tensor([[0.4], [-9.0]])]
    out = imputer(q, torch.tensor([[False, True], [True, False]]))
    torch.testing.assert_close(out[0], torch.tensor([[10.5], [10.2]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.4], [0.5]]))
    assert torch.equal(out[0][1], q[0][1]) and torch.equal(out[1][0], q[1][0])  # observed values pass through exactly


def test_imputer_is_deterministic_given_the_seed_survives_a_state_dict_round_trip_and_has_no_parameters():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(40, 3, generator=g), torch.randn(40, 5, generator=g)]
    present = torch.rand(40, 2, generator=g) > 0.3
    present[~present.any(1), 0] = True
    a, b = EmbeddingImputer([3, 5], k=6), EmbeddingImputer([3, 5], k=6)
    a.fit(z, present, seed=7)
    b.fit(z, present, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert sum(p.numel() for p in a.parameters()) == 0
    c = EmbeddingImputer([3, 5], k=6)
    c.load_state_dict(a.state_dict())
    query = torch.tensor([[True, False], [False, True]]).repeat(20, 1)
    for x, y in zip(a(z, query), c(z, query)):
        torch.testing.assert_close(x, y)
    with pytest.raises(RuntimeError, match="fit"):
        EmbeddingImputer([3, 5])(z, query)


def test_fewer_samples_than_centres_caps_k_and_unused_centres_match_nothing():
    z = [column(0, 4), column(1, 1)]
    present = torch.tensor([[True, True], [True, False]])
    imputer = EmbeddingImputer([1, 1], k=5)
    imputer.fit(z, present, seed=0)
    assert imputer.centre_present[2:].sum() == 0
    out = imputer([column(4).float(), column(0).float()], torch.tensor([[True, False]]))
    torch.testing.assert_close(out[1], torch.tensor([[1.0]]))  # from the centre seeded by sample 0, the only one with m1


def test_sample_without_any_modality_is_refused_by_kmeans():
    with pytest.raises(ValueError, match="at least one available modality"):
        partial_kmeans([column(0, 1)], torch.tensor([[True], [False]]), 1, 5, torch.Generator())
