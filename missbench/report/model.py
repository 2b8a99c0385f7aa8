"""The table model: which runs (scores of models) pool into which table and column, what each table
leaves out and why, and the cells, rows and tables that every renderer draws (console text, Markdown,
LaTeX, CSV).

A run's spec is `missbench.experiment.spec.report_spec`: its model's and score's identities (code
included) and the labels of the request. Comparability key: that spec without the row fields (seed,
training subset, evaluated subsets, missing rate), which a table lays out or pools (seeds pool into a
cell); runs of different keys never share a column. Runs of one protocol, data set and budget name
whose *setting* differs (data set parameters, metric policy, budget values, timing counts, the data
set's code, the engine's results version, ...) go to separate tables, named by the differing fields;
runs that differ in the *method* (its parameters, training overrides, its code) are separate columns,
named by the values: a column never mixes code versions.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from missbench.report.load import Run, Store
from missbench.experiment.spec import canonical
from missbench.core.subsets import Subset, all_subsets

#: Spec fields a table lays out as rows (or pools over: the seed), so runs differing in them share a table.
ROW_FIELDS = ("seed", "train_subset", "eval_subsets", "missing_rate")
#: Spec fields that name a column: the method, its parameter overrides, training overrides and its code.
METHOD_FIELDS = ("method", "method_params", "training", "code.method")


class Unset:
    """The value of a field a spec does not set (shown as 'unset')."""

    def __repr__(self) -> str:
        return "unset"


UNSET = Unset()


def _is(field: str, fields: tuple[str, ...]) -> bool:
    """Whether a dotted field is one of ``fields`` or lies below one."""
    return any(field == f or field.startswith(f + ".") for f in fields)


def comparability_key(spec: dict[str, Any]) -> str:
    """What must agree for two runs to share a table column (canonical JSON): the spec without its row fields.
    Their rows then pool by seed into cells."""
    return canonical({k: v for k, v in flatten(spec).items() if not _is(k, ROW_FIELDS)})


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted.path: value}, lists as tuples (hashable); an empty mapping adds nothing."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key in sorted(obj):
            out |= flatten(obj[key], f"{prefix}{key}.")
        return out
    return {prefix[:-1]: tuple(obj) if isinstance(obj, list) else obj}


def setting_of(spec: dict[str, Any]) -> dict[str, Any]:
    """What all columns of a table share: the flattened spec without row and method fields."""
    return {k: v for k, v in flatten(spec).items() if not _is(k, ROW_FIELDS + METHOD_FIELDS)}


def differences(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The flattened fields where ``other`` differs from ``base``, with ``other``'s values."""
    return {k: other.get(k, UNSET) for k in sorted(set(base) | set(other)) if base.get(k, UNSET) != other.get(k, UNSET)}


