"""What the job's Ray workers log, so the driver shows the job's progress, not Ray's chatter.

Ray forwards every worker's stdout/stderr to the driver. Kept out of it: Ray Train's INFO
line per report (every metric of every stage, from every worker) and one warning that a
local Ray without a dashboard repeats every second.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("diet_ray")

# Ray Train's per-worker context: logs every `ray.train.report` (its metrics in full) at INFO.
TRAIN_CONTEXT = "ray.train.v2._internal.execution.context"
# Ray Train's detached helper that removes a run's placement group if its controller dies.
PLACEMENT_GROUP_CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def log_to_stderr_in_worker() -> None:
    """In a Ray worker: the `diet_ray` logger's INFO lines (the job's progress) to stderr,
    which Ray forwards to the driver. Ray Train's line per report is raised to WARNING (the
    job's own line per stage says the same); other loggers keep their levels."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    context = sys.modules.get(TRAIN_CONTEXT)  # its logger is named after its file
    if context is not None and isinstance(getattr(context, "logger", None), logging.Logger):
        context.logger.setLevel(logging.WARNING)


def quiet_local_worker() -> None:
    """`worker_process_setup_hook` of the local Ray that the job starts (no dashboard, so no
    State API): Ray Train's placement-group cleaner asks the State API whether the controller
    is alive every second and warns each time it cannot. Only that logger is raised to ERROR;
    a local Ray ends with its driver, placement groups included."""
    logging.getLogger(PLACEMENT_GROUP_CLEANER).setLevel(logging.ERROR)
