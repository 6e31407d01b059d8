"""The report of a search, read from MLflow alone.

- ``summary``: per-searcher table and JSON. ``source``: reading runs and configs.
- ``plots``: the PNGs.
"""

from raynas.report.summary import (  # noqa: F401
    ALL,
    ARTIFACT_DIR,
    REF_MARGIN,
    SCHEMA,
    Report,
    SearcherSummary,
    best_so_far,
    choose_reference_point,
    hypervolume_curve,
    load_report,
    log_report,
    render_table,
    summarize,
    write_plots,
    write_report,
    write_trials_parquet,
)

__all__ = [
    "SCHEMA",
    "ALL",
    "REF_MARGIN",
    "ARTIFACT_DIR",
    "SearcherSummary",
    "Report",
    "choose_reference_point",
    "best_so_far",
    "hypervolume_curve",
    "summarize",
    "load_report",
    "render_table",
    "write_trials_parquet",
    "write_plots",
    "write_report",
    "log_report",
]
