"""Merge the LoRA adapters of a CRCGS checkpoint into its backbones: a plain checkpoint with the same outputs.

    python training/merge_lora.py --model_dir out/mirflickr25k-64bits --output_dir out/mirflickr25k-64bits-merged

Each LoRA tower's weights become W0 + (alpha / r) B A (Hu et al., ICLR 2022, Eq. 3); the merged checkpoint
says ``*_finetuning="full"``, holds no adapter weights, loads without ``peft`` and keeps the processor files.
The logic is :func:`modeling_crcgs.lora.merge_lora_checkpoint`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from modeling_crcgs.adapters import merge_lora_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class MergeArguments:
    """Command-line arguments of the merge command."""

    model_dir: str = field(metadata={"help": "CRCGS checkpoint folder whose towers use LoRA (config.json)."})
    output_dir: str = field(metadata={"help": "Folder for the merged checkpoint (replaced if it exists)."})

    def __post_init__(self):
        if os.path.abspath(self.model_dir) == os.path.abspath(self.output_dir):
            raise ValueError(f"--output_dir must differ from --model_dir, got {self.output_dir!r} for both")


def main(argv: Optional[list[str]] = None) -> str:
    """Parse the arguments, merge, and return the merged checkpoint's folder."""
    (args,) = HfArgumentParser(MergeArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output = merge_lora_checkpoint(args.model_dir, args.output_dir)
    logger.info("merged %s into %s", args.model_dir, output)
    return output


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
