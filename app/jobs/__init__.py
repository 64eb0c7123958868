"""Admin training jobs: SQLite job records, the launch spec, and a runner that drives each job as a process.

Nothing here imports the web stack; `app.web.routes.admin` puts an HTTP face on it.
"""

from app.jobs.spec import JobSpec, JobSpecError, confine_path
from app.jobs.store import ACTIVE_STATUSES, JOB_STATUSES, TERMINAL_STATUSES, JobRecord, JobStore, JobStoreError

__all__ = [
    "ACTIVE_STATUSES",
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "JobRecord",
    "JobSpec",
    "JobSpecError",
    "JobStore",
    "JobStoreError",
    "confine_path",
]
