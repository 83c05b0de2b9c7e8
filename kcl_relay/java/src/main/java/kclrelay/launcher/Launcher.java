package kclrelay.launcher;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.config.KclRelayConfigAccess;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;

/**
 * kcl-relay's launcher of the KCL 3.1.3 Scheduler: the MultiLangDaemon's job (the same properties file, read by the
 * multilang module's own KinesisClientLibConfigurator; the multilang record processor factory, so the Python
 * processor speaks the MultiLangDaemon protocol unchanged), plus what the properties cannot set (Tuning, LeaderLock).
 *
 * Usage: java -cp LAUNCHER:KCL_JARS/* kclrelay.launcher.Launcher --properties-file FILE
 * or ... kclrelay.launcher.Launcher --kcl-keys: the properties keys these jars read, on stdout (KclKeys), whatever
 * their version (that is how a KCL upgrade that adds, drops or moves a key shows).
 * Exit codes: 0 after a shutdown, 1 when the Scheduler failed, 2 on bad arguments or configuration, 3 when the KCL
 * on the classpath is not the version the launcher was written against.
 */
public final class Launcher {
    static final int EXIT_FAILED = 1;
    static final int EXIT_USAGE = 2;
    static final int EXIT_VERSION = 3;

    /** Lines for the user start so: kcl-relay's supervisor repeats them on its stderr (the JVM's own is a file). */
    static final String TELL = "kcl-relay: ";

    private Launcher() {}

    static void tell(final String message) {
        System.err.println(TELL + message);
        System.err.flush();
    }

    public static void main(final String[] args) {
        System.exit(run(args, (configs, daemonConfig) -> configs.newScheduler()));
    }

    /** Another entry point (another Scheduler) calls this with its own factory and exits with the code. */
    public static int run(final String[] args, final SchedulerFactory factory) {
        if (args.length == 1 && KclKeys.FLAG.equals(args[0])) {
            return KclKeys.print(System.out);
        }
        final String mismatch = KclVersion.mismatch();
        if (mismatch != null) {
            tell(mismatch);
            return EXIT_VERSION;
        }
        final String propertiesFile = propertiesFile(args);
        if (propertiesFile == null) {
            tell("the launcher's usage: --properties-file FILE");
            return EXIT_USAGE;
        }
        final Logger log = LoggerFactory.getLogger(Launcher.class);
        final MultiLangDaemonConfig daemonConfig;
        final Scheduler scheduler;
        final Tuning tuning;
        final GracefulStop stop;
        try {
            daemonConfig = new MultiLangDaemonConfig(propertiesFile);
            final MultiLangDaemonConfiguration configuration = daemonConfig.getMultiLangDaemonConfiguration();
            final KclConfigs configs =
                    KclRelayConfigAccess.resolve(configuration, daemonConfig.getRecordProcessorFactory());
            tuning = Tuning.of(configs.leaseManagement());
            tuning.applyTo(configs);
            scheduler = factory.create(configs, daemonConfig);
            LeaderLock.install(scheduler, tuning);
            stop = new GracefulStop(
                    scheduler,
                    LeaderLock.components(scheduler),
                    configuration.getShutdownGraceMillis(),
                    configs.leaseManagement().workerUtilizationAwareAssignmentConfig().workerMetricsReporterFreqInMillis(),
                    log);
        } catch (Exception e) {
            log.error("kcl-relay launcher: cannot start the Scheduler", e);
            tell("the KCL cannot start: " + e);
            return EXIT_USAGE;
        }
        log.info("kcl-relay launcher: {}", tuning);
        LeaseSeed.run(scheduler, log); // before the stop hook: a SIGTERM meanwhile ends a worker that holds nothing
        Runtime.getRuntime().addShutdownHook(new Thread(stop::run, "kcl-relay-stop"));
        try {
            scheduler.run();
            return 0;
        } catch (Throwable t) {
            log.error("kcl-relay launcher: the Scheduler failed", t);
            return EXIT_FAILED;
        }
    }

    static String propertiesFile(final String[] args) {
        for (int i = 0; i < args.length; i++) {
            if (("--properties-file".equals(args[i]) || "-p".equals(args[i])) && i + 1 < args.length) {
                return args[i + 1];
            }
        }
        return args.length == 1 && !args[0].startsWith("-") ? args[0] : null;
    }
}
