"""benchmarks/device_check.py (#16) runs every part end to end on a CPU at tiny sizes, on a host without
submitit, nibabel or medpy, and writes its table and the README's cost table."""

from __future__ import annotations

import json

import pytest

from conftest import without_optional_packages

RUN = """
import json, runpy
sys.argv = ["benchmarks/device_check.py", *sys.argv[1:]]
try:
    runpy.run_path("benchmarks/device_check.py", run_name="__main__")
except SystemExit as e:
    print("RESULT " + json.dumps({"status": e.code, "attempted": attempted}))
"""


@pytest.mark.slow
def test_the_tiny_device_check_runs_every_part(tmp_path):
    out = without_optional_packages(RUN, "--device", "cpu", "--tiny", "--methods", "shaspec,zero_fill", "--out", str(tmp_path),
                                    timeout=1800)
    assert "RESULT " in out.stdout, out.stderr
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result == {"status": 0, "attempted": []}, (tmp_path / "errors.txt").read_text() if (tmp_path / "errors.txt").exists() else out.stderr
    rows = json.loads((tmp_path / "device_check.json").read_text())["rows"]
    assert {r["part"] for r in rows} == {"timing", "avmnist", "data", "eval", "main", "tuning", "compiled"}
    assert not [r for r in rows if r["note"].startswith(("failed", "skipped"))]
    timing = {(r["method"], r["setting"]): r for r in rows if r["part"] == "timing"}
    assert set(timing) == {(m, s) for m in ("shaspec*", "zero_fill*") for s in ("fp32", "bf16")}  # * not the paper widths
    assert all(r["train_s"] > 0 and r["hours"] > 0 and 0 <= r["data_wait"] < 1 for r in timing.values())
    assert {r["setting"] for r in rows if r["part"] == "data"} == {"prefetch", "no prefetch"}
    assert [r["setting"] for r in rows if r["part"] == "main"][0] == "exit 0"
    cost = (tmp_path / "cost_of_a_paper_run.md").read_text()
    assert cost.startswith("| method |") and "| shaspec* |" in cost and "| zero_fill* |" in cost and "180,000" in cost
    assert "Cost of a paper run" in out.stdout
