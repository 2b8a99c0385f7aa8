"""The report: one table model (what was pooled, what was left out and why) rendered for the console
(`bench.py` summaries, `bench.py collect`) and, with statistics and figures, as files
(analysis/make_tables.py through `missbench.report.write`). Reads only the store; never imports a
method, the engine or torch.

Modules: load (the store), model (comparability keys, pools of runs, cells, rows, tables), stats,
tables (builders), render (text, Markdown, LaTeX, CSV), figures, published (+ published.yaml), write
(every table and figure of a store, into a folder).
"""

from missbench.report.load import Store, load_store
from missbench.report.render import to_text
from missbench.report.tables import console_tables

__all__ = ["Store", "console_tables", "load_store", "to_text"]
