"""Model and score ids are the store's keys: a refactor must not change the id of any request a shipped
protocol expands to.

tests/data/run_ids.json pins, per protocol x budget x method (on the protocol's own data set), the
number of requests, the first and last ``<model id>/<score id>`` and a hash of the whole list, computed
with the code hashes left out (an edit of a plugin file changes its models' ids by design: that is
tests/test_identity.py's to check). A deliberate change to a protocol file or to the identities changes
its entries; regenerate them then (``python tests/test_run_ids.py --write``) and say why in the commit.
"""

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

# Run as a script (--write): this checkout's package and conftest (which pins the root to this checkout),
# as under pytest, whichever checkout an editable install points at.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import conftest  # noqa: E402, F401
from missbench.experiment import registry  # noqa: E402
from missbench.experiment.protocol import load_protocol  # noqa: E402

PINS = Path(__file__).parent / "data" / "run_ids.json"
PINNED = json.loads(PINS.read_text())


def without_code(spec) -> str:
    """A request's ``<model id>/<score id>`` with the plugin files' hashes left out."""
    model = replace(spec.model, code={**spec.model.code, "method": "", "dataset": ""})
    score = replace(spec.score, model_id=model.model_id, code={**spec.score.code, "dataset": ""})
    return f"{model.model_id}/{score.score_id}"


def expanded_ids() -> dict[str, dict]:
    out = {}
    for name in registry.protocol_names():
        proto = load_protocol(registry.protocol_path(name))
        ds = registry.dataset_class(proto.dataset)
        for budget in proto.budgets:
            for method in registry.method_names():
                if ds.task not in registry.method_class(method).tasks:
                    continue
                ids = [without_code(s) for s in proto.expand([method], ds, {}, budget)]
                out[f"{name}/{budget}/{method}"] = {"n": len(ids), "first": ids[0], "last": ids[-1],
                                                     "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]}
    return out


def test_run_ids_of_every_shipped_protocol_are_unchanged():
    current = expanded_ids()
    assert sorted(current) == sorted(PINNED)
    changed = [key for key in PINNED if current[key] != PINNED[key]]
    assert not changed, f"run ids changed for {changed[:5]} ({len(changed)} of {len(PINNED)})"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    PINS.write_text(json.dumps(expanded_ids(), indent=1, sort_keys=True))
    print(f"wrote {PINS}")
