"""Deterministic transforms, one module per output table. They take a DuckDB connection on which
their inputs are visible under their table names, and return a relation; they never open
files, read configuration files or print."""
