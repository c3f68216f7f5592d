"""float32 packing: compact, byte-order fixed, shape-checked."""

from __future__ import annotations

import numpy as np
import pytest

from store.arrays import pack, unpack


def test_round_trip_keeps_float32_values_and_shape() -> None:
    arr = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    out = unpack(pack(arr), arr.shape)
    assert out.dtype == np.float32 and out.shape == (3, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0] = 1.0  # writable copy, not a view on the bytes


def test_pack_is_little_endian_float32() -> None:
    data = pack(np.array([1.0], dtype=">f8"))
    assert data == np.array([1.0], dtype="<f4").tobytes() == b"\x00\x00\x80?"


def test_pack_downcasts_and_accepts_lists() -> None:
    assert len(pack([0.1, 0.2, 0.3])) == 12
    np.testing.assert_allclose(unpack(pack([0.1, 0.2]), (-1,)), [0.1, 0.2], rtol=1e-6)


@pytest.mark.parametrize(("data", "shape"), [(b"\x00" * 7, (-1,)), (b"\x00" * 12, (2, 2))])
def test_unpack_rejects_bytes_that_do_not_fit(data: bytes, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        unpack(data, shape)
