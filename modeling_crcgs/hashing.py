"""Binary hash codes: sign codes in {-1,+1}, their packed uint8 form, and conversions between them.

A code of K bits is a row of K values in {-1,+1} (``int8``). Packed, bit ``k`` of a row is stored in byte
``k // 8`` at bit position ``7 - k % 8`` (most significant bit first, the ``numpy.packbits`` default
order), with ``+1 -> 1`` and ``-1 -> 0``; the ``8 * ceil(K / 8) - K`` padding bits of the last byte are 0.
So the Hamming distance of two codes equals the popcount of the XOR of their packed rows, which is what
``faiss.IndexBinaryFlat(K)`` computes (docs/METHOD.md: d_H(a, b) = (K - a.b) / 2).

Every function accepts a ``torch.Tensor`` or a ``numpy.ndarray`` and returns the same kind (on the same
device for tensors).
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from .utils import check_positive_int

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = ["num_packed_bytes", "pack_codes", "sign_codes", "unpack_codes", "to_signed_codes"]

# Bit weights of one byte, most significant bit first (numpy.packbits order).
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def num_packed_bytes(num_bits: int) -> int:
    """Bytes per packed code of ``num_bits`` bits: ``ceil(num_bits / 8)``."""
    return (check_positive_int("num_bits", num_bits) + 7) // 8


def _as_tensor(codes: ArrayLike, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)``; validate that ``codes`` is a 2-D array."""
    if isinstance(codes, np.ndarray):
        tensor, was_numpy = torch.from_numpy(np.ascontiguousarray(codes)), True
    elif isinstance(codes, torch.Tensor):
        tensor, was_numpy = codes, False
    else:
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(codes).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (num_codes, bits), got shape {tuple(tensor.shape)}")
    return tensor, was_numpy


def _back(tensor: torch.Tensor, was_numpy: bool) -> ArrayLike:
    return tensor.cpu().numpy() if was_numpy else tensor


def _check_signed(tensor: torch.Tensor, name: str) -> None:
    if tensor.dtype.is_complex:
        raise ValueError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    if tensor.numel() and not bool(((tensor == 1) | (tensor == -1)).all()):
        bad = tensor[(tensor != 1) & (tensor != -1)][:5].tolist()
        raise ValueError(f"{name} must contain only -1 and +1, got other values such as {bad}")


def pack_codes(codes: ArrayLike) -> ArrayLike:
    """Pack sign codes into bits.

    Args:
        codes (`torch.Tensor` or `np.ndarray` of shape `(n, K)`):
            Values in {-1, +1} (any real dtype). K need not be a multiple of 8.

    Returns:
        `uint8` array of shape `(n, ceil(K / 8))`: bit ``k`` is 1 where ``codes[:, k] == +1``, most
        significant bit first, padding bits 0.

    Raises:
        ValueError: not 2-D, or a value other than -1/+1.

    Example:
        >>> import torch
        >>> pack_codes(torch.tensor([[1, -1, 1, 1, -1, -1, -1, -1, 1]], dtype=torch.int8))
        tensor([[176, 128]], dtype=torch.uint8)
    """
    tensor, was_numpy = _as_tensor(codes, "codes")
    _check_signed(tensor, "codes")
    n, num_bits = tensor.shape
    if num_bits == 0:
        raise ValueError("codes must have at least one bit (got 0 columns)")
    num_bytes = num_packed_bytes(num_bits)
    bits = (tensor > 0).to(torch.int32)
    bits = torch.nn.functional.pad(bits, (0, num_bytes * 8 - num_bits))  # (n, num_bytes * 8)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.int32, device=tensor.device)
    packed = (bits.view(n, num_bytes, 8) * weights).sum(dim=-1).to(torch.uint8)  # (n, num_bytes)
    return _back(packed, was_numpy)


