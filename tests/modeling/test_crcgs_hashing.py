"""pack_codes / unpack_codes / to_signed_codes against numpy.packbits and a per-bit loop."""

import numpy as np
import pytest
import torch

from modeling_crcgs import num_packed_bytes, pack_codes, to_signed_codes, unpack_codes


def _random_codes(n: int, bits: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n, bits), generator=g) * 2 - 1).to(torch.int8)


def _loop_pack(codes: np.ndarray) -> np.ndarray:
    n, bits = codes.shape
    out = np.zeros((n, (bits + 7) // 8), dtype=np.uint8)
    for i in range(n):
        for k in range(bits):
            if codes[i, k] > 0:
                out[i, k // 8] |= 1 << (7 - k % 8)
    return out


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 12, 16, 33, 64, 130])
def test_pack_matches_loop_and_packbits_and_round_trips(bits):
    codes = _random_codes(6, bits, seed=bits)
    packed = pack_codes(codes)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (6, num_packed_bytes(bits))
    np.testing.assert_array_equal(packed.numpy(), _loop_pack(codes.numpy()))
    np.testing.assert_array_equal(packed.numpy(), np.packbits(codes.numpy() > 0, axis=1))
    unpacked = unpack_codes(packed, bits)
    assert unpacked.dtype == torch.int8
    assert torch.equal(unpacked, codes)


def test_numpy_in_numpy_out_and_float_codes():
    codes = _random_codes(4, 20).numpy().astype(np.float32)
    packed = pack_codes(codes)
    assert isinstance(packed, np.ndarray) and packed.dtype == np.uint8
    back = unpack_codes(packed, 20)
    assert isinstance(back, np.ndarray) and back.dtype == np.int8
    np.testing.assert_array_equal(back, codes.astype(np.int8))


def test_hamming_distance_is_popcount_of_xor():
    bits = 29
    a, b = _random_codes(5, bits, 1), _random_codes(7, bits, 2)
    pa, pb = pack_codes(a).numpy(), pack_codes(b).numpy()
    xor = np.bitwise_xor(pa[:, None, :], pb[None, :, :])
    popcount = np.unpackbits(xor, axis=2).sum(axis=2)
    expected = (bits - a.int() @ b.int().T) // 2  # docs/METHOD.md: d_H = (K - a.b) / 2
    np.testing.assert_array_equal(popcount, expected.numpy())


def test_to_signed_codes_accepts_the_three_forms():
    codes = _random_codes(3, 13)
    bits01 = (codes > 0).to(torch.uint8)
    assert torch.equal(to_signed_codes(codes), codes)
    assert torch.equal(to_signed_codes(codes.float(), 13), codes)
    assert torch.equal(to_signed_codes(bits01), codes)
    assert torch.equal(to_signed_codes(bits01.bool()), codes)
    assert torch.equal(to_signed_codes(pack_codes(codes), num_bits=13), codes)
    np.testing.assert_array_equal(to_signed_codes(pack_codes(codes.numpy()), 13), codes.numpy())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: pack_codes(torch.zeros(2, 3)), "only -1 and \\+1"),
        (lambda: pack_codes(torch.ones(3)), "2-D"),
        (lambda: pack_codes([[1, -1]]), "torch.Tensor or numpy"),
        (lambda: unpack_codes(torch.zeros(2, 2, dtype=torch.int8), 16), "uint8"),
        (lambda: unpack_codes(torch.zeros(2, 3, dtype=torch.uint8), 16), "2 columns"),
        (lambda: unpack_codes(torch.full((1, 1), 255, dtype=torch.uint8), 3), "padding bits"),
        (lambda: unpack_codes(torch.zeros(1, 1, dtype=torch.uint8), 0), "num_bits"),
        (lambda: to_signed_codes(torch.tensor([[2, 3]], dtype=torch.uint8)), "num_bits"),
        (lambda: to_signed_codes(torch.tensor([[-1, 0, 1]])), "mix"),
        (lambda: to_signed_codes(torch.ones(2, 5), num_bits=6), "num_bits=6"),
    ],
)
def test_bad_codes_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sign_codes_map_zero_to_plus_one():
    from modeling_crcgs.hashing import sign_codes

    codes = sign_codes(torch.tensor([[-0.5, 0.0, 2.0], [-0.0, -3.0, 1e-9]]))
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[-1, 1, 1], [1, -1, 1]]
