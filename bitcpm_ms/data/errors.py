"""Exceptions and warnings of the data pipeline."""


class DataError(ValueError):
    """Bad input for the data pipeline (missing path, empty corpus, binary file,
    corpus too small, conflicting output directory, ...). The message names the file."""


class DataWarning(UserWarning):
    """Recoverable problem in the input (invalid UTF-8 replaced, malformed JSON line skipped)."""
