"""The readable outputs of `dhr bench` live in `dhr_cli.bench` (report, chart, grid); this
module keeps `from dhr_cli.report import write_report` working."""

from .bench.chart import draw_chart
from .bench.grid import draw_grid
from .bench.report import markdown, write_report

__all__ = ["draw_chart", "draw_grid", "markdown", "write_report"]
