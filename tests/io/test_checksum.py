"""The two-thread CRC-32 (io/checksum.py) equals zlib.crc32 over the whole buffer, so files written before
and after it check the same; a large tensor corrupted in either half is still caught on load."""

import zlib

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import FileFormatError
from distgraph.io import checksum

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("n1, n2", [(0, 5), (5, 0), (1, 1), (3, 1000), (12345, 67891), (1 << 20, (1 << 20) + 7)])
@pytest.mark.parametrize("start", [0, 123456789])
def test_combine_gives_the_crc_of_the_joined_bytes(n1, n2, start):
    a, b = RNG.bytes(n1), RNG.bytes(n2)
    assert checksum.crc32_combine(zlib.crc32(a, start), zlib.crc32(b), n2) == zlib.crc32(a + b, start)


@pytest.mark.parametrize("extra", [0, 1, 4097])
def test_a_large_buffer_checks_as_one_zlib_crc32(extra):
    data = memoryview(RNG.bytes(checksum.PARALLEL_BYTES + extra))
    assert checksum.crc32(data) == zlib.crc32(data)
    assert checksum.crc32(data, 7) == zlib.crc32(data, 7)


@pytest.mark.parametrize("where", [0.25, 0.75])
def test_a_large_tensor_round_trips_and_a_flipped_byte_in_either_half_is_caught(tmp_path, where):
    values = RNG.standard_normal(checksum.PARALLEL_BYTES // 8 + 3)  # float64, past the two-thread size
    dg.save({"w": dg.tensor(values)}, tmp_path / "big.dg")
    np.testing.assert_array_equal(dg.load(tmp_path / "big.dg")["w"].numpy(), values)
    raw = bytearray((tmp_path / "big.dg").read_bytes())
    start = raw.find(values.tobytes()[:64])
    assert start > 0
    raw[start + int(where * values.nbytes)] ^= 0x10
    (tmp_path / "bad.dg").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="checksum mismatch"):
        dg.load(tmp_path / "bad.dg")
