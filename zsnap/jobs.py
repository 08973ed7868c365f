"""One way to run a job, from the command line or from the daemon: the same operation, the
same outcome and the same history record either way. A job that ran but did not all succeed
(a set prune could not destroy, a verification that failed, a clone that could not expire) is
`failed` in the history and exits non-zero on the command line, after its result is shown."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from zsnap.errors import LockBusy, VerificationFailed, ZsnapError
from zsnap.history import BUSY, FAILED, OK, History

if TYPE_CHECKING:
    from zsnap.catalog import SnapshotSet
    from zsnap.clone.expire import ExpiredResult
    from zsnap.prune import PruneResult
    from zsnap.replicate import ReplicateResult
    from zsnap.verify import Verification

log = logging.getLogger(__name__)

T = TypeVar("T")
# What the history keeps of a run: "detail" its one line, the rest its data.
JobResult = dict[str, Any]


@dataclass
class Outcome(Generic[T]):
    result: T
    detail: str  # the history entry's line
    # Set when the job ran but not all of it succeeded: what `summary` raised.
    error: ZsnapError | None = None

    def value(self) -> T:
        """The result, or the error raised (after the caller has shown the result)."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class Job(Generic[T]):
    what: str  # its name in the history and in [schedule]
    work: Callable[[], T]
    # The history record of a result; raises a ZsnapError when the result is a failure.
    summary: Callable[[T], JobResult]

    def run(self, state_dir: Path, origin: str = "cli") -> Outcome[T]:
        history = History(state_dir)
        started = datetime.now(UTC)
        t0 = time.monotonic()

        def record(outcome: str, detail: str, data: JobResult | None = None) -> None:
            # A state dir that cannot be written to hides neither the job's result nor its
            # error (which may well say so).
            try:
                history.record(self.what, outcome, started=started,
                               duration_s=time.monotonic() - t0, detail=detail, origin=origin,
                               data=data)
            except OSError as e:
                # Said once: by the job's own error when it failed, else here.
                log.log(logging.DEBUG if outcome != OK else logging.WARNING,
                        "%s not recorded in the history: %s", self.what, e)

        try:
            result = self.work()
        except BaseException as e:
            record(BUSY if isinstance(e, LockBusy) else FAILED, str(e) or type(e).__name__)
            raise
        try:
            info = dict(self.summary(result))
        except ZsnapError as e:
            record(FAILED, str(e))
            return Outcome(result, str(e), e)
        detail = str(info.pop("detail", ""))
        record(OK, detail, info)
        return Outcome(result, detail)


# --- what each job's result says ------------------------------------------------------------


def snapshot_summary(s: SnapshotSet) -> JobResult:
    return {"detail": f"set {s.id}, replay paused {s.pause_ms} ms", "set": s.id}


def prune_summary(result: PruneResult) -> JobResult:
    pruned = [v.set.id for v in result.pruned]
    info: JobResult = {"detail": f"{len(pruned)} set(s) pruned", "pruned": pruned}
    if result.wal is not None:
        info["detail"] += f", {len(result.wal.removed)} WAL file(s) removed"
    if result.failed:
        raise ZsnapError(
            f"{len(pruned)} set(s) pruned, {len(result.failed)} could not be: "
            + "; ".join(f"{v.set.id}: {v.error}" for v in result.failed))
    return info


def verify_summary(results: list[Verification]) -> JobResult:
    from zsnap.verify import failure_line

    line = failure_line(results)
    if line is not None:
        raise VerificationFailed(line)
    return {"detail": "; ".join(v.summary() for v in results) or "nothing to verify",
            "sets": [{"set": v.set_id, "outcome": v.outcome.value, "rto_s": v.rto_s}
                     for v in results]}


def replicate_summary(result: ReplicateResult) -> JobResult:
    size = sum(t.bytes for t in result.transfers)
    return {"detail": f"{len(result.done)} set(s) replicated to {result.target}, {size} bytes",
            "sets": result.done}


def expire_summary(result: ExpiredResult) -> JobResult:
    if result.failed:
        raise ZsnapError(result.summary())
    return {"detail": result.summary(), "destroyed": result.destroyed}
