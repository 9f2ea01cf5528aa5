"""Loss-term ablation of the student objective, written as a markdown table.

    python training/ablation.py --config training/configs/synthetic.yaml --output_dir outputs/ablation

Rows: the base loss L_o alone; L_o plus each auxiliary term on its own (distillation L_t,
adversarial L_ta, contrastive L_c, support set L_ssl); the full objective; and, for scale, the model
before any training. A term is switched off by its config weight (0 = not computed). The teachers
are trained once and shared by every row (`--teachers_path`); each row then trains the student and
the hash head(s) with the same seed. Any other `train.py` flag passes through (e.g. `--hash_bits 64`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from modeling_crcgs.utils import atomic_write_text
from training.arguments import parse_args

AUXILIARY = {
    "distillation": "distillation_weight",
    "adversarial": "adversarial_weight",
    "contrastive": "contrastive_weight",
    "support set": "support_set_weight",
}


def ablation_rows(model_config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row name, model_config) for: base only, base + each term, full (weights from `model_config`)."""
    from modeling_crcgs import CRCGSConfig

    defaults = CRCGSConfig()
    weights = {field: model_config.get(field, getattr(defaults, field)) for field in AUXILIARY.values()}
    off = {field: 0.0 for field in AUXILIARY.values()}
    rows = [("base loss only", {**model_config, **off})]
    for name, field in AUXILIARY.items():
        rows.append((f"base + {name}", {**model_config, **off, field: weights[field]}))
    rows.append(("full objective", {**model_config, **weights}))
    return rows


def untrained_result(argv: list[str], bits: int) -> dict[str, Any]:
    """Evaluation of a freshly initialised model (same config and seed): the chance level of the table."""
    import torch

    from modeling_crcgs import CRCGSForPreTraining
    from modeling_crcgs.retrieval.evaluation import evaluate_retrieval
    from training.data import data_dims, load_splits
    from training.model_setup import build_config

    data_args, model_args, args = parse_args(argv)
    splits = load_splits(data_args)
    config = build_config(model_args.model_config, data_dims(splits["train"]), bits, 1)
    torch.manual_seed(args.seed)
    model = CRCGSForPreTraining(config).eval()
    return evaluate_retrieval(
        model.crcgs,
        splits["query"],
        splits["database"],
        dataset_name=data_args.dataset,
        top_k=args.eval_top_k,
    )


def markdown_table(rows: list[tuple[str, dict[int, dict[str, Any]]]]) -> str:
    bits_list = sorted({b for _, results in rows for b in results})
    header = "| student objective | I2T cont. | T2I cont. | " + " | ".join(
        f"I2T {b}b | T2I {b}b" for b in bits_list
    )
    lines = [header + " |", "|---" * (3 + 2 * len(bits_list)) + "|"]
    for name, results in rows:
        first = results[bits_list[0]]
        cells = [
            name,
            f"{first['continuous']['i2t']['map_all']:.4f}",
            f"{first['continuous']['t2i']['map_all']:.4f}",
        ]
        for b in bits_list:
            cells += [
                f"{results[b]['hamming']['i2t']['map_all']:.4f}",
                f"{results[b]['hamming']['t2i']['map_all']:.4f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> str:
    from training.train import main as train_main

    argv = list(sys.argv[1:] if argv is None else argv)
    data_args, model_args, args = parse_args(argv)
    root = Path(args.output_dir)
    teachers_dir = root / "teachers"
    base = list(argv)
    # 1. Teachers once.
    if not (teachers_dir / "stages" / "teachers" / "done.json").is_file():
        train_main(
            [*base, "--output_dir", str(teachers_dir), "--stages", "teachers", "--overwrite_output_dir"]
        )
    # 2. One student + hash head(s) per row.
    table_rows: list[tuple[str, dict[int, dict[str, Any]]]] = []
    for i, (name, model_config) in enumerate(ablation_rows(model_args.model_config)):
        summary = train_main(
            [
                *base,
                "--output_dir",
                str(root / f"row{i}"),
                "--stages",
                "student",
                "hash",
                "--teachers_path",
                str(teachers_dir),
                "--model_config",
                json.dumps(model_config),
                "--overwrite_output_dir",
            ]
        )
        table_rows.append((name, {int(b): r for b, r in summary["results"].items()}))
    # 3. Chance level: the untrained model.
    table_rows.append(("untrained model", {b: untrained_result(argv, b) for b in model_args.hash_bits}))
    table = markdown_table(table_rows)
    text = (
        f"mAP@all (query vs database) on {data_args.dataset}; cont. = continuous embeddings (cosine), "
        "Nb = N-bit hash codes (Hamming).\n\n" + table + "\n"
    )
    atomic_write_text(root / "ablation.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
