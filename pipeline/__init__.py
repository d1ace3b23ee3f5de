"""custseg orchestration: CLI, configuration, stage registry, runner, warehouse I/O, manifests.

No business rule lives here; those are in `transforms/` (SQL) and `models/` (statistics).
"""

__version__ = "0.1.0"
