"""Folder-in/folder-out cleaning: the plan, the model choice, the shards, each file read and
written, the work folder and manifest, the report, the history and trend, retention.

    settings       CleanOptions (per file), CleanRun (per run)
    model_choice   choose_for_clean: where the model for clean is chosen; ModelChoice
    plan           plan, shards, dry_run
    run            a run's steps (begin, clean_part, finish_report) and clean_folder
    shard          clean_shard: the streaming loop over one shard
    steps          read and decode one file, write one output (where outputs are written)
    read           find image files, decode any format and mode to gray
    encode         write a result back in its source's format
    safe_read      read an input file without following links
    workdir        OUT_DIR/.denoiser: lock, temporaries, ledger, the disk's reserve
    manifest       which input content was cleaned by which model
    report         the report's rows and columns, the before/after strip
    summary        the state message and the tables a run shows
    history        a folder's runs, one row each, and the drift rule
    trend          the trend chart
    retention      which earlier runs are removed
"""

from denoiser import lazy_exports

_EXPORTS = {
    "CleanOptions": "settings",
    "CleanRun": "settings",
    "ModelChoice": "model_choice",
    "choose_for_clean": "model_choice",
    "dry_run": "plan",
    "clean_shard": "shard",
    "clean_folder": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
