"""Quality on real data: the default recipe for your own features against linear CCA, by cross-validation.

    python -m benchmarks.bench_real_data                       # the development data, 5 folds
    python -m benchmarks.bench_real_data --data_dir DIR --folds 5 --hash_bits 32 64

Data: a `features` folder (image_features.npy, text_features.npy, labels.npy); by default the Wikipedia
image-text training pairs beside the repository (`../shared/data/wikipedia-train`: 2,173 pairs, 128-d SIFT
bag-of-visual-words, 10-d LDA topics, 10 classes). The script skips with a clear message when they are absent.

Protocol (the dataset's classic one): stratified K-fold cross-validation of the pairs (seeded). For fold k,
query = database = fold k; the other folds are the training data, of which a stratified 15% is the validation
split used for early stopping. Each fold runs `training/train.py --dataset features --data_dir FOLD` exactly as
a user would (no --config: the shipped recipe `training/configs/features.yaml`), then reads the model's and
the CCA baseline's mAP@all from the model folders' eval_results.json. Printed: per fold and mean +- std, model
vs CCA (continuous and each code length), I2T / T2I / mean, the margin over CCA, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "wikipedia-train"
VALIDATION_SHARE = 0.15


def stratified_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold id of every row: within each class (first label of a row), rows are shuffled and dealt out."""
    classes = labels.argmax(1)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(classes):
        rows = rng.permutation(np.flatnonzero(classes == c))
        folds[rows] = np.arange(len(rows)) % num_folds
    return folds


def fold_splits(labels: np.ndarray, folds: np.ndarray, fold: int, seed: int) -> dict[str, list[int]]:
    """splits.json of one fold: query = database = the fold; validation = a stratified share of the rest."""
    test = np.flatnonzero(folds == fold)
    rest = np.flatnonzero(folds != fold)
    rng = np.random.default_rng(seed + 1000 + fold)
    classes = labels[rest].argmax(1)
    validation = np.concatenate(
        [
            rng.permutation(rest[classes == c])[: round(VALIDATION_SHARE * int((classes == c).sum()))]
            for c in np.unique(classes)
        ]
    )
    train = np.setdiff1d(rest, validation)
    return {
        "train": train.tolist(),
        "validation": np.sort(validation).tolist(),
        "query": test.tolist(),
        "database": test.tolist(),
    }


def multi_hot(labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 1:
        return np.eye(int(labels.max()) + 1, dtype=np.int8)[labels]
    return labels.astype(np.int8)


def run_fold(data_dir: Path, splits: dict, bits: list[int], work: Path, extra: list[str]) -> dict:
    """Train and evaluate one fold through the documented command; return the eval results per length."""
    fold_dir = work / "data"
    fold_dir.mkdir(parents=True)
    for name in ("image_features.npy", "text_features.npy", "labels.npy", "label_names.json"):
        if (data_dir / name).is_file():
            os.symlink(data_dir / name, fold_dir / name)
    (fold_dir / "splits.json").write_text(json.dumps(splits))
    output_dir = work / "run"
    command = [
        sys.executable,
        str(REPO_ROOT / "training" / "train.py"),
        "--dataset",
        "features",
        "--data_dir",
        str(fold_dir),
        "--cache_dir",
        str(work / "cache"),
        "--output_dir",
        str(output_dir),
        "--hash_bits",
        *map(str, bits),
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env.setdefault(
        "OMP_NUM_THREADS", "1"
    )  # small networks: one thread per run is fastest, and folds stay comparable
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"training failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    summary = json.loads((output_dir / "run_summary.json").read_text())
    return {
        int(b): json.loads((Path(f) / "eval_results.json").read_text())
        for b, f in summary["model_folders"].items()
    }


def scores(result: dict, space: str) -> tuple[float, float, float]:
    i2t, t2i = result[space]["i2t"]["map_all"], result[space]["t2i"]["map_all"]
    return i2t, t2i, (i2t + t2i) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and validation shares")
    parser.add_argument("--hash_bits", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--only_folds", type=int, nargs="*", default=None)
    parser.add_argument("train_args", nargs="*", help="extra train.py flags (after --)")
    args = parser.parse_args()
    if not (args.data_dir / "image_features.npy").is_file():
        print(
            f"SKIPPED: no development data at {args.data_dir} (image_features.npy, text_features.npy, labels.npy)"
        )
        return
    labels = multi_hot(np.load(args.data_dir / "labels.npy", allow_pickle=False))
    folds = stratified_folds(labels, args.folds, args.seed)
    rows = []
    started = time.perf_counter()
    for fold in args.only_folds if args.only_folds is not None else range(args.folds):
        fold_started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"crcgs-fold{fold}-") as work:
            results = run_fold(
                args.data_dir,
                fold_splits(labels, folds, fold, args.seed),
                args.hash_bits,
                Path(work),
                args.train_args,
            )
        first = results[args.hash_bits[0]]
        row = {
            "fold": fold,
            "seconds": time.perf_counter() - fold_started,
            "model continuous": scores(first, "continuous"),
            "CCA continuous": scores(first["baselines"]["cca"], "continuous"),
        }
        for bits in args.hash_bits:
            row[f"model {bits}-bit"] = scores(results[bits], "hamming")
            row[f"CCA {bits}-bit"] = scores(results[bits]["baselines"]["cca"], "hamming")
        rows.append(row)
        print(
            f"fold {fold}: "
            + ", ".join(f"{k} {v[2]:.4f}" for k, v in row.items() if isinstance(v, tuple))
            + f" ({row['seconds']:.0f} s)",
            flush=True,
        )
    keys = [k for k in rows[0] if isinstance(rows[0][k], tuple)]
    print(
        f"\n{args.data_dir.name}: {len(rows)} folds, classic protocol (query = database = held-out fold), "
        "mAP@all\n"
    )
    print("| ranking | I2T | T2I | mean | per fold (mean of I2T and T2I) |")
    print("|---|---|---|---|---|")
    for key in keys:
        values = np.array([row[key] for row in rows])
        mean, std = values.mean(0), values.std(0)
        folds_text = " ".join(f"{v:.4f}" for v in values[:, 2])
        print(
            f"| {key} | {mean[0]:.4f} ± {std[0]:.4f} | {mean[1]:.4f} ± {std[1]:.4f} | "
            f"{mean[2]:.4f} ± {std[2]:.4f} | {folds_text} |"
        )
    print("\nmargin over CCA (model - CCA, mean of I2T and T2I), per fold:")
    for space in ["continuous", *(f"{b}-bit" for b in args.hash_bits)]:
        margins = np.array([row[f"model {space}"][2] - row[f"CCA {space}"][2] for row in rows])
        print(
            f"  {space}: min {margins.min():+.4f}, mean {margins.mean():+.4f}; "
            + " ".join(f"{m:+.4f}" for m in margins)
        )
    total = time.perf_counter() - started
    print(f"\nwall time: {total:.0f} s ({total / len(rows):.0f} s per fold, train + evaluation)")


if __name__ == "__main__":
    main()
