package kclrelay.launcher;

import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;

/**
 * Makes the Scheduler from the resolved configs: the stock one for Kinesis (KclConfigs::newScheduler), another for
 * another source (the DynamoDB Streams adapter's, say), each its own entry point calling Launcher.run.
 */
@FunctionalInterface
public interface SchedulerFactory {
    Scheduler create(KclConfigs configs, MultiLangDaemonConfig daemonConfig) throws Exception;
}
