"""Logs sized for months: levels, size-capped rotation shared by processes, quiet HTTP libraries, logback config."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcl_relay.logs import (
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    SharedRotatingFileHandler,
    configure_file_logging,
    logback_xml,
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("urllib3", "botocore")})
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, message, None, None)


@pytest.mark.usefixtures("restore_logging")
def test_warn_by_default_info_one_option_away(tmp_path: Path) -> None:
    path = tmp_path / "processor.log"
    configure_file_logging(path, "warn")
    logging.getLogger("kcl_relay.processor").info("shard x: 100 records -> 50 upserts")
    logging.getLogger("kcl_relay.processor").warning("shard x: checkpoint refused")
    logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=2)) after connection broken")
    logging.getLogger("botocore.retryhandler").warning("retry needed")
    logging.getLogger("urllib3.connectionpool").error("Connection pool gave up")
    text = path.read_text()
    assert "checkpoint refused" in text and "Connection pool gave up" in text
    assert "100 records" not in text and "Retrying" not in text and "retry needed" not in text
    configure_file_logging(path, "info")
    logging.getLogger("kcl_relay.processor").info("shard x: 100 records -> 50 upserts")
    assert "100 records" in path.read_text()
    configure_file_logging(path, "debug")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    assert "Starting new HTTP connection" in path.read_text(), "debug shows the HTTP libraries too"


def test_rotation_keeps_the_files_bounded(tmp_path: Path) -> None:
    path = tmp_path / "processor.log"
    handler = SharedRotatingFileHandler(path, max_bytes=1000, backups=2)
    try:
        for n in range(200):
            handler.emit(record(f"line {n:04d} " + "x" * 40))
    finally:
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["processor.log", "processor.log.1", "processor.log.2"]
    assert all((tmp_path / name).stat().st_size <= 1000 for name in files)
    assert "line 0199" in path.read_text(), "the newest lines are in the current file"


def test_a_process_follows_a_rotation_another_one_did(tmp_path: Path) -> None:
    """Two processors of one worker share processor.log: after one rotates, the other writes into the new file."""
    path = tmp_path / "processor.log"
    first = SharedRotatingFileHandler(path, max_bytes=300, backups=3)
    second = SharedRotatingFileHandler(path, max_bytes=300, backups=3)
    try:
        second.emit(record("second starts"))
        for n in range(8):  # the first one fills the file and rotates it
            first.emit(record(f"first {n} " + "y" * 40))
        second.emit(record("second after the rotation"))
    finally:
        first.close()
        second.close()
    assert "second after the rotation" in path.read_text()
    rotated = "".join(p.read_text() for p in tmp_path.glob("processor.log.*") if not p.name.endswith(".lock"))
    assert "second after the rotation" not in rotated
    assert rotated.count("second starts") == 1, "the old lines were moved once, not rotated twice"


@pytest.mark.parametrize("level", ["warn", "info", "debug"])
def test_logback_configuration(tmp_path: Path, level: str) -> None:
    log = tmp_path / "a&b" / "kcl.log"
    root = ET.fromstring(logback_xml(log, level))
    appender = root.find("appender")
    assert appender is not None and appender.get("class") == "ch.qos.logback.core.rolling.RollingFileAppender"
    assert appender.findtext("file") == str(log)
    assert appender.findtext("rollingPolicy/fileNamePattern") == f"{log}.%i"
    assert appender.findtext("rollingPolicy/maxIndex") == str(LOG_BACKUPS)
    assert appender.findtext("triggeringPolicy/maxFileSize") == str(LOG_MAX_BYTES)
    assert root.find("root").get("level") == level.upper()  # type: ignore[union-attr]
    chatty = {logger.get("name"): logger.get("level") for logger in root.findall("logger")}
    wire_level = {"software.amazon.awssdk": "INFO", "io.netty": "INFO", "org.apache": "INFO"}
    assert chatty == (wire_level if level == "debug" else {}), "debug: the KCL's, not every byte on the wire"
