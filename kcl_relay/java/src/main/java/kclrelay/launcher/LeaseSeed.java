package kclrelay.launcher;

import org.slf4j.Logger;
import software.amazon.kinesis.coordinator.KclRelayShardSync;
import software.amazon.kinesis.coordinator.Scheduler;

/**
 * Before the Scheduler runs: on an empty lease table, the KCL's own first shard sync, at once.
 *
 * Why: Scheduler.initialize() (KCL 3.1.3, shouldInitiateLeaseSync) waits a random 1-30 s while the lease table is
 * empty, hard-coded, before it syncs the shards itself; a first start sat idle that long. Here the same two calls
 * the Scheduler would make (the lease coordinator's table set-up, the periodic shard sync manager's syncShardsOnce)
 * run first, with the Scheduler's own stream, shard detector and start position (the DynamoDB Streams adapter's
 * too), so the Scheduler finds the leases and skips its wait. Workers starting together each sync: lease writes are
 * conditional, the KCL's own. On failure nothing is lost: the Scheduler does it the slow way, as without this.
 * kcl-relay writes Kinesis leases before a first start already (kcl/leases.py), so this acts on DynamoDB Streams
 * and on a table emptied by hand.
 */
final class LeaseSeed {
    private LeaseSeed() {}

    static void run(final Scheduler scheduler, final Logger log) {
        try {
            scheduler.leaseCoordinator().initialize();
            if (!scheduler.leaseRefresher().isLeaseTableEmpty()) {
                return;
            }
            KclRelayShardSync.syncShardsOnce(scheduler);
            log.info("kcl-relay launcher: wrote the leases of an empty lease table (the KCL's shard sync, at once)");
        } catch (Exception e) {
            log.info("kcl-relay launcher: the early shard sync failed ({}); the Scheduler syncs after its wait",
                    e.toString());
        }
    }
}
