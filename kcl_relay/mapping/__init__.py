"""Column mappings (issue 19): typed top-level columns from attribute paths, include/exclude, table options.

spec.py reads and checks the TOML file, shape.py moves attributes into columns and back (the same on every
database), sql.py spells the columns for each database (types, parameters, read-back, create and alter).
"""

from kcl_relay.mapping.spec import Column, ColumnType, MappingError, MappingFile, TableMapping, load_mapping

__all__ = ["Column", "ColumnType", "MappingError", "MappingFile", "TableMapping", "load_mapping"]
