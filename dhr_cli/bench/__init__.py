"""`dhr bench`: fidelity, editability, speed and memory of every inversion method on the same
images, as one JSON document that shards merge into and reports are drawn from.

What is measured, per image and method (`encoder`, `pti`, `feature`, `dhr`; each with the
engine's published defaults unless step options are given):

- fidelity of the reconstruction of the aligned crop (both quantised to 8 bits, as the saved
  images are): MSE (images in [-1, 1]) and LPIPS-Alex at full resolution and at 256 px (both
  images resized to 256 first, as the released evaluation does), PSNR (peak-to-peak 2, i.e.
  the usual PSNR of [0, 1] images), identity similarity (cosine of ArcFace IR-SE50 embeddings;
  skipped with a notice when its weights are not available);
- wall time per stage (`encode`, `segment`, `refine`, `total`, plus `edit` and `metrics`),
  process CPU time of the inversion, peak resident memory during the method (Linux resets the
  high-water mark per method through /proc/self/clear_refs; elsewhere the process peak) and the
  CUDA allocator's peak on CUDA;
- on the synthetic benchmark set (`--synthetic N`, `dhr_cli.synthetic.benchset`) also: MSE
  inside / outside the true out-of-domain region, segmentation IoU of DHR's predicted
  out-of-domain region with the true one, and edit error: every true edit of the set
  (attribute x delta) is rendered the way `dhr edit` renders it and compared with the true
  edited image (MSE over the whole image, over the true in-domain pixels and over the true
  out-of-domain pixels of the edited scene; plus the mean grey-level change of the occluder
  pixels between reconstruction and edit, which is 0 for an ideal edit).

Results (`run_bench`) are a JSON-able dict: per-image records (position, id, stratum, per
method: metrics / segmentation / edit / runtime), aggregates (means over images; peak memory
as a maximum) over all images and per stratum, run metadata (machine, load, times) and, for
the first K images, thumbnails for the comparison grid. `--shard K/N` processes every N-th item
from the K-th; `merge_results` combines parts into the document one whole run gives: the same
records in the same order and aggregates recomputed from them (only `runtime` fields and the
run metadata depend on the machine). Ctrl-C raises `BenchInterrupted` carrying the document of
the images measured so far (workers included), so an interrupted run still gets its report.

Modules: `config` (what is measured: BenchConfig, bench_items), `metrics` (fidelity, IoU, grey
change, peak memory), `edits` (edit error vs the true edits), `run` (Bench: one process's models
and the per-image, per-method work), `parallel` (run_bench: shards, worker processes, Ctrl-C),
`progress`, `results` (the document: aggregate, load, write, merge, comparable), `summary`
(paper-ordering verdict, summary tables), `thumbs` (grid thumbnails), and the readable outputs
`report` (report.md, write_report), `chart` (chart.png, matplotlib) and `grid` (grid.png).
Importing this package loads neither torch nor matplotlib.
"""

from .chart import draw_chart
from .config import (
    DEFAULT_DIR,
    FORMAT,
    MERGE_KEYS,
    METHODS,
    VERSION,
    BenchConfig,
    BenchItem,
    bench_items,
)
from .grid import draw_grid
from .metrics import (
    EVAL_RES,
    fidelity,
    grey_change,
    iou,
    lpips,
    mse,
    peak_rss_mb,
    psnr,
    reset_peak_rss,
)
from .parallel import INTERRUPT_WAIT_S, BenchInterrupted, run_bench
from .report import markdown, write_report
from .results import (
    MAX_KEYS,
    aggregate,
    check_results_path,
    comparable,
    load_results,
    merge_results,
    write_results,
)
from .run import Bench, ProgressFn
from .summary import (
    FIDELITY_COLUMNS,
    paper_ordering,
    print_summary,
    summary_tables,
    verdict_text,
)
from .thumbs import GRID_THUMB, decode_png

__all__ = [
    "DEFAULT_DIR",
    "EVAL_RES",
    "FIDELITY_COLUMNS",
    "FORMAT",
    "GRID_THUMB",
    "INTERRUPT_WAIT_S",
    "MAX_KEYS",
    "MERGE_KEYS",
    "METHODS",
    "VERSION",
    "Bench",
    "BenchConfig",
    "BenchInterrupted",
    "BenchItem",
    "ProgressFn",
    "aggregate",
    "bench_items",
    "check_results_path",
    "comparable",
    "decode_png",
    "draw_chart",
    "draw_grid",
    "fidelity",
    "grey_change",
    "iou",
    "load_results",
    "lpips",
    "markdown",
    "merge_results",
    "mse",
    "paper_ordering",
    "peak_rss_mb",
    "print_summary",
    "psnr",
    "reset_peak_rss",
    "run_bench",
    "summary_tables",
    "verdict_text",
    "write_report",
    "write_results",
]
