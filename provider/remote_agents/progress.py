"""Progress of a Dag run for a person watching: one line per task it starts, with the elapsed time.

``dag.test()`` (and ``airflow dags test``) log "starting task_id=<id>" as each task starts;
``TaskProgress`` follows that log file in a thread while the run goes on. On a terminal it keeps one
dimmed line up to date; anywhere else (a CI log) it prints a plain line per task, without colour.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

TASK_STARTED = re.compile(r"starting task_id=(\S+)")
POLL_SECONDS = 0.5


class TaskProgress:
    """``with TaskProgress(log, "bootstrap", sys.stderr): <run that writes log>``."""

    def __init__(self, log: Path, label: str, stream: TextIO) -> None:
        self.log = log
        self.label = label
        self.stream = stream
        self.terminal = stream.isatty()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"progress-{label}", daemon=True)

    def __enter__(self) -> TaskProgress:
        self.log.touch()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if self.terminal:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _follow(self) -> None:
        pending = ""
        with self.log.open(errors="replace") as reader:
            while True:
                stopping = self._stop.is_set()  # read once more after the run ended: its last lines
                pending += reader.read()
                *lines, pending = pending.split("\n")  # the last piece may be half a line, kept for the next read
                for match in filter(None, map(TASK_STARTED.search, lines)):
                    self._show(match[1])
                if stopping:
                    return
                self._stop.wait(POLL_SECONDS)

    def _show(self, task_id: str) -> None:
        line = f"  {time.monotonic() - self._started:6.1f} s  {self.label}: {task_id}"
        self.stream.write(f"\r\033[K\033[2m{line}\033[0m" if self.terminal else line + "\n")
        self.stream.flush()
