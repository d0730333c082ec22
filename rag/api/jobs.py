"""Ingest jobs of the API: uploads are saved at once, indexed in a background thread, polled by id."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag import store
from rag.settings import Settings

logger = logging.getLogger(__name__)

KEEP_JOBS = 200  # finished jobs remembered for GET /v1/jobs/{id}


@dataclass
class FileOutcome:
    """One uploaded file in a job: its (sanitized) name, what happened, and why when it failed."""

    name: str
    status: str  # pending | added | updated | unchanged | failed | rejected
    reason: str = ""
    chunks: int = 0


@dataclass
class Job:
    id: str
    kb: str
    status: str = "queued"  # queued | running | done | failed
    files: list[FileOutcome] = field(default_factory=list)
    error: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None
    chunks_total: int = 0

    def to_json(self) -> dict:
        return asdict(self)


class Jobs:
    """Background ingests, at most one per knowledge base; a second writer is refused, not queued."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = Path(index_dir)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def claim(self, kb: str) -> Job:
        """A new job that holds `kb` for writing; raises store.KBLocked if a job or another process writes it."""
        with self._lock:
            if any(j.kb == kb and j.status in ("queued", "running") for j in self._jobs.values()):
                raise store.KBLocked(f"knowledge base {kb!r} is being written by another job")
            store.kb_lock(self.index_dir, kb).release()  # KBLocked when another process (an ingest CLI) holds it
            job = Job(uuid.uuid4().hex[:16], kb)
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        return job

    def start(self, job: Job, paths: list[Path], settings: Settings, on_done=None) -> None:
        """Index `paths` into `job.kb` in a daemon thread."""
        thread = threading.Thread(target=self._run, args=(job, paths, settings, on_done), daemon=True,
                                  name=f"ingest-{job.id}")
        thread.start()

    def finish(self, job: Job, error: str = "") -> None:
        job.status, job.error, job.finished = ("failed" if error else "done"), error, time.time()

    def _run(self, job: Job, paths: list[Path], settings: Settings, on_done) -> None:
        from ingest.pipeline import run_ingest

        job.status = "running"
        try:
            report = run_ingest(paths, settings, progress=False)
        except Exception as e:  # noqa: BLE001 - reported through the job, never raised into the server
            logger.exception("ingest job %s failed", job.id)
            self.finish(job, f"{type(e).__name__}: {e}")
            return
        finally:
            if on_done:
                on_done()
        by_name = {Path(r.source).name: r for r in report.files}
        for outcome in job.files:
            result = by_name.get(outcome.name)
            if outcome.status == "pending" and result is not None:
                outcome.status, outcome.reason, outcome.chunks = result.status, result.reason, result.chunks
                if result.status == "failed":
                    Path(result.source).unlink(missing_ok=True)  # keep only indexed copies
        job.chunks_total = report.chunks_total
        self.finish(job)
