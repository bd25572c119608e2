"""The error of the fused CPU training ops."""
from ..errors import BitCPMError


class FusedOpError(BitCPMError, ValueError):
    """A fused op was given a shape, dtype or setting it does not support (the message names the op)."""
