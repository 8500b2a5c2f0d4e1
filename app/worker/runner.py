"""The worker: claims batches, runs the handler on a pool of threads, completes in batches,
heartbeats its leases, runs the rescuer on a timer, and shuts down gracefully.

One loop thread owns the worker's state and its database writes (but for the rescuer, which
runs on a timer thread of its own); handler threads only run handlers and hand results back
through a queue. Each turn of the loop commits the finished jobs as one batch and claims the
next batch. On SQLite both go in one transaction. On PostgreSQL a long-running worker commits
the finished batch on a second thread (the completer, with its own pooled connection, one batch
at a time) while the loop claims in a statement that commits by itself: a woken worker's next
job never waits behind the commit of the last one's result. The worker leases up to
`concurrency + prefetch` jobs: the prefetched ones wait in memory for a free handler thread, so
a batch is not limited to the threads that happen to be idle.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog

from app import metrics
from app.db.notify import Listener, ListenSession
from app.db.uow import Database, UnitOfWork
from app.domain.clock import Clock, SystemClock
from app.domain.errors import LeaseLost
from app.domain.failures import IngestionFailure, PermanentError, ThrottledError
from app.domain.models import ClaimedJob, Lease
from app.domain.records import matches_hash
from app.domain.retry import RetryPolicy
from app.domain.states import TERMINAL_STATES, ReasonCode, RetryClass
from app.services import handoff_queries, ingestion, wakeups
from app.services.ingestion import Failure
from app.settings import Settings
from app.worker.handler import IngestionHandler

log = structlog.get_logger("handoff.worker")
T = TypeVar("T")


class Wakeup:
    """What the worker loop sleeps on. `set` is a hint that work may be runnable (a
    notification, a submission in this process, a stop); `result` only says that a handler
    finished and its outcome waits to be committed. Thread-safe; many hints before the loop
    wakes count as one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._hint = False
        self._result = False

    def set(self) -> None:
        with self._cond:
            self._hint = True
            self._cond.notify()

    def result(self) -> None:
        with self._cond:
            self._result = True
            self._cond.notify()

    def wait(self, timeout: float) -> bool:
        """Sleep until a hint, a result or `timeout`; take what woke it. True if the loop
        should look for work: a hint came, or `timeout` passed (the poll)."""
        with self._cond:
            if not (self._hint or self._result):
                self._cond.wait(timeout)
            hinted = self._hint or not self._result
            self._hint = self._result = False
            return hinted


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 4
    prefetch: int = 16
    claim_batch: int = 32
    lease: timedelta = timedelta(seconds=60)
    heartbeat_every: float = 20.0
    poll_every: float = 1.0
    rescue_every: float = 15.0
    shutdown_grace: float = 30.0
    job_timeout: float = 900.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, settings: Settings, concurrency: int | None = None) -> WorkerConfig:
        return cls(
            concurrency=concurrency or settings.worker_concurrency,
            prefetch=settings.prefetch,
            claim_batch=settings.claim_batch,
            lease=timedelta(seconds=settings.lease_seconds),
            heartbeat_every=settings.heartbeat_seconds,
            poll_every=settings.poll_seconds,
            rescue_every=settings.rescue_seconds,
            shutdown_grace=settings.shutdown_grace_seconds,
            job_timeout=settings.job_timeout_seconds,
            policy=settings.retry_policy(),
        )


@dataclass(frozen=True, slots=True)
class _Result:
    job: ClaimedJob
    failure: Failure | None
    seconds: float


