"""Analysis of a MissBench results store: tables, statistics and figures (never imports a method)."""
