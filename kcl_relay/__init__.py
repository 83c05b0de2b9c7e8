"""kcl-relay: DynamoDB CDC (Kinesis Data Streams for DynamoDB) into CrateDB, via the KCL MultiLangDaemon."""

__version__ = "0.1.0"