def show(value: Any) -> str:
    """A field value as text: numbers compactly, tuples joined by 'x', file paths by their last part."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "x".join(map(show, value))
    if isinstance(value, str) and "/" in value:
        return value.rstrip("/").rsplit("/", 1)[-1]
    return str(value)


def short_names(fields: list[str]) -> dict[str, str]:
    """Each dotted field by its last part (``dataset_params.n_test`` -> ``n_test``), the full path where two share it."""
    last = Counter(f.rsplit(".", 1)[-1] for f in fields)
    return {f: f.rsplit(".", 1)[-1] if last[f.rsplit(".", 1)[-1]] == 1 else f for f in fields}


def describe_fields(values: dict[str, Any], sep: str = ", ") -> str:
    """'n_test=3, empty=nan': fields by their short names."""
    names = short_names(list(values))
    return sep.join(f"{names[k]}={show(v)}" for k, v in values.items())


def slug(values: dict[str, Any]) -> str:
    """A file-name-safe form of `describe_fields`: 'n_test-3_empty-nan'."""
    names = short_names(list(values))
    return "_".join(re.sub(r"[^A-Za-z0-9._]+", "-", f"{names[k]}-{show(v)}").strip("-") for k, v in values.items())


def natural_key(text: str) -> tuple:
    """Sort key that orders numbers inside labels numerically (alpha=0.01 before alpha=0.1 before alpha=1)."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text)
    return tuple((0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p != "")


# --- pooling: tables and columns -------------------------------------------------------------------

@dataclass(frozen=True)
class LeftOut:
    """Runs a table does not use, and why (failed, stopped, pending, incomparable, unknown spec)."""

    runs: tuple[str, ...]
    reason: str

    def text(self) -> str:
        who = self.runs[0] if len(self.runs) == 1 else f"{len(self.runs)} runs ({', '.join(self.runs)})"
        return f"{who}: {self.reason}"


@dataclass(frozen=True)
class Column:
    """One comparability key but the row fields: its label, method, runs (seeds; a dedicated protocol's
    subsets) and the method parameters its label names."""

    label: str
    method: str
    runs: tuple[str, ...]
    params: tuple[str, ...] = ()


@dataclass
class Pool:
    """The runs one table may pool: one protocol, data set, budget name and setting; a column per method key.

    ``suffix``: the fields where this setting differs from the group's main one (the setting of the most
    finished runs); empty for the main setting.
    """

    protocol: str
    dataset: str
    budget: str
    setting: dict[str, Any]
    suffix: dict[str, Any]
    columns: list[Column]
    left_out: list[LeftOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    #: The scoring rules its rows record (empty-region policy, ET threshold, HD95 definition), as one value
    #: each when all rows agree.
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``<protocol>_<dataset>_<budget>``, with the slug of ``suffix`` for a setting other than the main one."""
        base = f"{self.protocol}_{self.dataset}_{self.budget}"
        return f"{base}_{slug(self.suffix)}" if self.suffix else base

    @property
    def used(self) -> list[str]:
        return sorted(r for c in self.columns for r in c.runs)

    @property
    def mode(self) -> str:
        return str(self.setting.get("mode", ""))

    def labels(self) -> dict[str, str]:
        """Run id -> its column's label."""
        return {r: c.label for c in self.columns for r in c.runs}

    def rows(self, store: Store) -> pd.DataFrame:
        """The rows of the used runs, with a ``column`` label (the variant the tables show); made once per
        store and shared (callers derive new frames, never change this one)."""
        def make() -> pd.DataFrame:
            if store.rows.empty:
                return pd.DataFrame(columns=["run_id", "column"])
            d = store.rows[store.rows.run_id.isin(self.used)].copy()
            d["column"] = d.run_id.map(self.labels())
            return d
        return self.cached(store, ("rows",), make)

    def cached(self, store: Store, key: tuple, make: Any) -> Any:
        """``make()``, computed once per store and key: every table and figure of a pool reads the same frames."""
        if self._cache.get("store") is not store:
            self._cache.clear()
            self._cache["store"] = store
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def spec_label(spec: dict[str, Any]) -> str:
    """'shaspec[alpha=nan] seed 3': a run's method, its parameter and training overrides, and seed, from its
    spec alone (a run left out has no meta.json to resolve its defaults)."""
    overrides = {**spec.get("method_params", {}), **flatten(spec.get("training", {}))}
    parts = ",".join(f"{k}={show(v)}" for k, v in sorted(overrides.items()))
    return f"{spec.get('method')}{f'[{parts}]' if parts else ''} seed {spec.get('seed')}"


def group_of(run: Run) -> tuple[str, str, str]:
    """(protocol, evaluation data set, budget name) of a run: the tables it may appear in."""
    dataset = run.spec.get("eval", {}).get("dataset") or run.spec.get("dataset")
    return str(run.spec.get("protocol")), str(dataset), str(run.spec.get("budget_name"))


def pools(store: Store) -> list[Pool]:
    """Every table's runs, by (protocol, data set, budget name) and setting: the main setting first, then the
    others by name. Runs without a known spec are left out of every table."""
    unknown = [LeftOut((r.run_id,), f"{r.why}; no spec, so its comparability key is unknown")
               for r in store.runs.values() if not r.spec]
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in store.runs.values():
        if run.spec:
            groups[group_of(run)].append(run)
    out = []
    for group in sorted(groups):
        by_setting: dict[str, list[Run]] = defaultdict(list)
        settings: dict[str, dict[str, Any]] = {}
        for run in groups[group]:
            s = setting_of(run.spec)
            key = canonical({k: list(v) if isinstance(v, tuple) else v for k, v in s.items()})
            by_setting[key].append(run)
            settings[key] = s
        finished = sorted((k for k in by_setting if any(r.done for r in by_setting[k])),
                          key=lambda k: (-sum(r.done for r in by_setting[k]), k))
        if not finished:
            continue
        main = finished[0]
        named = {k: differences(settings[main], settings[k]) for k in finished}
        for key in sorted(finished, key=lambda k: (k != main, slug(named[k]))):
            runs = by_setting[key]
            pool = Pool(*group, settings[key], named[key], columns(store, [r for r in runs if r.done]))
            pool.left_out = [LeftOut((r.run_id,), f"{spec_label(r.spec)}, {r.why}") for r in runs if not r.done]
            for other in sorted(by_setting, key=lambda k: (k not in named, slug(named.get(k, {})), k)):
                if other == key:
                    continue
                diff = describe_fields(differences(settings[key], settings[other]))
                if other in named:
                    ids = tuple(r.run_id for r in by_setting[other])
                    where = f"{group[0]}_{group[1]}_{group[2]}" + (f"_{slug(named[other])}" if named[other] else "")
                    pool.left_out.append(LeftOut(ids, f"incomparable (differ in {diff}); their tables are named {where}"))
                else:
                    pool.left_out += [LeftOut((r.run_id,), f"{spec_label(r.spec)}, {r.why}; incomparable (differs in {diff})")
                                      for r in by_setting[other]]
            pool.left_out += unknown
            pool.notes = pool_notes(pool, store)
            pool.policy = policy_of(pool, store)
            out.append(pool)
    return out


def columns(store: Store, runs: list[Run]) -> list[Column]:
    """The finished ``runs`` of one setting as columns: one per method key (seeds and row fields pooled),
    labelled by the method and every parameter that is set or varies (default values included, from
    meta.json's resolved parameters), and every training override that varies, in natural order."""
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[comparability_key(run.spec)].append(run)
    first = {k: min(rs, key=lambda r: r.run_id) for k, rs in by_key.items()}
    methods = {k: str(r.spec.get("method")) for k, r in first.items()}
    resolved = {k: store.resolved_params(r.run_id) for k, r in first.items()}
    training = {k: flatten(r.spec.get("training", {})) for k, r in first.items()}
    varying_training = {f for k in by_key for f in training[k] if len({show(training[o].get(f, UNSET)) for o in by_key}) > 1}
    shown: dict[str, set[str]] = defaultdict(set)
    for k, r in first.items():
        shown[methods[k]] |= set(r.spec.get("method_params", {}))
    code = {k: str(r.spec.get("code", {}).get("method", ""))[:8] for k, r in first.items()}
    for k in by_key:
        same = [o for o in by_key if methods[o] == methods[k]]
        shown[methods[k]] |= {p for p in resolved[k] if len({show(resolved[o].get(p, UNSET)) for o in same}) > 1}
    varying_code = {methods[k] for k in by_key if len({code[o] for o in by_key if methods[o] == methods[k]}) > 1}
    out, seen = [], Counter()
    for k, rs in by_key.items():
        parts = [f"{p}={show(resolved[k].get(p, UNSET))}" for p in sorted(shown[methods[k]])]
        parts += [f"{n}={show(training[k][f])}" for f, n in short_names(sorted(varying_training)).items() if f in training[k]]
        parts += [f"code={code[k] or 'none'}"] if methods[k] in varying_code else []
        label = methods[k] + (f"[{','.join(parts)}]" if parts else "")
        seen[label] += 1
        out.append(Column(label if seen[label] == 1 else f"{label}#{seen[label]}", methods[k], tuple(sorted(r.run_id for r in rs)),
                          tuple(sorted(shown[methods[k]]))))
    return sorted(out, key=lambda c: natural_key(c.label))


#: Row columns that record the metric policy, by the policy setting they hold.
POLICY_COLUMNS = {"empty": "empty_policy", "et_threshold": "et_threshold", "hd95": "hd95_definition"}


def policy_of(pool: Pool, store: Store) -> dict[str, Any]:
    """The metric policy the pool's rows record: each setting's value where the rows agree on one."""
    if store.rows.empty:
        return {}
    d = pool.rows(store)
    out = {}
    for key, column in POLICY_COLUMNS.items():
        values = d[column].dropna().unique() if column in d else []
        if len(values) == 1:
            out[key] = values[0].item() if hasattr(values[0], "item") else values[0]
    return out


def pool_notes(pool: Pool, store: Store) -> list[str]:
    """What a reader must know about how the pool's columns were formed."""
    notes = []
    training = {c.label: flatten(store.runs[c.runs[0]].spec.get("training", {})) for c in pool.columns}
    if len({canonical(t) for t in training.values()}) > 1:
        split = [label for label, t in training.items() if t]
        notes.append(f"Runs with different training overrides are separate columns, never pooled: {', '.join(split)} "
                     f"(bracketed training settings override the method's defaults).")
    common = dict(set.intersection(*(set(t.items()) for t in training.values()))) if training else {}
    if common:
        notes.append(f"Every column trains with these overrides of its method's defaults: {describe_fields(common)}.")
    if any(c.params for c in pool.columns):
        notes.append("Column names give every method parameter that is set or varies, default values included "
                     "(meta.json's resolved parameters).")
    return notes


def seeds_text(pool: Pool, store: Store) -> str:
    """'seeds 0, 1, 2' or, where columns differ, the seeds of each column."""
    per = {c.label: sorted({int(store.runs[r].spec.get("seed", -1)) for r in c.runs}) for c in pool.columns}
    if len({tuple(s) for s in per.values()}) == 1:
        seeds = next(iter(per.values()))
        return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return "seeds " + "; ".join(f"{label} {', '.join(map(str, s))}" for label, s in per.items())


def describe(pool: Pool) -> str:
    """Caption text naming protocol, mode, data set and its parameters, budget and every setting the columns share."""
    s = pool.setting
    data = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("dataset_params.")}
    data |= {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith("eval.dataset_params.")}
    budget = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("budget.")}
    size = f"{budget.get('iterations', '?')} iterations, batch {budget.get('batch', '?')}"
    if budget.get("patch"):
        size += f", patch {show(budget['patch'])}"
    text = (f"protocol {pool.protocol} ({pool.mode.replace('_', '-')}), data set {pool.dataset}"
            + (f" ({describe_fields(data)})" if data else "") + f", budget {pool.budget} ({size})")
    if pool.suffix:
        text += f"; differs from the other runs of this protocol, data set and budget in {describe_fields(pool.suffix)}"
    return text


