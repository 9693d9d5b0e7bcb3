"""The benchmark table: one aligned plain-text row per measurement, then footnotes."""

from dataclasses import dataclass

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
        result = NONE if self.passed is None else "pass" if self.passed else "MISSED"
        return (self.id, self.what, self.value, self.baseline, self.ratio, self.goal, result)


def duration(seconds: float) -> str:
    """Seconds in µs below a millisecond, else in ms."""
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def ratio(value: float) -> str:
    """A ratio with three decimals when small, whole when large."""
    return f"×{value:.3f}" if value < 10 else f"×{value:.0f}"


def render(rows: list[Row]) -> str:
    """The rows as an aligned table under a heading line."""
    table = [HEADINGS, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADINGS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if heading in RIGHT_ALIGNED else cell.ljust(width)
            for heading, cell, width in zip(HEADINGS, cells, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADINGS), rule, *(line(cells) for cells in table[1:])])
