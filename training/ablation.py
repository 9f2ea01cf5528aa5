"""Loss-term ablation of the student objective, written as a markdown table.

    python training/ablation.py --config training/configs/synthetic.yaml --output_dir outputs/ablation
    python training/ablation.py --dataset features --data_dir DIR --hash_bits 32 --ablation_seeds 1 2 3

Rows: the base loss L_o alone; L_o plus each auxiliary term on its own (distillation L_t,
adversarial L_ta, contrastive L_c, support set L_ssl); the full objective; the full objective without
each term (with `--leave_one_out`); and, for scale, the model before any training. A term is switched
off by its config weight (0 = not computed); it is switched on with the config's weight, or with the
release's where the config has it at 0 (as the features recipe does). For each seed of
`--ablation_seeds` (default: the run's `--seed`) the teachers are trained once and shared by every row
(`--teachers_path`); each row then trains the student and the hash head(s). With several seeds every
cell is mean +- std over them. Any other `train.py` flag passes through (e.g. `--hash_bits 64`). Cost:
(rows x seeds) student + hash runs.
"""

from __future__ import annotations

import json
import statistics
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


def ablation_rows(
    model_config: dict[str, Any], leave_one_out: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """(row name, model_config) for: base only, base + each term, full and, with ``leave_one_out``, full
    without each term. A term's weight is `model_config`'s, or the release's (the config default) where
    `model_config` leaves it out or switches it off, so that every row tests its term."""
    from modeling_crcgs import CRCGSConfig

    defaults = CRCGSConfig()
    weights = {field: model_config.get(field) or getattr(defaults, field) for field in AUXILIARY.values()}
    off = {field: 0.0 for field in AUXILIARY.values()}
    rows = [("base loss only", {**model_config, **off})]
    for name, field in AUXILIARY.items():
        rows.append((f"base + {name}", {**model_config, **off, field: weights[field]}))
    rows.append(("full objective", {**model_config, **weights}))
    if leave_one_out:
        rows += [
            (f"full - {name}", {**model_config, **weights, field: 0.0}) for name, field in AUXILIARY.items()
        ]
    return rows


def untrained_result(argv: list[str], bits: int) -> dict[str, Any]:
    """Evaluation of a freshly initialised model (same config and seed): the chance level of the table."""
    import torch

    from modeling_crcgs import CRCGSForPreTraining
    from modeling_crcgs.retrieval.evaluation import evaluate_retrieval
    from training.data import data_dims, load_splits
    from training.model_setup import build_config, fit_input_normalizers

    data_args, model_args, args = parse_args(argv)
    splits = load_splits(data_args)
    config = build_config(model_args.model_config, data_dims(splits["train"]), bits, 1)
    torch.manual_seed(args.seed)
    model = CRCGSForPreTraining(config).eval()
    fit_input_normalizers(model, splits["train"])
    return evaluate_retrieval(
        model.crcgs,
        splits["query"],
        splits["database"],
        dataset_name=data_args.dataset,
        top_k=args.eval_top_k,
    )


def _cell(values: list[float]) -> str:
    """One table cell: the value, or mean +- std over seeds."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"


def markdown_table(rows: list[tuple[str, list[dict[int, dict[str, Any]]]]]) -> str:
    """Rows of (objective, one {bits: eval result} per seed) as a markdown table of mAP@all."""
    bits_list = sorted({b for _, runs in rows for results in runs for b in results})
    header = "| student objective | I2T cont. | T2I cont. | mean cont. | " + " | ".join(
        f"I2T {b}b | T2I {b}b | mean {b}b" for b in bits_list
    )
    lines = [header + " |", "|---" * (4 + 3 * len(bits_list)) + "|"]

    def values(runs: list[dict[int, dict[str, Any]]], bits: int, space: str, direction: str) -> list[float]:
        scores = [results[bits][space] for results in runs]
        if direction == "mean":
            return [(s["i2t"]["map_all"] + s["t2i"]["map_all"]) / 2 for s in scores]
        return [s[direction]["map_all"] for s in scores]

    for name, runs in rows:
        cells = [name] + [_cell(values(runs, bits_list[0], "continuous", d)) for d in ("i2t", "t2i", "mean")]
        for b in bits_list:
            cells += [_cell(values(runs, b, "hamming", d)) for d in ("i2t", "t2i", "mean")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finished_row(row_dir: Path, model_config: dict[str, Any]) -> Optional[dict[int, dict[str, Any]]]:
    """The results of a row that a previous invocation finished with the same objective, else None."""
    summary_file, args_file = row_dir / "run_summary.json", row_dir / "training_args.json"
    if not summary_file.is_file() or not args_file.is_file():
        return None
    if json.loads(args_file.read_text())["model_config"] != model_config:
        return None
    return {int(b): r for b, r in json.loads(summary_file.read_text())["results"].items()}


def _split_own_flags(argv: list[str]) -> tuple[list[int], bool, list[str]]:
    """Take ``--ablation_seeds S...`` and ``--leave_one_out`` out of ``argv``; the rest goes to train.py."""
    import argparse

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--ablation_seeds", type=int, nargs="+", default=None)
    own.add_argument("--leave_one_out", action="store_true")
    known, rest = own.parse_known_args(argv)
    return known.ablation_seeds, known.leave_one_out, rest


def main(argv: Optional[list[str]] = None) -> str:
    from training.train import main as train_main

    seeds, leave_one_out, argv = _split_own_flags(list(sys.argv[1:] if argv is None else argv))
    data_args, model_args, args = parse_args(argv)
    seeds = seeds or [args.seed]
    root = Path(args.output_dir)
    objectives = ablation_rows(model_args.model_config, leave_one_out)
    runs: dict[str, list[dict[int, dict[str, Any]]]] = {name: [] for name, _ in objectives}
    runs["untrained model"] = []
    for seed in seeds:
        seed_root = root / f"seed{seed}"
        base = [*argv, "--seed", str(seed)]
        # 1. Teachers once per seed (under the full objective's config, whose terms use them).
        teachers_dir = seed_root / "teachers"
        if not (teachers_dir / "stages" / "teachers" / "done.json").is_file():
            full = dict(objectives)["full objective"]
            train_main(
                [
                    *base,
                    "--output_dir",
                    str(teachers_dir),
                    "--stages",
                    "teachers",
                    "--model_config",
                    json.dumps(full),
                    "--overwrite_output_dir",
                ]
            )
        # 2. One student + hash head(s) per row.
        for i, (name, model_config) in enumerate(objectives):
            row_dir = seed_root / f"row{i}"
            finished = _finished_row(row_dir, model_config)
            if finished is not None:  # a rerun (e.g. to join seeds run in parallel) reuses finished rows
                runs[name].append(finished)
                continue
            summary = train_main(
                [
                    *base,
                    "--output_dir",
                    str(row_dir),
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
            runs[name].append({int(b): r for b, r in summary["results"].items()})
        # 3. Chance level: the untrained model.
        runs["untrained model"].append({b: untrained_result(base, b) for b in model_args.hash_bits})
    table = markdown_table(list(runs.items()))
    seeds_text = f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"
    text = (
        f"mAP@all (query vs database) on {data_args.dataset}, {seeds_text}; cont. = continuous embeddings "
        "(the common space by cosine, or label posteriors by inner product: the config's retrieval_embedding), "
        "Nb = N-bit hash codes (Hamming).\n\n" + table + "\n"
    )
    atomic_write_text(root / "ablation.md", text)
    print(text)
    return text


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
