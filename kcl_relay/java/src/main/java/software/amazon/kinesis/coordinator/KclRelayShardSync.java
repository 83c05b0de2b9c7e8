package software.amazon.kinesis.coordinator;

/**
 * kcl-relay's launcher (kclrelay.launcher.LeaseSeed): the Scheduler's own first shard sync, called early. In the
 * KCL's package because PeriodicShardSyncManager, which the Scheduler exposes, is package-private in KCL 3.1.3.
 */
public final class KclRelayShardSync {
    private KclRelayShardSync() {}

    public static void syncShardsOnce(final Scheduler scheduler) throws Exception {
        scheduler.leaderElectedPeriodicShardSyncManager().syncShardsOnce();
    }
}
