"""What MLflow holds of a search, and everything that reads it back after a fault.

- ``store``: one parent run per search, a child run per trial, artifacts (``Tracker``).
- ``spool``: writes kept on disk through a tracking outage, replayed later.
- ``checkpoints``: searcher state saved every N trials. ``results``: the trial table.
- ``resume``: a recorded search read back into a plan; ``restore``: a searcher brought to
  where the recorded search stopped.
"""

from raynas.tracking.store import (  # noqa: F401
    SPOOL_FILE,
    TAG_ARCH,
    TAG_CANONICAL,
    TAG_NODE_ID,
    TAG_RETRIES,
    TAG_ROLE,
    TAG_SEARCHER,
    TAG_SPACE,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
    Tracker,
    TrialLogger,
    check_tracking_uri,
    default_artifact_location,
    flatten,
    numeric_metrics,
    replay_spool,
)

__all__ = [
    "TAG_ROLE",
    "TAG_TRIAL_ID",
    "TAG_RETRIES",
    "TAG_TRIAL_INDEX",
    "TAG_ARCH",
    "TAG_CANONICAL",
    "TAG_SPACE",
    "TAG_SEARCHER",
    "TAG_NODE_ID",
    "SPOOL_FILE",
    "check_tracking_uri",
    "default_artifact_location",
    "flatten",
    "numeric_metrics",
    "Tracker",
    "TrialLogger",
    "replay_spool",
]
