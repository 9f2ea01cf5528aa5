"""CRCGS (SIGIR 2022) as a Hugging Face ``transformers`` model: config, networks, losses, hashing utilities.

Importing the package registers ``model_type="crcgs"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForPreTraining``.
"""

from .configuration_crcgs import CRCGSConfig
from .hashing import num_packed_bytes, pack_codes, to_signed_codes, unpack_codes
from .modeling_crcgs import (
    CRCGSForPreTraining,
    CRCGSModel,
    CRCGSModelOutput,
    CRCGSPreTrainedModel,
    CRCGSPreTrainingOutput,
)
from .processing_crcgs import CRCGSProcessor

__all__ = [
    "CRCGSConfig",
    "CRCGSForPreTraining",
    "CRCGSModel",
    "CRCGSModelOutput",
    "CRCGSPreTrainedModel",
    "CRCGSPreTrainingOutput",
    "CRCGSProcessor",
    "num_packed_bytes",
    "pack_codes",
    "to_signed_codes",
    "unpack_codes",
]