# --- cells, rows, tables ---------------------------------------------------------------------------

@dataclass
class Cell:
    """One table entry: its number (CSV), display text, the value as displayed (bold compares these),
    bold, a significance mark, and how many seeds and cases it pools (``count``: shown where it differs
    from the table's usual)."""

    value: float = math.nan
    text: str = "-"
    shown: float = math.nan
    bold: bool = False
    mark: str = ""
    seeds: int = 0
    cases: int = 0
    count: str = ""
    #: The runs the number comes from (the site links it to them; no renderer of files shows them).
    runs: tuple[str, ...] = ()


def fmt(value: float, digits: int) -> str:
    """Fixed-point text of a number, '-' for NaN."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def stat_cell(mean: float, std: float, digits: int, seeds: int = 0, cases: int = 0) -> Cell:
    """'m' or 'm ± s' (s only where several seeds gave a finite std)."""
    text = fmt(mean, digits) if not math.isfinite(std) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"
    return Cell(mean, text, round(mean, digits) if math.isfinite(mean) else math.nan, seeds=seeds, cases=cases)


def bold_best(cells: list[Cell], higher_is_better: bool) -> list[Cell]:
    """Bold the cells whose displayed value is the best; nothing when fewer than two cells have a value
    (one method has no 'best'). Returns ``cells``."""
    finite = [c.shown for c in cells if math.isfinite(c.shown)]
    if len(finite) < 2:
        return cells
    best = max(finite) if higher_is_better else min(finite)
    for c in cells:
        c.bold = math.isfinite(c.shown) and c.shown == best
    return cells


def note_counts(cells: list[Cell], unit: str = "cases") -> str:
    """Mark cells that pool another number of seeds or ``unit`` (cases, test samples) than most cells do
    (the larger count on a tie); returns the caption sentence saying what cells pool."""
    counted = [c for c in cells if c.seeds]
    if not counted:
        return ""
    tally = Counter((c.seeds, c.cases) for c in counted)
    usual = max(tally, key=lambda k: (tally[k], k))  # ties: the larger design is the usual one
    for c in counted:
        parts = ([f"{c.seeds} seed{'s' if c.seeds > 1 else ''}"] if c.seeds != usual[0] else []) + \
                ([f"{c.cases} {unit}"] if c.cases != usual[1] else [])
        c.count = f"({', '.join(parts)})" if parts else ""
    what = f"{usual[0]} seed{'s' if usual[0] > 1 else ''} × {usual[1]} {unit}"
    if any(c.count for c in counted):
        return f"Cells pool {what} unless marked with their own counts, e.g. '(2 seeds)'."
    return f"Every cell pools {what}."


def presence_labels(mask: tuple[bool, ...]) -> list[str]:
    """Filled / empty circles for one subset's availability flags."""
    return ["●" if a else "○" for a in mask]


