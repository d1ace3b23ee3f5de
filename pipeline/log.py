"""What a run tells the person or scheduler watching it.

Two formats: `human` (a terminal: aligned lines, a progress bar for long work) and `json`
(one JSON object per line on stderr, for Airflow, cron mail and log shippers). Results a user
asked for (tables, query output) go to stdout; everything here goes to stderr.
"""

from __future__ import annotations

import json
import sys
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

LogFormat = Literal["human", "json"]


class Reporter:
    def __init__(self, log_format: LogFormat = "human", quiet: bool = False) -> None:
        self.format = log_format
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.warnings: list[str] = []
        self._lock = threading.RLock()  # stages running side by side report from their threads

    def _json(self, level: str, event: str, message: str, **fields: Any) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
            "message": message,
            **fields,
        }
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def info(self, message: str, event: str = "info", **fields: Any) -> None:
        if self.format == "json":
            self._json("info", event, message, **fields)
        elif not self.quiet:
            with self._lock:
                self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str, event: str = "warning", **fields: Any) -> None:
        with self._lock:
            self.warnings.append(message)
        if self.format == "json":
            self._json("warning", event, message, **fields)
        else:
            with self._lock:
                self.console.print(
                    f"warning: {message}", style="yellow", markup=False, soft_wrap=True
                )

    def error(self, message: str, **fields: Any) -> None:
        if self.format == "json":
            self._json("error", "error", message, **fields)
        else:
            self.console.print(f"error: {message}", style="bold red", markup=False, soft_wrap=True)

    @contextmanager
    def progress(self, description: str, total: int):
        """Yields advance(completed): a bar on a terminal, a log line per step in json."""
        if self.format == "json" or self.quiet or not self.console.is_terminal:

            def advance(completed: int) -> None:
                self.info(
                    f"{description}: {completed:,}/{total:,}",
                    event="progress",
                    completed=completed,
                    total=total,
                )

            yield advance
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda completed: bar.update(task, completed=completed)
