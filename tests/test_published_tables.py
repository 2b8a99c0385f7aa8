"""missbench/report/published.yaml: the ShaSpec paper's tables other than Table 1 (``tables``), and that every
published number names a source a reader can follow."""

import numpy as np
import pytest
import yaml

from missbench.report.published import DATA, load_published

TABLES = {t["id"]: t for t in yaml.safe_load(DATA.read_text())["tables"]}


def test_each_table_has_its_citation_protocol_and_shape():
    assert set(TABLES) == {"shaspec_table2", "shaspec_table3", "shaspec_table4", "shaspec_sec45_cost"}
    for t in TABLES.values():
        assert t["citation"].startswith("Wang et al., CVPR 2023") and t["source"] and t["protocol"] and t["metric"]
        for region, rows in t["values"].items():
            assert len(rows) == len(t["rows"]) and all(len(r) == len(t["columns"]) for r in rows), (t["id"], region)


@pytest.mark.parametrize("table_id", ["shaspec_table2"])
def test_printed_averages_are_the_means_of_their_rows(table_id):
    """Every printed Average is its column's mean to 0.01, but the one the table's note names."""
    t = TABLES[table_id]
    exceptions = {("TC", "ShaSpec")}  # printed 73.92, the rows give 73.935 (the note)
    for region, rows in t["values"].items():
        values = np.array(rows)
        for j, column in enumerate(t["columns"]):
            mean = values[:-1, j].mean()
            if (region, column) in exceptions:
                assert abs(mean - values[-1, j]) < 0.02
                continue
            assert mean == pytest.approx(values[-1, j], abs=0.01), (region, column)


def test_table4_l1_is_table1_shaspec_star_t1_row():
    _, entries = load_published()
    star = {e.id: e for e in entries}["shaspec_star"]
    l1 = TABLES["shaspec_table4"]["columns"].index("L1")
    for region in ("ET", "TC", "WT"):
        assert TABLES["shaspec_table4"]["values"][region][0][l1] == star.dice[region]["T1"]


def test_robust_mseg_is_rfnets_three_split_robustseg():
    """The fixed label: ShaSpec's (from mmFormer's) Robust-MSeg row and RFNet's README RobustSeg row are one set of
    numbers, the mean over the three U-HVED splits; mmFormer's own row is of its own split (protocol M)."""
    protocols, entries = load_published()
    by_id = {e.id: e for e in entries}
    mseg, rseg = by_id["robust_mseg_shaspec_t1"], by_id["robustseg_rfnet_readme"]
    assert mseg.average["ET"] == rseg.average["ET"] and mseg.average["TC"] == rseg.average["TC"]
    assert abs(mseg.average["WT"] - rseg.average["WT"]) <= 0.02
    assert "three" in mseg.split and "three" in rseg.split and mseg.protocol == rseg.protocol == "A"
    assert by_id["mmformer_shaspec_t1"].protocol == "M" and "M" in protocols