class Worker:
    def __init__(
        self,
        db: Database,
        handler: IngestionHandler,
        *,
        config: WorkerConfig | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.handler = handler
        self.config = config or WorkerConfig()
        self.clock = clock or SystemClock()
        self.id = worker_id or f"{uuid.uuid4().hex[:8]}"
        self.wake = Wakeup()
        self._results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self._inflight: dict[int, Lease] = {}  # leased by this worker, running or prefetched
        self._running_since: dict[int, float] = {}  # handoff id -> when its handler started
        self._hung: set[int] = set()  # timed-out jobs whose handler thread is still busy
        self._unsaved: list[_Result] = []  # finished jobs whose outcome is not committed yet
        self._rand = random.Random()
        # `run` on PostgreSQL: the completer thread, and the batch it is committing.
        self._completer: ThreadPoolExecutor | None = None
        self._completing: tuple[list[_Result], Future[list[Lease]]] | None = None
        # `run`: the handler threads' queue; claimed jobs go in as soon as they are leased.
        self._queue: queue.SimpleQueue[ClaimedJob] | None = None
        # PostgreSQL: the LISTEN thread that sets `wake`, and the session this worker is listed
        # under as waiting for wake-ups (None: not listed; see app/services/wakeups.py).
        self.listener: Listener | None = None
        self._subscribed: ListenSession | None = None

    def start_listener(self, stop: threading.Event) -> Listener:
        """PostgreSQL: start the LISTEN thread that wakes this worker (until `stop`)."""
        listener = Listener(self.db.url, self.wake, stop)
        self.listener = listener
        listener.start()
        return listener

    # -- one step at a time (inline mode, tests) ---------------------------------------------

    def run_once(self, limit: int | None = None) -> int:
        """Claim one batch, run it in this thread, finalize it. Returns how many ran."""
        jobs = self._commit_and_claim(limit or self.config.claim_batch)
        for job in jobs:
            self._results.put(self._execute(job))
        self._commit_and_claim(0)
        return len(jobs)

    def drain(self, max_batches: int = 1_000_000) -> int:
        """Run batches until nothing is runnable now. Returns how many ran."""
        total = 0
        for _ in range(max_batches):
            ran = self.run_once()
            total += ran
            if ran == 0:
                break
        return total

    # -- the long-running loop ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, then stop claiming, let in-flight jobs finish within the
        grace period, and release what is left so another worker can take it at once."""
        cfg = self.config
        log.info("worker.started", worker_id=self.id, concurrency=cfg.concurrency)
        jobs: queue.SimpleQueue[ClaimedJob] = queue.SimpleQueue()
        self._queue = jobs
        # Daemon threads, not a ThreadPoolExecutor: a handler stuck past the grace period must
        # not keep the process alive once its lease has been released.
        for n in range(cfg.concurrency):
            name = f"handoff-{self.id}-{n}"
            threading.Thread(
                target=self._handler_thread, args=(jobs,), name=name, daemon=True
            ).start()
        # Stopping must not wait out a poll interval: the stop signal also wakes the loop.
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True).start()
        # The rescuer and the counters' compaction take 10-20 ms a pass: on a thread of their
        # own, so no notified job waits behind them for the loop's next claim.
        rescuer = threading.Thread(
            target=self._rescue_every, args=(stop,), name=f"handoff-{self.id}-rescuer", daemon=True
        )
        rescuer.start()
        if self.db.dialect == "postgresql":
            self._completer = ThreadPoolExecutor(1, thread_name_prefix=f"handoff-{self.id}-done")
        next_beat = time.monotonic()
        # Whether a claim may find work: after a hint or a poll tick, or while claims come back
        # full. With the completer, a claim is a round trip of its own, so a turn that only
        # commits a result does not claim (that empty claim would stand in the way of the next
        # notified job); without it, the claim rides in the completion's transaction.
        claim_due = True
        while not stop.is_set():
            # A thread stuck in a timed-out handler is not free; with none free, claim nothing.
            free_threads = cfg.concurrency - len(self._hung)
            room = free_threads + cfg.prefetch - len(self._inflight) + self._finished_count()
            want = max(0, min(room, cfg.claim_batch)) if free_threads > 0 else 0
            if not claim_due and self._completer is not None:
                want = 0
            claimed = self._guarded(partial(self._commit_and_claim, want))
            if claimed is not None and want > 0:
                claim_due = len(claimed) >= want  # a full batch: more may be waiting
                if self._completer is not None and self._follow_wakeups(len(claimed), want):
                    claim_due = True  # just listed: claim once more (see _follow_wakeups)
            now = time.monotonic()
            if now >= next_beat:
                self._guarded(self._heartbeat)
                next_beat = now + cfg.heartbeat_every
            if not claim_due or want == 0:
                # A hint, a result, a stop or the poll tick.
                claim_due = self.wake.wait(cfg.poll_every) or claim_due
        self._shutdown()
        self._queue = None  # later steps (`run_once`) run their jobs themselves
        rescuer.join(cfg.shutdown_grace)
        log.info("worker.stopped", worker_id=self.id)

    def _follow_wakeups(self, claimed: int, want: int) -> bool:
        """Keep the worker listed as waiting for wake-ups while it waits for them. A claim that
        came back short: the loop is about to sleep until a hint, so list the worker (again,
        if its listener has reconnected since) and wait out the enqueues that skipped their
        NOTIFY meanwhile; True: claim once more, their jobs are visible now. A claim of the
        largest batch the worker takes: a backlog, claimed without waiting, so take the worker
        off the list and enqueues stop sending NOTIFYs (while another worker waits, they go
        on)."""
        cfg = self.config
        if claimed >= want >= min(cfg.claim_batch, cfg.concurrency + cfg.prefetch):
            self._leave_wakeups()
            return False
        session = self.listener.session if self.listener is not None else None
        if claimed >= want or session is None or session == self._subscribed:
            return False
        return self._guarded(partial(self._subscribe, session)) is True

    def _subscribe(self, session: ListenSession) -> bool:
        now = self.clock.now()
        self.db.run(lambda uow: wakeups.subscribe(uow, self.id, session, now=now), autocommit=True)
        self._subscribed = session
        waited = self.db.run(
            partial(wakeups.wait_for_skipping_enqueues, timeout_seconds=self.config.poll_every),
            autocommit=True,
        )
        if not waited:
            log.info("worker.wakeup_wait_timed_out", worker_id=self.id)
        return True

    def _leave_wakeups(self) -> None:
        """Off the list of workers waiting for wake-ups, if on it."""
        if self._subscribed is not None:
            self._guarded(
                lambda: self.db.run(lambda uow: wakeups.unsubscribe(uow, self.id), autocommit=True)
            )
            self._subscribed = None

    def _rescue_every(self, stop: threading.Event) -> None:
        """The rescuer's timer: at start, then every `rescue_every`, until `stop`."""
        while not stop.is_set():
            self._guarded(self._rescue)
            stop.wait(self.config.rescue_every)

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.wake.set()

    def _handler_thread(self, jobs: queue.SimpleQueue[ClaimedJob]) -> None:
        while True:
            job = jobs.get()
            if job.handoff.id not in self._inflight:
                continue  # given back while it waited (see _heartbeat): another worker runs it
            self._running_since[job.handoff.id] = time.monotonic()
            self._results.put(self._execute(job))
            self.wake.result()

    def _shutdown(self) -> None:
        self._leave_wakeups()  # stopping: wake-ups are no use to it any more
        deadline = time.monotonic() + self.config.shutdown_grace
        next_beat = time.monotonic() + self.config.heartbeat_every
        while self._inflight and time.monotonic() < deadline:
            self._guarded(lambda: self._commit_and_claim(0))
            if time.monotonic() >= next_beat:  # a grace longer than the lease stays safe
                self._guarded(self._heartbeat)
                next_beat = time.monotonic() + self.config.heartbeat_every
            self.wake.wait(0.05)
        self._guarded(lambda: self._commit_and_claim(0))
        self._settle_completion(wait=True)
        if self._completer is not None:
            self._completer.shutdown()
            self._completer = None
            self._guarded(lambda: self._commit_and_claim(0))  # a batch that failed in flight
        if self._inflight:
            leases = list(self._inflight.values())
            now = self.clock.now()
            self._guarded(
                lambda: self.db.run(
                    lambda uow: ingestion.release(uow, leases, now=now, worker_id=self.id)
                )
            )
            log.info("worker.released", worker_id=self.id, count=len(leases))
            self._inflight.clear()
            self._running_since.clear()

    # -- steps ---------------------------------------------------------------------------------

    def _finished_count(self) -> int:
        return len(self._unsaved) + self._results.qsize()

    def _commit_and_claim(self, want: int) -> list[ClaimedJob]:
        """Commit finished jobs (failures one by one, successes as a batch) and claim up to
        `want` new ones: in one transaction, or, with the completer, the batch on its thread
        and the claim here. A job whose outcome did not commit (the database was away) stays
        unsaved and is committed on a later turn."""
        self._settle_completion()
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                break
            self._hung.discard(result.job.handoff.id)  # its thread is free again
            self._unsaved.append(result)
        for result in [r for r in self._unsaved if r.failure is not None]:
            self._fail(result)
            self._forget(result)
        if self._completer is not None:
            return self._complete_apart_and_claim(want)
        ok = [r.job.lease for r in self._unsaved]
        if not ok and want <= 0:
            return []
        now = self.clock.now()

        def work(uow: UnitOfWork) -> tuple[list[Lease], list[ClaimedJob]]:
            kept = ingestion.complete(uow, ok, now=now, worker_id=self.id) if ok else []
            jobs = (
                ingestion.claim(uow, self.id, want, now=now, lease=self.config.lease)
                if want > 0
                else []
            )
            return kept, jobs

        # A turn with nothing to commit is the claim alone: on PostgreSQL one statement, which
        # commits by itself (no BEGIN and COMMIT round trips before a woken worker's job starts).
        alone = not ok and self.db.dialect == "postgresql"
        kept, jobs = self.db.run(work, autocommit=alone)
        self._completed(list(self._unsaved), kept)
        self._claimed(jobs, now)
        return jobs

    def _complete_apart_and_claim(self, want: int) -> list[ClaimedJob]:
        """Hand the finished batch to the completer (unless it is busy with the last one),
        then claim in one self-committing statement."""
        if self._unsaved and self._completing is None:
            batch = list(self._unsaved)
            leases = [r.job.lease for r in batch]
            done_at = self.clock.now()
            assert self._completer is not None
            future = self._completer.submit(
                self.db.run,
                lambda uow: ingestion.complete(uow, leases, now=done_at, worker_id=self.id),
            )
            # Committed: wake the loop to report it. Failed: the next turn retries the batch.
            future.add_done_callback(lambda f: None if f.exception() else self.wake.result())
            self._completing = (batch, future)
        if want <= 0:
            return []
        now = self.clock.now()
        jobs = self.db.run(
            lambda uow: ingestion.claim(uow, self.id, want, now=now, lease=self.config.lease),
            autocommit=True,
        )
        self._claimed(jobs, now)
        return jobs

    def _settle_completion(self, *, wait: bool = False) -> None:
        """Take the completer's batch back once it has finished (with `wait`, once it does):
        report and forget what committed; a batch that failed stays unsaved for a later turn."""
        if self._completing is None:
            return
        batch, future = self._completing
        if not wait and not future.done():
            return
        self._completing = None
        try:
            kept = future.result()
        except Exception as exc:  # as a failed loop step: logged, retried on a later turn
            log.error("worker.step_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._completed(batch, kept)

    def _completed(self, batch: list[_Result], kept: list[Lease]) -> None:
        """A finished batch's commit is done: report what it kept, warn of leases lost
        meanwhile, and forget the whole batch."""
        committed = set(kept)
        for result in batch:
            if result.job.lease not in committed:
                lease = result.job.lease
                log.warning(
                    "worker.lease_lost", handoff_id=lease.handoff_id, lease_token=lease.token
                )
        self._report_completed([r for r in batch if r.job.lease in committed])
        for result in batch:
            self._forget(result)

    def _claimed(self, jobs: list[ClaimedJob], now: datetime) -> None:
        """Note the leases, hand the jobs to the handler threads (if running), then report
        them: a job's start does not wait for its log line and metrics."""
        for job in jobs:
            self._inflight[job.handoff.id] = job.lease
            if self._queue is not None:
                self._queue.put(job)
        self._report_claimed(jobs, now)

    def _report_completed(self, results: list[_Result]) -> None:
        for r in results:
            metrics.JOB_DURATION.labels("succeeded").observe(r.seconds)
            log.info("worker.completed", **_job_fields(r.job), seconds=round(r.seconds, 4))

    def _report_claimed(self, jobs: list[ClaimedJob], now: datetime) -> None:
        for job in jobs:
            waited = max(0.0, (now - job.handoff.run_after).total_seconds())
            metrics.CLAIM_LATENCY.observe(waited)
            log.info(
                "worker.claimed",
                **_job_fields(job),
                worker_id=self.id,
                attempt=job.handoff.attempts,
                waited_seconds=round(waited, 3),
            )

    def _forget(self, result: _Result) -> None:
        self._unsaved.remove(result)
        self._drop(result.job.handoff.id)

    def _execute(self, job: ClaimedJob) -> _Result:
        started = time.perf_counter()
        failure: Failure | None = None
        try:
            _check_payload(job)
            self.handler(job)
        except ThrottledError as exc:
            failure = Failure(RetryClass.THROTTLED, str(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            failure = Failure(RetryClass.PERMANENT, str(exc), reason=exc.reason)
        except IngestionFailure as exc:
            failure = Failure(exc.retry_class, str(exc))
        except Exception as exc:  # a handler bug must not kill the worker: it is unclassified
            failure = Failure(RetryClass.UNCLASSIFIED, f"{type(exc).__name__}: {exc}")
        return _Result(job, failure, time.perf_counter() - started)

    def _fail(self, result: _Result) -> None:
        failure = result.failure
        assert failure is not None
        try:
            moved = self.db.run(
                lambda uow: ingestion.fail(
                    uow,
                    result.job.lease,
                    failure,
                    now=self.clock.now(),
                    worker_id=self.id,
                    policy=self.config.policy,
                    rand=self._rand.random,
                )
            )
            terminal = moved.state in TERMINAL_STATES
            metrics.JOB_DURATION.labels("failed" if terminal else "retry").observe(result.seconds)
            log.info(
                "worker.failed" if terminal else "worker.retrying",
                **_job_fields(result.job),
                state=moved.state.value,
                reason_code=moved.reason_code.value,
                retry_class=failure.retry_class.value,
                run_after=None if terminal else moved.run_after.isoformat(),
                error=failure.error,
            )
        except LeaseLost:
            log.warning("worker.lease_lost", handoff_id=result.job.handoff.id)

    def _heartbeat(self) -> None:
        """Extend the leases of jobs in flight, except those whose handler has run past
        `job_timeout`: a hung handler's lease runs out, and the rescuer counts a crash.
        Once every handler thread is stuck in a timed-out handler, the prefetched jobs could
        wait forever: they are given back instead, at no cost to their budgets."""
        cutoff = time.monotonic() - self.config.job_timeout
        for handoff_id, since in list(self._running_since.items()):
            if since < cutoff and handoff_id in self._inflight:
                log.warning("worker.job_timeout", handoff_id=handoff_id, worker_id=self.id)
                self._drop(handoff_id)
                self._hung.add(handoff_id)
        waiting = [lease for i, lease in self._inflight.items() if i not in self._running_since]
        if waiting and len(self._hung) >= self.config.concurrency:
            now = self.clock.now()
            for lease in waiting:
                self._drop(lease.handoff_id)
            self.db.run(lambda uow: ingestion.release(uow, waiting, now=now, worker_id=self.id))
            log.warning("worker.released_waiting", worker_id=self.id, count=len(waiting))
        leases = list(self._inflight.values())
        if not leases:
            return
        now = self.clock.now()
        held = self.db.run(
            lambda uow: ingestion.heartbeat(uow, leases, now=now, lease=self.config.lease)
        )
        for lease in leases:
            if lease.handoff_id not in held:
                # Its handler may still run; its completion will be refused by the fence.
                log.warning(
                    "worker.lease_lost", handoff_id=lease.handoff_id, lease_token=lease.token
                )

    def _drop(self, handoff_id: int) -> None:
        self._inflight.pop(handoff_id, None)
        self._running_since.pop(handoff_id, None)

    def _rescue(self) -> None:
        now = self.clock.now()
        moved = self.db.run(lambda uow: ingestion.rescue(uow, now=now, policy=self.config.policy))
        if moved:
            log.info("rescuer.returned", count=len(moved), handoff_ids=[h.id for h in moved])
        # The same timer keeps the stats counters compact (one row per state and reason), and
        # the list of workers waiting for wake-ups free of those that died listed.
        self.db.run(handoff_queries.compact_counts)
        if self.db.dialect == "postgresql":
            self.db.run(wakeups.prune)

    def _guarded(self, step: Callable[[], T]) -> T | None:
        """Run a loop step; a database outage is logged and retried next tick, never fatal."""
        try:
            return step()
        except Exception as exc:  # the loop must outlive outages; every failure is logged
            log.error("worker.step_failed", error=f"{type(exc).__name__}: {exc}")
            time.sleep(self.config.poll_every)
            return None


def _job_fields(job: ClaimedJob) -> dict[str, object]:
    """What every log line about a job carries: which handoff, which version, which lease."""
    h = job.handoff
    return {
        "handoff_id": h.id,
        "reference_id": h.reference_id,
        "payload_hash": h.payload_hash,
        "lease_token": job.lease.token,
    }


def _check_payload(job: ClaimedJob) -> None:
    """The reference is the contract: the payload must still be there and match its hash."""
    record = job.record
    if record is None:
        raise PermanentError(
            "the scrape record of this handoff no longer exists", reason=ReasonCode.PAYLOAD_MISSING
        )
    if not matches_hash(record.body, record.content_type, record.fields, record.payload_hash):
        raise PermanentError(
            "the stored payload no longer matches its payload_hash",
            reason=ReasonCode.PAYLOAD_HASH_MISMATCH,
        )
