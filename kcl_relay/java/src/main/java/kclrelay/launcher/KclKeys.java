package kclrelay.launcher;

import java.beans.PropertyDescriptor;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.TreeSet;
import org.apache.commons.beanutils.BeanUtilsBean;
import org.apache.commons.beanutils.ConvertUtilsBean;
import org.apache.commons.beanutils.DynaBean;
import org.apache.commons.beanutils.PropertyUtilsBean;
import software.amazon.kinesis.multilang.MultiLangDaemon;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;

/**
 * {@code --kcl-keys}: the properties keys the multilang module of the jars on the classpath reads, one per line, so
 * kcl-relay's own list (kcl_relay/kcl/properties.py, checked before any JVM starts) can be compared with the KCL it
 * runs on (tests/integration/test_kcl_keys.py): a KCL that adds, drops or moves a key fails that test, not a run.
 *
 * <p>KinesisClientLibConfigurator hands every key (AwsCredentialsProvider* renamed) to BeanUtilsBean.setProperty on a
 * MultiLangDaemonConfiguration. That sets a name whose PropertyUtilsBean descriptor has a write method, follows
 * {@code a.b} through a's read method, and silently skips anything else. So, with the same PropertyUtilsBean:
 *
 * <pre>
 *   version V          the multilang jar's version
 *   key NAME           a top-level key: a setter of MultiLangDaemonConfiguration (the flattened beans' by delegation)
 *   nested BEAN.NAME   a setter of a config bean reached through a getter (fanoutConfig.consumerName)
 *   builder NAME       a BuilderDynaBean reached through a getter: NAME.* are settings of an AWS SDK builder
 *   daemon NAME        a key MultiLangDaemonConfig reads from the properties itself (executableName, ...)
 * </pre>
 *
 * The configuration's BeanUtils helpers (utilsBean, convertUtilsBean), also reachable by getters, are not settings
 * and are not listed.
 */
public final class KclKeys {
    static final String FLAG = "--kcl-keys";

    private KclKeys() {}

    static TreeSet<String> lines() throws IllegalAccessException {
        final TreeSet<String> lines = new TreeSet<>();
        lines.add("version " + KclVersion.of(MultiLangDaemon.class, "amazon-kinesis-client-multilang"));
        final PropertyUtilsBean utils = new BeanUtilsBean(new ConvertUtilsBean()).getPropertyUtils();
        final String beans = MultiLangDaemonConfiguration.class.getPackageName();
        for (PropertyDescriptor property : utils.getPropertyDescriptors(MultiLangDaemonConfiguration.class)) {
            final Class<?> type = property.getPropertyType();
            if (property.getWriteMethod() != null) {
                lines.add("key " + property.getName());
            } else if (property.getReadMethod() == null || type == null) {
                continue;
            } else if (DynaBean.class.isAssignableFrom(type)) {
                lines.add("builder " + property.getName());
            } else if (beans.equals(type.getPackageName())) {
                for (PropertyDescriptor nested : utils.getPropertyDescriptors(type)) {
                    if (nested.getWriteMethod() != null) {
                        lines.add("nested " + property.getName() + "." + nested.getName());
                    }
                }
            }
        }
        // MultiLangDaemonConfig's PROP_* constants: the keys it reads with Properties.getProperty.
        for (Field field : MultiLangDaemonConfig.class.getDeclaredFields()) {
            final int modifiers = field.getModifiers();
            if (Modifier.isStatic(modifiers)
                    && field.getType() == String.class
                    && field.getName().startsWith("PROP_")) {
                field.setAccessible(true);
                lines.add("daemon " + field.get(null));
            }
        }
        return lines;
    }

    static int print(final PrintStream out) {
        try {
            for (String line : lines()) {
                out.println(line);
            }
        } catch (IllegalAccessException | RuntimeException e) {
            Launcher.tell("cannot list the KCL's keys: " + e);
            return Launcher.EXIT_FAILED;
        }
        out.flush();
        return 0;
    }
}