@dataclass
class Row:
    """A table row: its key (the CSV index), label columns, cells, and whether a rule goes above it."""

    key: str
    labels: list[str]
    cells: list[Cell]
    rule_above: bool = False
    #: False for rows of text (e.g. a CI row): shown in Markdown, LaTeX and text, left out of the CSV.
    in_csv: bool = True


@dataclass
class Table:
    """Rows under a two-level header (column groups, e.g. regions, each holding named columns), the runs
    it used and those it left out with the reason; ``extras``: numbers behind it, written as ``<stem>.<name>.csv``."""

    stem: str
    caption: str
    label_names: list[str]
    columns: list[tuple[str, str]]
    rows: list[Row] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Set: console text names each row by its key under this name instead of the label columns (e.g. a
    #: subset's name instead of its presence circles).
    key_name: str = ""
    #: A short caption (what and which pool, a line or two): LaTeX's \caption; ``caption`` then goes below the table.
    title: str = ""

    def run_lines(self) -> list[str]:
        """The runs: how many were used (their ids go to ``<stem>.runs.txt``) and every one left out, with why."""
        lines = [f"Runs used: {len(self.used)} (run ids in {self.stem}.runs.txt)."]
        return lines + [f"Left out: {lo.text()}" for lo in self.left_out]


# --- subsets of a store's rows -----------------------------------------------------------------------

def modality_order(labels: list[str], codes: list[int]) -> tuple[str, ...]:
    """The data set's modality order, recovered from subset labels and their bit codes."""
    position: dict[str, int] = {}
    for label, code in zip(labels, codes):
        bits = [i for i in range(code.bit_length()) if code >> i & 1]
        for name, bit in zip(label.split("+"), bits):
            position[name] = bit
    return tuple(sorted(position, key=position.__getitem__))


def canonical_subsets(rows: pd.DataFrame) -> list[Subset]:
    """The evaluation subsets present in ``rows``, in the canonical order of missbench.core.subsets."""
    pairs = rows[["eval_subset", "eval_code"]].drop_duplicates()
    mods = modality_order(list(pairs.eval_subset), [int(c) for c in pairs.eval_code])
    present = set(pairs.eval_subset)
    return [s for s in all_subsets(mods) if s.label in present]
