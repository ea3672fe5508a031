"""The one exception tree of offerlift.

Every error the project raises on purpose derives from :class:`OfferliftError`, so callers can catch
one type. HTTP status codes are chosen only at the service's edge, from these classes.

    OfferliftError
    ├── ConfigError            settings, catalog or rules that do not make sense
    ├── DataError              data that cannot be used as it is
    │   ├── DataNotFoundError  a data set that could not be located (says where it looked)
    │   └── SchemaError        a table that breaks the canonical schema (names table, column, rows)
    ├── ModelError             a model that cannot be saved, loaded or used
    │   └── NotFittedError     a learner used before `fit`
    └── PolicyError            a decision that cannot be made (e.g. no arm at all)
"""

from __future__ import annotations

from collections.abc import Sequence


class OfferliftError(Exception):
    """Base class of every error offerlift raises on purpose."""


class ConfigError(OfferliftError):
    """Settings, catalog or rules that are invalid."""


class DataError(OfferliftError):
    """Data that cannot be used as it is."""


class DataNotFoundError(DataError):
    """A data set that could not be found; the message lists every place that was tried."""

    def __init__(self, name: str, tried: Sequence[str]):
        self.name = name
        self.tried = list(tried)
        lines = "\n".join(f"  - {t}" for t in self.tried)
        super().__init__(f"could not find data set {name!r}; looked in:\n{lines}")


class SchemaError(DataError):
    """A table that breaks the canonical schema.

    Attributes name the table, the column and the first offending rows (row labels of the frame).
    """

    def __init__(self, table: str, column: str | None, problem: str, rows: Sequence[object] = ()):
        self.table = table
        self.column = column
        self.problem = problem
        self.rows = list(rows)[:5]
        where = f"table {table!r}" + (f", column {column!r}" if column else "")
        rows_txt = f" (first bad rows: {self.rows})" if self.rows else ""
        super().__init__(f"{where}: {problem}{rows_txt}")


class ModelError(OfferliftError):
    """A model that cannot be saved, loaded or used."""


class NotFittedError(ModelError):
    """A learner used before it was fitted."""


class PolicyError(OfferliftError):
    """A decision that cannot be made."""
