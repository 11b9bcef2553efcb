"""LOT attention backend ("lot"): LOTFormer, arXiv 2509.23436.

The implementation lives in `lotformer.lot`; importing it here registers the backend.
"""

from lotformer.lot import LOTAttention

__all__ = ["LOTAttention"]