def unpack_codes(packed: ArrayLike, num_bits: int) -> ArrayLike:
    """Unpack bits produced by :func:`pack_codes` into sign codes.

    Args:
        packed (`uint8` array of shape `(n, ceil(num_bits / 8))`): packed codes.
        num_bits (`int`): the code length K.

    Returns:
        `int8` array of shape `(n, num_bits)` with values in {-1, +1}.

    Raises:
        ValueError: wrong dtype, wrong width for ``num_bits``, or non-zero padding bits.

    Example:
        >>> import torch
        >>> unpack_codes(torch.tensor([[176, 128]], dtype=torch.uint8), 9).tolist()
        [[1, -1, 1, 1, -1, -1, -1, -1, 1]]
    """
    num_bytes = num_packed_bytes(num_bits)
    tensor, was_numpy = _as_tensor(packed, "packed")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"packed must have dtype uint8, got {tensor.dtype}")
    if tensor.shape[1] != num_bytes:
        raise ValueError(
            f"packed must have ceil(num_bits/8) = {num_bytes} columns for num_bits={num_bits}, "
            f"got {tensor.shape[1]}"
        )
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=tensor.device)
    bits = (tensor.unsqueeze(-1) & weights) != 0  # (n, num_bytes, 8)
    bits = bits.reshape(tensor.shape[0], num_bytes * 8)
    if num_bytes * 8 != num_bits and bool(bits[:, num_bits:].any()):
        raise ValueError(
            f"packed has non-zero padding bits beyond bit {num_bits}: not codes of {num_bits} bits"
        )
    signed = bits[:, :num_bits].to(torch.int8) * 2 - 1
    return _back(signed, was_numpy)


def sign_codes(logits: torch.Tensor) -> torch.Tensor:
    """Codes ``sign(logits)`` as ``int8`` in {-1, +1}, with sign(0) taken as +1 (so every bit is set)."""
    return torch.where(logits >= 0, 1, -1).to(torch.int8)


def to_signed_codes(codes: ArrayLike, num_bits: int | None = None) -> ArrayLike:
    """Normalize codes given in any of the three accepted forms to ``int8`` sign codes in {-1, +1}.

    Accepted forms (rows are codes):

    * sign codes: values in {-1, +1}, any real dtype, shape `(n, K)`;
    * bit codes: values in {0, 1} (``bool`` or integer dtype), shape `(n, K)`; 1 means +1;
    * packed codes: ``uint8`` of shape `(n, ceil(K / 8))` as written by :func:`pack_codes`. A ``uint8``
      array is read as packed only when ``num_bits`` is given and its width is ``ceil(num_bits / 8)``
      (and differs from ``num_bits``); without ``num_bits`` a ``uint8`` array must hold bits {0, 1}.

    Args:
        codes: the codes, 2-D.
        num_bits (`int`, *optional*): the expected code length K. When given, the result is checked to
            have exactly K columns.

    Returns:
        `int8` array of shape `(n, K)` with values in {-1, +1}, same kind as ``codes``.

    Raises:
        ValueError: not 2-D, values outside the form's alphabet, a mixture of {-1, 0, +1}, or a width
            that does not match ``num_bits``.

    Example:
        >>> import numpy as np
        >>> to_signed_codes(np.array([[0, 1, 1]], dtype=np.uint8)).tolist()
        [[-1, 1, 1]]
    """
    tensor, was_numpy = _as_tensor(codes, "codes")
    if num_bits is not None:
        num_bytes = num_packed_bytes(num_bits)
        if tensor.dtype == torch.uint8 and tensor.shape[1] == num_bytes and num_bytes != num_bits:
            return unpack_codes(codes, num_bits)
        if tensor.shape[1] != num_bits:
            raise ValueError(
                f"codes must have num_bits={num_bits} columns (or {num_bytes} uint8 columns when packed), "
                f"got shape {tuple(tensor.shape)} with dtype {tensor.dtype}"
            )
    if tensor.dtype == torch.bool:
        return _back(tensor.to(torch.int8) * 2 - 1, was_numpy)
    if tensor.dtype.is_complex:
        raise ValueError(f"codes must be real-valued, got dtype {tensor.dtype}")
    is_one = tensor == 1
    is_minus = tensor == -1
    is_zero = tensor == 0
    if not bool((is_one | is_minus | is_zero).all()):
        bad = tensor[~(is_one | is_minus | is_zero)][:5].tolist()
        hint = " (packed uint8 codes need num_bits)" if tensor.dtype == torch.uint8 else ""
        raise ValueError(f"codes must hold {{-1,+1}} or {{0,1}} values, got values such as {bad}{hint}")
    if bool(is_minus.any()) and bool(is_zero.any()):
        raise ValueError("codes mix -1 and 0: use either {-1,+1} sign codes or {0,1} bit codes")
    signed = torch.where(is_one, 1, -1).to(device=tensor.device, dtype=torch.int8)
    return _back(signed, was_numpy)
