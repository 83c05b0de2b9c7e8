package kclrelay.launcher;

import java.io.IOException;
import java.io.InputStream;
import java.net.URL;
import java.util.Properties;
import java.util.jar.JarFile;
import java.util.zip.ZipEntry;

/**
 * The KCL version the launcher runs on, read from the Maven pom.properties inside the jar that holds the class (not
 * a compile-time constant, which javac would inline). The launcher reaches into KCL internals (KclRelayConfigAccess,
 * LeaderLock), so it refuses any other version than the one it was written against.
 */
public final class KclVersion {
    /** Keep equal to kcl.version in pom.xml. */
    public static final String EXPECTED = "3.1.3";

    private KclVersion() {}

    /** The version of the artifact `artifactId` (group software.amazon.kinesis) that holds `type`; null if unknown. */
    public static String of(final Class<?> type, final String artifactId) {
        final String entry = "META-INF/maven/software.amazon.kinesis/" + artifactId + "/pom.properties";
        try {
            final URL location = type.getProtectionDomain().getCodeSource().getLocation();
            final String path = location.getPath();
            if (!path.endsWith(".jar")) {
                return null;
            }
            try (JarFile jar = new JarFile(new java.io.File(location.toURI()))) {
                final ZipEntry found = jar.getEntry(entry);
                if (found == null) {
                    return null;
                }
                try (InputStream in = jar.getInputStream(found)) {
                    final Properties properties = new Properties();
                    properties.load(in);
                    return properties.getProperty("version");
                }
            }
        } catch (IOException | java.net.URISyntaxException | SecurityException | NullPointerException e) {
            return null;
        }
    }

    /** null when both KCL jars are EXPECTED; else the one line that says what is wrong. */
    public static String mismatch() {
        final String core = of(software.amazon.kinesis.coordinator.Scheduler.class, "amazon-kinesis-client");
        final String multilang =
                of(software.amazon.kinesis.multilang.MultiLangDaemon.class, "amazon-kinesis-client-multilang");
        if (EXPECTED.equals(core) && EXPECTED.equals(multilang)) {
            return null;
        }
        return "the launcher is built for KCL " + EXPECTED + ", but the classpath has amazon-kinesis-client "
                + (core == null ? "of unknown version" : core) + " and amazon-kinesis-client-multilang "
                + (multilang == null ? "of unknown version" : multilang)
                + ": install the KCL " + EXPECTED + " jars (kcl-relay setup-kcl) or use the stock MultiLangDaemon";
    }
}
