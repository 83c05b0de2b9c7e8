"""The record processor the MultiLangDaemon runs per shard: a thin adapter from KCL calls to the pipeline.

stdout belongs to the MultiLangDaemon protocol: everything else (logging, stray prints) goes to a log file.
Checkpoints follow the database commit; a lost lease never checkpoints; a shard end always does.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

from kcl_relay.cdc import speedups
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.properties import MIN_MILLIS_BETWEEN_READS
from kcl_relay.kcl.status import ShardStatus, write_status
from kcl_relay.logs import configure_file_logging
from kcl_relay.options import default
from kcl_relay.pipeline import FlushStats, Pipeline, PipelineOptions, settle_heap, target_for
from kcl_relay.sink.base import Sink
from kcl_relay.sink.options import sink_options
from kcl_relay.sink.target import parse_target
from kcl_relay.sink.writer import open_sink

log = logging.getLogger("kcl_relay.processor")

CHECKPOINT_RETRIES = 5
STATUS_INTERVAL = 1.0  # seconds between status file writes while nothing changes


class StartFilter:
    """start=seqno-at / seqno-after: skip what comes before the sequence number on the shard that holds it."""

    def __init__(self, seqno: str, inclusive: bool) -> None:
        self.seqno = int(seqno)
        self.inclusive = inclusive
        self.done = False

    def keep(self, record: RawRecord) -> bool:
        if self.done:
            return True
        number = int(record.position.sequence_number)
        if number > self.seqno or (self.inclusive and number == self.seqno):
            self.done = True  # sequence numbers grow within a shard: no need to compare any more
            return True
        return False


class RelayProcessor(processor.RecordProcessorBase):
    def __init__(self, config: ProcessorConfig) -> None:
        self.config = config
        self.target = parse_target(config.target_url, config.table)
        self.state_dir = Path(config.state_dir)
        self.pipeline = Pipeline(self._open_sink, PipelineOptions.of(config))
        self.status = ShardStatus(shard_id="unknown")
        self.totals = FlushStats()
        self.start_filter: StartFilter | None = None
        self._status_written = 0.0

    def _open_sink(self, dynamodb_table: str | None) -> Sink:
        target = target_for(self.target, dynamodb_table)
        return open_sink(target, **sink_options(self.config))

    # KCL calls -------------------------------------------------------------------------------------------------

    def initialize(self, initialize_input) -> None:
        shard_id = initialize_input.shard_id
        self.status = ShardStatus(shard_id=shard_id)
        checkpoint = initialize_input.sequence_number
        has_checkpoint = bool(checkpoint) and str(checkpoint).isdigit()
        if has_checkpoint:
            log.info("shard %s: resuming after checkpoint %s (start option not used)", shard_id, checkpoint)
        elif self.config.start in ("seqno-at", "seqno-after") and shard_id == self.config.seqno_shard:
            assert self.config.seqno is not None
            self.start_filter = StartFilter(self.config.seqno, inclusive=self.config.start == "seqno-at")
            log.info("shard %s: no checkpoint, starting %s %s", shard_id, self.config.start, self.config.seqno)
        else:
            log.info("shard %s: no checkpoint, starting at %s (%s)", shard_id, checkpoint, self.config.start)
        self._write_status(force=True)

    def process_records(self, process_records_input) -> None:
        records = [
            RawRecord(
                data=record.binary_data,
                position=Position(self.status.shard_id, record.sequence_number, record.sub_sequence_number or 0),
                partition_key=record.partition_key,
            )
            for record in process_records_input.records
        ]
        if self.start_filter is not None:
            records = [record for record in records if self.start_filter.keep(record)]
        self.pipeline.add(records)
        if self.pipeline.due(lookahead=self._next_delivery_in(process_records_input.millis_behind_latest)):
            self._flush_and_checkpoint(process_records_input.checkpointer)
        self.status.millis_behind = process_records_input.millis_behind_latest
        was_caught_up = self.status.caught_up
        caught_up = not process_records_input.records and not self.pipeline.pending
        self.status.caught_up = caught_up and process_records_input.millis_behind_latest == 0
        self._write_status(force=self.status.caught_up != was_caught_up)  # once=true must never act on a stale one

    def _next_delivery_in(self, millis_behind_latest: int | None) -> float:
        """When the KCL calls again: not before its 200 ms floor; after a read that reached the tip (MillisBehindLatest
        below idle-sleep, the KCL's own test), after idle-sleep. See polling_properties."""
        floor = MIN_MILLIS_BETWEEN_READS / 1000
        at_tip = millis_behind_latest is not None and millis_behind_latest < self.config.idle_sleep * 1000
        return max(floor, self.config.idle_sleep) if at_tip else floor

    def lease_lost(self, lease_lost_input) -> None:
        # Another worker owns the shard now and resumes from the last checkpoint: drop what is staged, never checkpoint.
        # After shutdown_requested (a graceful stop) the KCL drops the lease itself, having let us checkpoint: the
        # lease lost that follows is the expected end, not a warning.
        log.log(
            logging.INFO if self.status.stopped else logging.WARNING,
            "shard %s: lease lost, %d staged records left to the new owner",
            self.status.shard_id,
            self.pipeline.pending,
        )
        self.status.lease_lost = True
        self._write_status(force=True)
        self.pipeline.close()

    def shard_ended(self, shard_ended_input) -> None:
        self._flush_and_checkpoint(shard_ended_input.checkpointer, shard_end=True)
        self.status.ended = self.status.caught_up = True
        log.info("shard %s: shard end reached and checkpointed", self.status.shard_id)
        self._write_status(force=True)
        self.pipeline.close()

    def shutdown_requested(self, shutdown_requested_input) -> None:
        self._flush_and_checkpoint(shutdown_requested_input.checkpointer)
        self.status.stopped = True
        log.info("shard %s: shutdown requested, flushed and checkpointed", self.status.shard_id)
        self._write_status(force=True)
        self.pipeline.close()

    # the work --------------------------------------------------------------------------------------------------

    def _flush_and_checkpoint(self, checkpointer, shard_end: bool = False) -> None:
        try:
            stats = self.pipeline.flush()
        except Exception:
            # The sink retried and gave up, or a bug of ours (never a dead letter). Exiting without a checkpoint makes
            # the KCL redeliver from the last one; returning would let amazon-kclpy swallow the error and the next
            # checkpoint skip these records.
            log.exception(
                "shard %s: writing to the database failed (or a bug, see the traceback); exiting without checkpoint",
                self.status.shard_id,
            )
            self.status.caught_up = False
            self.status.failed = True
            self._write_status(force=True)
            raise SystemExit(1) from None
        if stats.records:
            self._count(stats)
        position = stats.last_position
        if shard_end:
            self._checkpoint(checkpointer, None, None)  # at shard end the KCL needs the no-argument checkpoint
        elif position is not None:
            self._checkpoint(checkpointer, position.sequence_number, position.sub_sequence_number)

    def _count(self, stats: FlushStats) -> None:
        self.totals.add(stats)
        self.totals.batch_seconds.clear()  # only the histogram keeps them
        for seconds in stats.batch_seconds:
            self.status.observe_apply(seconds)
        self.status.applied = self.totals.applied
        self.status.records = self.totals.records
        self.status.dead_letters = self.totals.dead_letters
        self.status.misfits = self.totals.misfits
        if stats.applied:
            self.status.last_applied_at = time.time()
            if self.status.first_applied_at is None:
                self.status.first_applied_at = self.status.last_applied_at
        log.info(
            "shard %s: %d records -> %d upserts, %d deletes, %d stale, %d ttl ignored, %d dead letters",
            self.status.shard_id,
            stats.records,
            stats.upserted,
            stats.deleted,
            stats.stale,
            stats.ttl_ignored,
            stats.dead_letters,
        )

    def _checkpoint(self, checkpointer, sequence_number: str | None, sub_sequence_number: int | None) -> None:
        for attempt in range(1, CHECKPOINT_RETRIES + 1):
            try:
                checkpointer.checkpoint(sequence_number, sub_sequence_number)
                return
            except kcl.CheckpointError as error:
                if error.value == "ThrottlingException" and attempt < CHECKPOINT_RETRIES:
                    time.sleep(0.5 * 2**attempt)
                    continue
                if error.value in ("ShutdownException", "InvalidStateException"):
                    # The lease is gone: the new owner redelivers from the last checkpoint; our writes are idempotent.
                    log.warning("shard %s: checkpoint refused (%s)", self.status.shard_id, error.value)
                    return
                raise

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._status_written >= STATUS_INTERVAL or self.status.caught_up:
            self.status.retries = self.pipeline.retries
            self.status.fastpath_fallbacks = {path: count for path, count in speedups.fallbacks.items() if count}
            write_status(self.state_dir, self.status)
            self._status_written = now


def configure_logging(state_dir: Path, level: str = default("log-level")) -> None:
    configure_file_logging(state_dir / "processor.log", level)


def main() -> None:
    config = ProcessorConfig.from_env()
    configure_logging(Path(config.state_dir), config.log_level)
    # Stop signals are for the supervisor: it asks the JVM, which asks us (shutdown_requested) to flush and checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # a stray print must never corrupt the protocol channel
    processor = RelayProcessor(config)
    settle_heap()
    kcl.KCLProcess(processor, output_file=protocol_out).run()


if __name__ == "__main__":
    main()
