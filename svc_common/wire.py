"""Packing of token and block id arrays into the ``bytes`` fields of the protocol.

Large id arrays travel as little-endian unsigned 32-bit integers back to back ("packed u32"),
which is several times smaller and faster than repeated varints.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

U32 = np.dtype("<u4")
F32 = np.dtype("<f4")


def pack_u32(values: Sequence[int] | npt.NDArray[np.integer]) -> bytes:
    """Pack non-negative ints below 2**32 into packed-u32 bytes.

    Raises ValueError for a negative value or one that does not fit in 32 bits.
    """
    if isinstance(values, list | tuple | range):
        # The array module is several times faster than numpy for the short lists of a plan.
        try:
            packed = array.array("I", values)
        except OverflowError:
            raise ValueError(f"ids must be in [0, 2**32): got {min(values)}..{max(values)}") from None
        if sys.byteorder == "big":
            packed.byteswap()
        return packed.tobytes()
    array_ = np.asarray(values, dtype=np.int64)
    if array_.size and (array_.min() < 0 or array_.max() >= 2**32):
        raise ValueError(f"ids must be in [0, 2**32): got min {array_.min()}, max {array_.max()}")
    return array_.astype(U32).tobytes()


def unpack_u32(data: bytes) -> npt.NDArray[np.int64]:
    """Unpack packed-u32 bytes into an int64 array (a copy, safe to mutate).

    Raises ValueError if the length is not a multiple of 4 bytes.
    """
    if len(data) % U32.itemsize:
        raise ValueError(f"packed u32 field has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype=U32).astype(np.int64)


def pack_f32(values: npt.NDArray[np.floating]) -> bytes:
    """Pack floats as little-endian float32."""
    return np.asarray(values, dtype=F32).tobytes()


def unpack_f32(data: bytes) -> npt.NDArray[np.float32]:
    """Unpack little-endian float32 bytes (a read-only view)."""
    if len(data) % F32.itemsize:
        raise ValueError(f"packed f32 field has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype=F32)
