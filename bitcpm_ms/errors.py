"""The exception tree of bitcpm-ms: one root, so a command-line tool catches one type.

Every error a user can cause by bad input (a config key, a data path, a checkpoint of another
model, an export path that exists) derives from `BitCPMError`. `bitcpm_ms.app.cli` turns it into
one `error: ...` line and exit status 2. Internal bugs stay ordinary exceptions with tracebacks.
Subclasses also derive from ValueError, which is what most of these errors were before.
"""


class BitCPMError(ValueError):
    """Bad input that the message names (a file, a key, a parameter); see subclasses."""


class ConfigError(BitCPMError):
    """A config file, override or command-line value that cannot be used."""


class CheckpointError(BitCPMError):
    """A checkpoint path or file that cannot be used for this model."""


class ConversionError(BitCPMError):
    """A checkpoint or model config that cannot be converted (Hugging Face, GGUF, packed)."""


class DataError(BitCPMError):
    """Bad input for the data pipeline (missing path, empty corpus, binary file, corpus too small,
    conflicting output directory, ...). The message names the file."""
