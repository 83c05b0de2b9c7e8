package kclrelay.launcher;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.Future;
import org.slf4j.Logger;
import software.amazon.kinesis.coordinator.DynamicMigrationComponentsInitializer;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.Lease;
import software.amazon.kinesis.leases.LeaseRefresher;
import software.amazon.kinesis.metrics.CloudWatchMetricsFactory;
import software.amazon.kinesis.worker.metricstats.WorkerMetricStats;
import software.amazon.kinesis.worker.metricstats.WorkerMetricStatsDAO;

/**
 * SIGTERM/SIGINT: the KCL's graceful shutdown (every processor gets shutdown_requested and checkpoints), then this
 * worker's leases handed back and its worker metrics entry removed, and the JVM exits.
 *
 * Why not just wait for the KCL: once the processors have checkpointed, KCL 3.1.3 drops the leases in memory only
 * (other workers take them after failoverTimeMillis), and its main loop then waits failoverTimeMillis for shard
 * consumers it no longer drives to end. Here the leases are evicted (LeaseRefresher.evictLease, conditional on the
 * owner: the leader assigns them at its next run) and the metrics entry deleted (WorkerMetricStatsDAO; while it is
 * fresh the leader counts this worker alive and may hand a lease straight back). A worker that is alone and whose id
 * lasts (kclrelay.handBack=auto, the default) keeps its leases instead: its restart resumes them at once.
 */
final class GracefulStop {
    private static final long POLL_MILLIS = 50L;
    /** After the checkpoints: how long the processors may take to exit on the lease-lost message. */
    private static final long PROCESSORS_EXIT_MILLIS = 3000L;
    private static final long METRICS_FLUSH_MILLIS = 3000L;

    private final Scheduler scheduler;
    private final DynamicMigrationComponentsInitializer components;
    private final long graceMillis;
    private final long metricsReportMillis;
    private final String handBack;
    private final Logger log;

    GracefulStop(
            final Scheduler scheduler,
            final DynamicMigrationComponentsInitializer components,
            final long graceMillis,
            final long metricsReportMillis,
            final Logger log) {
        this.scheduler = scheduler;
        this.components = components;
        this.graceMillis = graceMillis;
        this.metricsReportMillis = metricsReportMillis;
        this.handBack = System.getProperty("kclrelay.handBack", "auto");
        this.log = log;
    }

    void run() {
        final long deadline = System.currentTimeMillis() + graceMillis;
        final String me = scheduler.leaseManagementConfig().workerIdentifier();
        final Collection<Lease> held = new ArrayList<>(scheduler.leaseCoordinator().getAssignments());
        log.info("kcl-relay launcher: graceful stop of worker {} ({} leases)", me, held.size());
        final Future<Boolean> done = scheduler.startGracefulShutdown();
        // The KCL calls Scheduler.shutdown() once every processor has answered shutdown_requested.
        while (scheduler.shutdownStartTimeMillis() == 0 && !done.isDone() && System.currentTimeMillis() < deadline) {
            pause();
        }
        if (scheduler.shutdownStartTimeMillis() == 0 && !done.isDone()) {
            Launcher.tell("the processors did not checkpoint within " + graceMillis + " ms (shutdownGraceMillis)");
            return;
        }
        try {
            if (shouldHandBack(me)) {
                final int released = evict(held);
                deleteMetrics(me);
                Launcher.tell("handed back " + released + " leases of worker " + me + " to the other workers");
            } else {
                Launcher.tell("kept the leases of worker " + me
                        + ": no other worker is alive; a restart with this id resumes at once");
            }
        } catch (Exception e) {
            log.error("kcl-relay launcher: could not hand back the leases of worker {}", me, e);
            Launcher.tell("could not hand back the leases of worker " + me + " (" + e + "); they expire instead");
        }
        final long exitBy = Math.min(deadline, System.currentTimeMillis() + PROCESSORS_EXIT_MILLIS);
        while (ProcessHandle.current().children().anyMatch(ProcessHandle::isAlive)
                && System.currentTimeMillis() < exitBy) {
            pause();
        }
        flushMetrics(deadline);
        log.info("kcl-relay launcher: stopped; {} processes left", ProcessHandle.current().children().count());
    }

    /**
     * kcl-metrics=summary|detailed: the KCL's CloudWatch publisher sends its buffer every metricsBufferTimeMillis
     * (10 s); a JVM that exits right after the stop would drop the last buffer, often the run's only one. Its own
     * shutdown sends what is queued; bounded, so an unreachable CloudWatch cannot hold the exit.
     */
    private void flushMetrics(final long deadline) {
        if (!(scheduler.metricsFactory() instanceof CloudWatchMetricsFactory)) {
            return;
        }
        final CloudWatchMetricsFactory cloudWatch = (CloudWatchMetricsFactory) scheduler.metricsFactory();
        final Thread flush = new Thread(cloudWatch::shutdown, "kcl-relay-metrics-flush");
        flush.setDaemon(true);
        flush.start();
        try {
            flush.join(Math.max(1L, Math.min(deadline - System.currentTimeMillis(), METRICS_FLUSH_MILLIS)));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private boolean shouldHandBack(final String me) throws Exception {
        if ("always".equals(handBack)) {
            return true;
        }
        if ("never".equals(handBack)) {
            return false;
        }
        for (Lease lease : scheduler.leaseRefresher().listLeases()) {
            if (lease.leaseOwner() != null && !lease.leaseOwner().equals(me)) {
                return true;
            }
        }
        // The leader's own test of a live worker (LeaseAssignmentManager): a metrics entry at most two reports old.
        final long freshAfter = System.currentTimeMillis() / 1000 - 2 * Math.max(1L, metricsReportMillis / 1000);
        for (WorkerMetricStats stats : components.workerMetricsDAO().getAllWorkerMetricStats()) {
            if (!me.equals(stats.getWorkerId()) && stats.getLastUpdateTime() != null
                    && stats.getLastUpdateTime() >= freshAfter) {
                return true;
            }
        }
        return false;
    }

    private int evict(final Collection<Lease> held) throws Exception {
        final LeaseRefresher refresher = scheduler.leaseRefresher();
        final List<String> keys = new ArrayList<>();
        held.forEach(lease -> keys.add(lease.leaseKey()));
        int released = 0;
        for (String key : keys) {
            final Lease current = refresher.getLease(key); // its owner fields as they are now (the condition's)
            if (current != null && scheduler.leaseManagementConfig().workerIdentifier().equals(current.actualOwner())
                    && refresher.evictLease(current)) {
                released++;
            }
        }
        return released;
    }

    private void deleteMetrics(final String me) {
        final WorkerMetricStatsDAO dao = components.workerMetricsDAO();
        for (WorkerMetricStats stats : dao.getAllWorkerMetricStats()) {
            if (me.equals(stats.getWorkerId()) && stats.getLastUpdateTime() != null) {
                dao.deleteMetrics(stats);
            }
        }
    }

    private static void pause() {
        try {
            Thread.sleep(POLL_MILLIS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
