"""A GPU host without submitit, nibabel or medpy (#16) runs `--executor inline` on the synthetic data, and
lists every data set: none of them is imported on that path."""

from __future__ import annotations

import json

from conftest import without_optional_packages

RUN = """
import json
from missbench.cli import main
from missbench.experiment import registry
status = main(sys.argv[1:])
print("RESULT " + json.dumps({"status": status, "attempted": attempted, "datasets": registry.dataset_names(),
                              "broken": {**registry.plugins("methods").broken, **registry.plugins("datasets").broken}}))
"""


def test_an_inline_run_needs_no_optional_package(tmp_path):
    out = without_optional_packages(RUN, "--budget", "smoke", "--methods", "zero_fill", "--executor", "inline",
                                    "--no-progress", "--threads", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["status"] == 0 and "1 done" in out.stdout
    assert result["attempted"] == [] and result["broken"] == {}
    assert "brats2018" in result["datasets"]  # its plugin imports nibabel only to read or write NIfTI
