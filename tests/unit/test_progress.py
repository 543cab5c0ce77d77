"""Task progress lines, followed from a log as it is written."""

from __future__ import annotations

import io
import time
from pathlib import Path

from remote_agents.progress import TaskProgress

LINES = ["[DAG TEST] starting task_id=ensure_cluster map_index=-1", "something else",
         "[DAG TEST] starting task_id=helm_upgrade_install map_index=-1"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def write_slowly(log: Path) -> None:
    with log.open("a") as handle:
        for line in LINES:
            handle.write(line[:20])
            handle.flush()
            time.sleep(0.02)  # half a line now, the rest later: a line split across two reads
            handle.write(line[20:] + "\n")
            handle.flush()


def test_outside_a_terminal_each_task_is_a_plain_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    with TaskProgress(tmp_path / "run.log", "plan", stream):
        write_slowly(tmp_path / "run.log")

    lines = stream.getvalue().splitlines()
    assert [line.split("  plan: ")[1] for line in lines] == ["ensure_cluster", "helm_upgrade_install"]
    assert all(line.strip().split()[1] == "s" for line in lines) and "\033" not in stream.getvalue()


def test_on_a_terminal_one_dimmed_line_is_rewritten_and_cleared_at_the_end(tmp_path: Path) -> None:
    stream = Terminal()
    with TaskProgress(tmp_path / "run.log", "plan", stream):
        write_slowly(tmp_path / "run.log")

    text = stream.getvalue()
    assert "\n" not in text and text.count("\r\033[K\033[2m") == 2 and text.endswith("\r\033[K")
