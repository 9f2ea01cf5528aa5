"""CRCGS (SIGIR 2022) as a Hugging Face ``transformers`` model: config, networks, losses, hashing utilities."""

from .hashing import num_packed_bytes, pack_codes, to_signed_codes, unpack_codes

__all__ = ["num_packed_bytes", "pack_codes", "to_signed_codes", "unpack_codes"]
