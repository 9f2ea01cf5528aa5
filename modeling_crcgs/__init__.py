"""CRCGS (SIGIR 2022) as a Hugging Face ``transformers`` model: config, networks, losses, hashing utilities.

Layout: ``configuration_crcgs`` (the config), ``networks`` (building blocks), ``modeling_crcgs`` (the model
classes), ``losses`` (term functions and the ``CRCGSStudentLoss`` / ``CRCGSHashLoss`` modules),
``backbones`` / ``lora`` / ``adapters`` (raw-input towers), ``processing_crcgs``, ``hashing``, ``utils``;
retrieval (metrics, encoding, evaluator, index) lives in the ``modeling_crcgs.retrieval`` subpackage.

Importing the package registers ``model_type="crcgs"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForPreTraining``.
"""

from .configuration_crcgs import CRCGSConfig
from .hashing import num_packed_bytes, pack_codes, to_signed_codes, unpack_codes
from .losses import CRCGSHashLoss, CRCGSStudentLoss
from .modeling_crcgs import CRCGSForPreTraining, CRCGSModel, CRCGSPreTrainedModel
from .modeling_outputs import CRCGSModelOutput, CRCGSPreTrainingOutput
from .processing_crcgs import CRCGSProcessor

__all__ = [
    "CRCGSConfig",
    "CRCGSForPreTraining",
    "CRCGSHashLoss",
    "CRCGSModel",
    "CRCGSModelOutput",
    "CRCGSPreTrainedModel",
    "CRCGSPreTrainingOutput",
    "CRCGSProcessor",
    "CRCGSStudentLoss",
    "num_packed_bytes",
    "pack_codes",
    "to_signed_codes",
    "unpack_codes",
]
