"""Fabricated model and score folders for the report's tests: missbench/report/synthetic.py, which the speed
benchmark (benchmarks/site_speed.py) uses too, re-exported under the names the tests import."""

from missbench.report.synthetic import (DEFAULTS, LABELS, MODS, SMOKE, fabricate, fake_classification_run, fake_run,  # noqa: F401
                                        fake_timing_run, score_folder, seg_spec, write_log, write_run)
