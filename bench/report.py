"""The benchmark table: one aligned plain-text row per measurement, then footnotes; and the
facts about the machine and the server for the line above it."""

import os
import platform
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

HEADINGS = ("id", "what is measured", "value", "baseline", "ratio", "goal", "result")
RIGHT_ALIGNED = {"value", "baseline", "ratio"}
NONE = "—"


@dataclass(frozen=True)
class Row:
    """One measurement, already formatted; ``passed`` is None for reference rows."""

    id: str
    what: str
    value: str
    baseline: str = NONE
    ratio: str = NONE
    goal: str = "reference"
    passed: bool | None = None

    def cells(self) -> tuple[str, ...]:
        """The row's cells in heading order."""
        result = verdict(self.passed)
        return (self.id, self.what, self.value, self.baseline, self.ratio, self.goal, result)


class TableRow(Protocol):
    """A row of any table: its cells in heading order."""

    def cells(self) -> tuple[str, ...]: ...


def verdict(passed: bool | None) -> str:
    """A result cell: pass, MISSED, or none for a reference row."""
    return NONE if passed is None else "pass" if passed else "MISSED"


def duration(seconds: float) -> str:
    """Seconds in µs below a millisecond, else in ms."""
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def ratio(value: float) -> str:
    """A ratio with three decimals when small, whole when large."""
    return f"×{value:.3f}" if value < 10 else f"×{value:.0f}"


def render(
    rows: Sequence[TableRow],
    headings: tuple[str, ...] = HEADINGS,
    right_aligned: Collection[str] = RIGHT_ALIGNED,
) -> str:
    """The rows as an aligned table under a heading line."""
    table = [headings, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(headings))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if heading in right_aligned else cell.ljust(width)
            for heading, cell, width in zip(headings, cells, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headings), rule, *(line(cells) for cells in table[1:])])


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine() -> str:
    """The processor, cores, memory, kernel and Python."""
    return (
        f"{_cpu_model()}, nproc {os.cpu_count()}, {_memory_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
    )


def server_version(info: dict) -> str:
    """The server's name and version, from INFO server."""
    server = info.get("server_name", "redis")
    version = info.get(f"{server}_version", info["redis_version"])
    return f"{server} {version} (redis_version {info['redis_version']})"
