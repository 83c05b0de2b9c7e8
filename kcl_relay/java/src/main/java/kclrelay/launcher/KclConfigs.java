package kclrelay.launcher;

import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.retrieval.RetrievalConfig;

/** The KCL's config objects as the multilang properties resolved them; mutable (fluent setters) until built. */
public record KclConfigs(
        CheckpointConfig checkpoint,
        CoordinatorConfig coordinator,
        LeaseManagementConfig leaseManagement,
        LifecycleConfig lifecycle,
        MetricsConfig metrics,
        ProcessorConfig processor,
        RetrievalConfig retrieval) {

    /** The stock Scheduler, as the MultiLangDaemon builds it. */
    public Scheduler newScheduler() {
        return new Scheduler(checkpoint, coordinator, leaseManagement, lifecycle, metrics, processor, retrieval);
    }
}
