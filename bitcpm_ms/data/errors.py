"""Exceptions and warnings of the data pipeline (DataError is part of bitcpm_ms.errors)."""
from ..errors import DataError

__all__ = ["DataError", "DataWarning"]


class DataWarning(UserWarning):
    """Recoverable problem in the input (invalid UTF-8 replaced, malformed JSON line skipped)."""
