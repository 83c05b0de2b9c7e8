package software.amazon.kinesis.multilang.config;

import kclrelay.launcher.KclConfigs;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;

/**
 * The one class of kcl-relay inside a KCL package: MultiLangDaemonConfiguration resolves the properties into the
 * KCL's seven config objects only package-privately (its public build() makes the Scheduler at once, with no way to
 * adjust a config first). Calling it from here keeps the properties' meaning exactly the MultiLangDaemon's, checked
 * by javac against the jars it runs on (a KCL that renames it fails the build, not a run).
 */
public final class KclRelayConfigAccess {
    private KclRelayConfigAccess() {}

    public static KclConfigs resolve(
            final MultiLangDaemonConfiguration configuration, final ShardRecordProcessorFactory factory) {
        final MultiLangDaemonConfiguration.ResolvedConfiguration resolved =
                configuration.resolvedConfiguration(factory);
        return new KclConfigs(
                resolved.getCheckpointConfig(),
                resolved.getCoordinatorConfig(),
                resolved.getLeaseManagementConfig(),
                resolved.getLifecycleConfig(),
                resolved.getMetricsConfig(),
                resolved.getProcessorConfig(),
                resolved.getRetrievalConfig());
    }
}
