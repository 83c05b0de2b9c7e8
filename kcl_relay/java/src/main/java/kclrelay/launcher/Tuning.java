package kclrelay.launcher;

import java.util.List;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.worker.platform.Ec2Resource;
import software.amazon.kinesis.worker.platform.EcsResource;
import software.amazon.kinesis.worker.platform.EksResource;
import software.amazon.kinesis.worker.platform.ResourceMetadataProvider;

/**
 * What the launcher sets beyond the properties, derived from failoverTimeMillis (so a properties file alone decides,
 * as with the MultiLangDaemon); each can be overridden by a system property kclrelay.NAME (milliseconds).
 */
public record Tuning(long leaderLeaseMillis, long leaderHeartbeatMillis, long dispatchIntervalMillis) {
    /** The leader lock's lease is at least this long: the lock client refuses heartbeats under 2 x lease. */
    static final long MIN_LEADER_LEASE_MILLIS = 2000L;

    /**
     * The Scheduler's main loop pause: its shard consumers advance one state (waiting on parents, initializing,
     * processing) per turn, so the KCL's 1 s made a fresh lease wait ~3 s before its first GetRecords. Each turn is
     * in-memory work but for the leader check, which LeaderLock keeps from reading DynamoDB at this pace.
     */
    static final long DISPATCH_INTERVAL_MILLIS = 100L;

    static final long EMPTY_CAPTURE_MILLIS = 10L;

    public static Tuning of(final LeaseManagementConfig leases) {
        final long failover = leases.failoverTimeMillis();
        // KCL 3.1.3 hard-codes a 2-minute lock lease renewed every 30 s (DynamoDBLockBasedLeaderDecider): a crashed
        // leader stalled every lease assignment (and so every shard it held) for 2-2.5 minutes. A third of
        // failoverTime: a survivor holds the lock a few seconds after the crash, then (the new leader's view of the
        // leases starts afresh) the dead leader's leases expire after failoverTime, as any dead worker's do. A
        // third of the lease between heartbeats, as dynamodb-lock-client asks: one small write per heartbeat.
        final long lease = Long.getLong("kclrelay.leaderLeaseMillis", Math.max(MIN_LEADER_LEASE_MILLIS, failover / 3));
        final long heartbeat = Long.getLong("kclrelay.leaderHeartbeatMillis", Math.max(1L, lease / 3));
        final long dispatch = Long.getLong("kclrelay.dispatchIntervalMillis", DISPATCH_INTERVAL_MILLIS);
        if (lease < 2 * heartbeat) {
            throw new IllegalArgumentException("kclrelay.leaderLeaseMillis (" + lease
                    + ") must be at least twice kclrelay.leaderHeartbeatMillis (" + heartbeat + ")");
        }
        return new Tuning(lease, heartbeat, dispatch);
    }

    void applyTo(final KclConfigs configs) {
        configs.coordinator().shardConsumerDispatchPollIntervalMillis(dispatchIntervalMillis);
        chooseWorkerMetrics(configs.leaseManagement().workerUtilizationAwareAssignmentConfig());
    }

    /**
     * The KCL picks CPU worker metrics when it finds itself on EC2, ECS or EKS, and otherwise warns ("Did not find an
     * operating range metadata provider") and runs without any. The same probes here; off those platforms the
     * same outcome, said as configuration (disableWorkerMetrics), so a clean run logs no warning.
     */
    static void chooseWorkerMetrics(final LeaseManagementConfig.WorkerUtilizationAwareAssignmentConfig config) {
        if (!config.workerMetricList().isEmpty() || config.disableWorkerMetrics()) {
            return;
        }
        final List<ResourceMetadataProvider> platforms =
                List.of(EcsResource.create(), EksResource.create(), Ec2Resource.create());
        if (platforms.stream().noneMatch(ResourceMetadataProvider::isOnPlatform)) {
            config.disableWorkerMetrics(true);
            // The worker's first metrics report comes 2 x this after start, its first lease assignment at once: a
            // worker not reported yet gets no lease ("Not able to assign all expiredOrUnAssignedLeases", a warning).
            // Without metrics a capture is an empty loop, so it can run often enough to report first.
            config.inMemoryWorkerMetricsCaptureFrequencyMillis(
                    Math.min(config.inMemoryWorkerMetricsCaptureFrequencyMillis(), EMPTY_CAPTURE_MILLIS));
        }
    }
}
