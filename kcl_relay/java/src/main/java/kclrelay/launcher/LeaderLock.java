package kclrelay.launcher;

import com.amazonaws.services.dynamodbv2.AmazonDynamoDBLockClient;
import java.lang.reflect.Field;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import software.amazon.kinesis.coordinator.CoordinatorStateDAO;
import software.amazon.kinesis.coordinator.DynamicMigrationComponentsInitializer;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leader.DynamoDBLockBasedLeaderDecider;
import software.amazon.kinesis.metrics.MetricsFactory;

/**
 * The KCL 3 leader lock with kcl-relay's timing (Tuning), put into a Scheduler before it runs.
 *
 * KCL 3.1.3's Scheduler makes its lock-based leader decider in its constructor from a supplier it keeps in its
 * DynamicMigrationComponentsInitializer (a private field), with the 2-minute lease of
 * DynamoDBLockBasedLeaderDecider.create; no config object reaches it. The supplier is called when the Scheduler
 * initializes (in run()), so replacing it after construction is enough. Reflection on two private fields of a KCL
 * internal class: KclVersion pins the KCL version this was read from, and a missing field fails the start.
 */
final class LeaderLock {
    private LeaderLock() {}

    /** The Scheduler's DynamicMigrationComponentsInitializer: its worker metrics DAO, its leader decider supplier. */
    static DynamicMigrationComponentsInitializer components(final Scheduler scheduler)
            throws ReflectiveOperationException {
        return (DynamicMigrationComponentsInitializer)
                field(Scheduler.class, "migrationComponentsInitializer").get(scheduler);
    }

    static void install(final Scheduler scheduler, final Tuning tuning) throws ReflectiveOperationException {
        final Object initializer = components(scheduler);
        final CoordinatorStateDAO dao =
                (CoordinatorStateDAO) field(initializer.getClass(), "coordinatorStateDAO").get(initializer);
        final String workerId = scheduler.leaseManagementConfig().workerIdentifier();
        final MetricsFactory metrics = scheduler.metricsFactory();
        final Supplier<DynamoDBLockBasedLeaderDecider> creator =
                () -> new Decider(dao, workerId, tuning.leaderLeaseMillis(), tuning.leaderHeartbeatMillis(), metrics);
        field(initializer.getClass(), "ddbLockBasedLeaderDeciderCreator").set(initializer, creator);
    }

    private static Field field(final Class<?> type, final String name) throws NoSuchFieldException {
        final Field field = type.getDeclaredField(name);
        field.setAccessible(true);
        return field;
    }

    /**
     * The KCL's decider with a shorter lock lease, and a leader's "yes" remembered for a moment: the Scheduler asks
     * on every turn of its loop (Tuning.DISPATCH_INTERVAL_MILLIS), and the KCL's decider reads the lock item from
     * DynamoDB on each call while it is leader. A non-leader's "no" is already cached by the KCL for a heartbeat.
     */
    static final class Decider extends DynamoDBLockBasedLeaderDecider {
        private final long rememberMillis;
        private long leaderUntil;

        Decider(
                final CoordinatorStateDAO dao,
                final String workerId,
                final long leaseMillis,
                final long heartbeatMillis,
                final MetricsFactory metrics) {
            super(dao, lockClient(dao, workerId, leaseMillis, heartbeatMillis), heartbeatMillis, workerId, metrics);
            this.rememberMillis = Math.min(1000L, heartbeatMillis / 2);
        }

        private static AmazonDynamoDBLockClient lockClient(
                final CoordinatorStateDAO dao, final String workerId, final long leaseMillis, final long heartbeat) {
            // As DynamoDBLockBasedLeaderDecider.create builds it, but for the two durations.
            return new AmazonDynamoDBLockClient(dao.getDDBLockClientOptionsBuilder()
                    .withTimeUnit(TimeUnit.MILLISECONDS)
                    .withLeaseDuration(leaseMillis)
                    .withHeartbeatPeriod(heartbeat)
                    .withCreateHeartbeatBackgroundThread(true)
                    .withOwnerName(workerId)
                    .build());
        }

        @Override
        public synchronized Boolean isLeader(final String workerId) {
            final long now = System.currentTimeMillis();
            if (now < leaderUntil) {
                return true;
            }
            final Boolean leader = super.isLeader(workerId);
            leaderUntil = Boolean.TRUE.equals(leader) ? now + rememberMillis : 0L;
            return leader;
        }

        @Override
        public void shutdown() {
            synchronized (this) {
                leaderUntil = 0L;
            }
            super.shutdown();
        }
    }
}
