"""Suite-wide settings: offline, a private Hugging Face cache, headless plotting, deterministic torch."""

import os
import sys
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="crcgs-hf-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two xdist workers share two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps its process state in class-level singletons: a test that built an Accelerator in the
    pytest process (``training.train.main``) must not hand it to the next test, whose forked
    ``debug_launcher`` children would inherit ``num_processes=1``. Tests then pass in any order."""
    yield
    state = sys.modules.get("accelerate.state")
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)
        state.GradientState._reset_state()
