import pytest

from missbench.core.subsets import all_subsets, parse_subset

MODS = ("FLAIR", "T1", "T1c", "T2")


def test_fifteen_brats_subsets_in_canonical_order():
    subsets = all_subsets(MODS)
    assert len(subsets) == 15
    assert [s.label for s in subsets] == [
        "FLAIR", "T1", "T1c", "T2",
        "FLAIR+T1", "FLAIR+T1c", "FLAIR+T2", "T1+T1c", "T1+T2", "T1c+T2",
        "FLAIR+T1+T1c", "FLAIR+T1+T2", "FLAIR+T1c+T2", "T1+T1c+T2",
        "FLAIR+T1+T1c+T2",
    ]
    assert sorted(s.code for s in subsets) == list(range(1, 16))
    assert subsets[5].code == 0b0101 and subsets[5].mask == (True, False, True, False)


def test_two_modalities_give_three_subsets():
    assert [s.label for s in all_subsets(("image", "audio"))] == ["image", "audio", "image+audio"]


def test_parse_subset_is_canonical_and_case_insensitive():
    assert parse_subset("t1c+flair", MODS).label == "FLAIR+T1c"


@pytest.mark.parametrize("text", ["T3", "", "FLAIR+FLAIR", "FLAIR+"])
def test_parse_subset_rejects_bad_names(text):
    with pytest.raises(ValueError, match="subset"):
        parse_subset(text, MODS)
