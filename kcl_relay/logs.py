"""Logs sized for months: levels (warn by default), size-capped rotation, no retry spam from HTTP libraries.

The processors' log (one file for every processor process of a run) rotates at LOG_MAX_BYTES, keeping LOG_BACKUPS
old files; the KCL's own log (logback in the JVM) the same way, from the configuration written by `logback_xml`.
"""

from __future__ import annotations

import fcntl
import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path
from xml.sax.saxutils import escape

LOG_LEVELS = ("warn", "info", "debug")
PYTHON_LEVELS = {"warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
# HTTP clients log every retry and pool event as a warning; the relay's own retry says what matters, once.
NOISY_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer")


def quiet_http_libraries(level: str) -> None:
    """urllib3 and botocore only say errors, unless log-level=debug asks for everything."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


class SharedRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler for one file that several processes append to (the processors of one worker).

    Each record is written under an flock on `<file>.lock`, and a process that finds the file rotated by another
    reopens it instead of writing into the old one or rotating it a second time.
    """

    def __init__(self, filename: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, delay=True)
        self._lock_file = open(f"{filename}.lock", "a")  # noqa: SIM115 - held for the handler's life

    def emit(self, record: logging.LogRecord) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            self._follow_rotation()
            super().emit(record)
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _follow_rotation(self) -> None:
        if self.stream is None:
            return
        try:
            current = os.stat(self.baseFilename).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(self.stream.fileno()).st_ino:
            self.stream.close()
            self.stream = self._open()

    def close(self) -> None:
        super().close()
        self._lock_file.close()


def configure_file_logging(path: Path, level: str) -> None:
    """The processor's logging: one rotating file, at `level` (warn, info, debug)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = SharedRotatingFileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=PYTHON_LEVELS[level], handlers=[handler], force=True)
    quiet_http_libraries(level)


# The KCL logs through logback; these loggers stay at INFO even at debug (their DEBUG is every byte on the wire).
JVM_CHATTY = ("software.amazon.awssdk", "io.netty", "org.apache")


def logback_xml(log_path: Path, level: str) -> str:
    """The JVM's logback configuration: `log_path` rotated by size, root at `level` (logback's WARN/INFO/DEBUG)."""
    path = escape(str(log_path))
    chatty = "".join(f'  <logger name="{name}" level="INFO"/>\n' for name in JVM_CHATTY) if level == "debug" else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- kcl-relay, log-level={level}: {LOG_MAX_BYTES // 1024 // 1024} MB per file, {LOG_BACKUPS} old files -->
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{path}</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>{path}.%i</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>{LOG_BACKUPS}</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>{LOG_MAX_BYTES}</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%d [%thread] %-5level %logger{{36}} [%mdc{{ShardId:-NONE}}] - %msg %n</pattern>
    </encoder>
  </appender>
{chatty}  <root level="{level.upper()}">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
"""
