package kclrelay.launcher;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.model.DynamoDBStreamsProcessRecordsInput;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import com.amazonaws.services.dynamodbv2.streamsadapter.processor.DynamoDBStreamsShardRecordProcessor;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Properties;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClientBuilder;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.RetrievalConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * The launcher on a DynamoDB stream: the same properties, processor and tuning as Launcher, with the Scheduler of
 * the DynamoDB Streams Kinesis adapter (2.0.x, StreamsSchedulerFactory). streamName is the stream's ARN (kcl-relay
 * writes it from DescribeTable); kinesisEndpoint, when set, is the DynamoDB Streams endpoint (an emulator's).
 *
 * The adapter's KinesisClientRecord carries the stream record as JSON in its data (its RecordObjectMapper), so the
 * Python processor receives it through the unchanged MultiLangDaemon protocol. Built only with the adapter's jar
 * on the class path (kcl_relay/kcl/launcher.py, kcl_relay/kcl/adapter.py).
 *
 * Usage: java -cp LAUNCHER:ADAPTER_JAR:KCL_JARS/* kclrelay.launcher.DynamoDbStreamsLauncher --properties-file FILE
 */
public final class DynamoDbStreamsLauncher {
    private DynamoDbStreamsLauncher() {}

    public static void main(final String[] args) {
        final String file = Launcher.propertiesFile(args);
        System.exit(Launcher.run(args, (configs, daemonConfig) -> create(configs, daemonConfig, read(file))));
    }

    static Properties read(final String file) {
        final Properties properties = new Properties();
        if (file != null) {
            try (InputStream in = Files.newInputStream(Paths.get(file))) {
                properties.load(in);
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot read " + file + ": " + e.getMessage(), e);
            }
        }
        return properties;
    }

    static Scheduler create(final KclConfigs configs, final MultiLangDaemonConfig daemonConfig, final Properties props)
            throws Exception {
        final String streamArn = props.getProperty("streamName", "").trim();
        final Region region = Region.of(props.getProperty("regionName", "us-east-1").trim());
        final DynamoDbStreamsClientBuilder streams =
                DynamoDbStreamsClient.builder().region(region).credentialsProvider(DefaultCredentialsProvider.create());
        final String endpoint = props.getProperty("kinesisEndpoint", "").trim();
        if (!endpoint.isEmpty()) {
            streams.endpointOverride(URI.create(endpoint));
        }
        final AmazonDynamoDBStreamsAdapterClient adapter =
                new AmazonDynamoDBStreamsAdapterClient(streams.build(), region);

        // The adapter's factory would set these two with a warning each: set here, so a clean run logs none.
        configs.coordinator().skipShardSyncAtWorkerInitializationIfLeasesExist(true);
        configs.leaseManagement().leasesRecoveryAuditorInconsistencyConfidenceThreshold(0);

        final RetrievalConfig retrieval = new RetrievalConfig(
                adapter,
                StreamsSchedulerFactory.createSingleStreamTracker(
                        streamArn, configs.leaseManagement().initialPositionInStream()),
                configs.retrieval().applicationName());
        final DynamoDBStreamsPollingConfig polling = new DynamoDBStreamsPollingConfig(adapter);
        if (configs.retrieval().retrievalSpecificConfig() instanceof PollingConfig given) {
            polling.maxRecords(given.maxRecords());
        }
        final long idle = daemonConfig.getMultiLangDaemonConfiguration().getIdleTimeBetweenReadsInMillis();
        if (idle > 0) {
            polling.idleTimeBetweenReadsInMillis(idle);
        }
        retrieval.retrievalSpecificConfig(polling);

        final ShardRecordProcessorFactory multilang = daemonConfig.getRecordProcessorFactory();
        final ProcessorConfig processor = new ProcessorConfig(() -> new Bridge(multilang.shardRecordProcessor()))
                .callProcessRecordsEvenForEmptyRecordList(configs.processor().callProcessRecordsEvenForEmptyRecordList());
        return StreamsSchedulerFactory.createScheduler(
                configs.checkpoint(),
                configs.coordinator(),
                configs.leaseManagement(),
                configs.lifecycle(),
                configs.metrics(),
                processor,
                retrieval,
                adapter);
    }

    /** The adapter's factory wants its own processor type; this one hands every call to the multilang processor. */
    static final class Bridge implements DynamoDBStreamsShardRecordProcessor {
        private final ShardRecordProcessor delegate;

        Bridge(final ShardRecordProcessor delegate) {
            this.delegate = delegate;
        }

        @Override
        public void initialize(final InitializationInput input) {
            delegate.initialize(input);
        }

        /**
         * What the KCL calls: the records are KinesisClientRecords already, passed on as they are. The adapter has no
         * MillisBehindLatest for an empty read (DynamoDB Streams returns none; the adapter's is "now minus the last
         * record's time" otherwise): an empty read is the tip of the shard, said as Kinesis says it, 0, so that the
         * processor's caught-up test (once=true, lag) works unchanged.
         */
        @Override
        public void processRecords(final ProcessRecordsInput input) {
            if (input.records().isEmpty() && input.millisBehindLatest() == null) {
                delegate.processRecords(input.toBuilder().millisBehindLatest(0L).build());
                return;
            }
            delegate.processRecords(input);
        }

        @Override
        public void processRecords(final DynamoDBStreamsProcessRecordsInput input) {
            delegate.processRecords(ProcessRecordsInput.builder()
                    .records(new ArrayList<KinesisClientRecord>(input.records()))
                    .checkpointer(input.checkpointer())
                    .cacheEntryTime(input.cacheEntryTime())
                    .cacheExitTime(input.cacheExitTime())
                    .millisBehindLatest(input.millisBehindLatest())
                    .childShards(input.childShards())
                    .isAtShardEnd(input.isAtShardEnd())
                    .build());
        }

        @Override
        public void leaseLost(final LeaseLostInput input) {
            delegate.leaseLost(input);
        }

        @Override
        public void shardEnded(final ShardEndedInput input) {
            delegate.shardEnded(input);
        }

        @Override
        public void shutdownRequested(final ShutdownRequestedInput input) {
            delegate.shutdownRequested(input);
        }
    }
}
