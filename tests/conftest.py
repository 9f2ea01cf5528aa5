"""Suite-wide settings: offline, a private Hugging Face cache, headless plotting, deterministic torch."""

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="crcgs-hf-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Two xdist workers share two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)
