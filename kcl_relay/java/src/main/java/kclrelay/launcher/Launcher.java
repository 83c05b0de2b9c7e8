package kclrelay.launcher;

import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
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
 * Exit codes: 0 after a shutdown, 1 when the Scheduler failed, 2 on bad arguments or configuration, 3 when the KCL
 * on the classpath is not the version the launcher was written against.
 */
public final class Launcher {
    static final int EXIT_FAILED = 1;
    static final int EXIT_USAGE = 2;
    static final int EXIT_VERSION = 3;

    private Launcher() {}

    public static void main(final String[] args) {
        System.exit(run(args, (configs, daemonConfig) -> configs.newScheduler()));
    }

    /** Another entry point (another Scheduler) calls this with its own factory and exits with the code. */
    public static int run(final String[] args, final SchedulerFactory factory) {
        final String mismatch = KclVersion.mismatch();
        if (mismatch != null) {
            System.err.println(mismatch);
            return EXIT_VERSION;
        }
        final String propertiesFile = propertiesFile(args);
        if (propertiesFile == null) {
            System.err.println("kcl-relay launcher: usage: --properties-file FILE");
            return EXIT_USAGE;
        }
        final Logger log = LoggerFactory.getLogger(Launcher.class);
        final MultiLangDaemonConfig daemonConfig;
        final Scheduler scheduler;
        final Tuning tuning;
        try {
            daemonConfig = new MultiLangDaemonConfig(propertiesFile);
            final MultiLangDaemonConfiguration configuration = daemonConfig.getMultiLangDaemonConfiguration();
            final KclConfigs configs =
                    KclRelayConfigAccess.resolve(configuration, daemonConfig.getRecordProcessorFactory());
            tuning = Tuning.of(configs.leaseManagement());
            tuning.applyTo(configs);
            scheduler = factory.create(configs, daemonConfig);
            LeaderLock.install(scheduler, tuning);
        } catch (Exception e) {
            log.error("kcl-relay launcher: cannot start the Scheduler", e);
            System.err.println("kcl-relay launcher: cannot start the Scheduler: " + e);
            return EXIT_USAGE;
        }
        log.info("kcl-relay launcher: {}", tuning);
        final long graceMillis = daemonConfig.getMultiLangDaemonConfiguration().getShutdownGraceMillis();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(scheduler, graceMillis, log), "kcl-relay-stop"));
        try {
            scheduler.run();
            return 0;
        } catch (Throwable t) {
            log.error("kcl-relay launcher: the Scheduler failed", t);
            return EXIT_FAILED;
        }
    }

    /** SIGTERM/SIGINT: the MultiLangDaemon's graceful shutdown (processors get shutdown_requested and checkpoint). */
    static void stop(final Scheduler scheduler, final long graceMillis, final Logger log) {
        log.info("kcl-relay launcher: stopping");
        try {
            final Future<Boolean> done = scheduler.startGracefulShutdown();
            done.get(graceMillis, TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            log.error("kcl-relay launcher: graceful shutdown did not finish", e);
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
