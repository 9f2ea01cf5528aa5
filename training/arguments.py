"""Command-line and config-file arguments of `training/train.py`.

Three dataclasses parsed by `transformers.HfArgumentParser` (the `run_clip.py` pattern). A YAML or
JSON file given with `--config` supplies defaults; flags given after it override the file. Every value
is validated in `__post_init__` and a bad one raises `ValueError` naming the argument, what was
expected and what came.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from modeling_crcgs.configuration_crcgs import check_known_config_keys

# The trainer's units, in order (the model's forward stages are modeling_crcgs.modeling_crcgs.FORWARD_STAGES).
TRAINING_STAGES = ("teachers", "student", "hash")
# Shipped settings picked when --dataset names one of these and no --config is given.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIGS = ("mirflickr25k", "nus_wide", "mscoco", "features")
TRACKERS = ("jsonl", "tensorboard", "wandb")


def _as_mapping(name: str, value: Any) -> dict[str, Any]:
    """Accept a mapping (from a config file) or a JSON object string (from a flag)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"--{name}: expected a JSON object, got {value!r} ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"--{name}: expected a mapping of option -> value, got {type(value).__name__}")
    return dict(value)


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"--{name}: expected a finite number {bound}, got {value!r}")


def _check_betas(name: str, betas: list[float]) -> None:
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"--{name}: expected two Adam betas in [0, 1), got {betas!r}")


_GLOBAL_BATCH_HELP = (
    "GLOBAL, as the release's DataParallel batch: split evenly over the processes (a multiple of their "
    "number), and the batch-level losses see all of it."
)


@dataclass
class DataArguments:
    """Which data to train on."""

    dataset: str = field(
        default="features",
        metadata={
            "help": "A `dataset_scripts.load_crcgs_dataset` name: mirflickr25k, nus_wide, mscoco, features "
            "(your own feature files in --data_dir) or synthetic (embedded, no files needed)."
        },
    )
    data_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder with the dataset's files (not needed for synthetic)."}
    )
    dataset_options: Optional[str] = field(
        default=None,
        metadata={
            "help": "Extra builder options passed to load_crcgs_dataset, as a JSON object "
            "(e.g. '{\"num_samples\": 1000}'); a mapping in a config file."
        },
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache folder."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    bow_min_count: int = field(
        default=1,
        metadata={
            "help": "Raw text towers on a dataset without text_features: the teachers' bag of words keeps "
            "the words of at least this many training texts (MIRFLICKR-25K's tags: 20)."
        },
    )
    bow_max_size: Optional[int] = field(
        default=None, metadata={"help": "Keep at most this many (most frequent) bag-of-words words."}
    )

    def __post_init__(self) -> None:
        names = ("mirflickr25k", "nus_wide", "mscoco", "features", "synthetic")
        if self.dataset not in names:
            raise ValueError(f"--dataset: expected one of {', '.join(names)}, got {self.dataset!r}")
        if self.dataset == "features" and not self.data_dir:
            raise ValueError("--data_dir: the 'features' dataset needs the folder holding your feature files")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir: expected an existing folder, got {self.data_dir!r}")
        self.dataset_options = _as_mapping("dataset_options", self.dataset_options)
        _check_positive("dataloader_num_workers", self.dataloader_num_workers, allow_zero=True)
        _check_positive("bow_min_count", self.bow_min_count)
        if self.bow_max_size is not None:
            _check_positive("bow_max_size", self.bow_max_size)


@dataclass
class ModelArguments:
    """What to build: the hash lengths and any `CRCGSConfig` value (widths, loss weights, temperatures)."""

    hash_bits: list[int] = field(
        default_factory=lambda: [64],
        metadata={"help": "Hash code lengths; one hash head and one model folder per length."},
    )
    model_config: Optional[str] = field(
        default=None,
        metadata={
            "help": "CRCGSConfig values as a JSON object (a mapping in a config file), e.g. loss weights "
            "and temperatures; a weight of 0 switches its loss term off. Dims come from the data. On the "
            "command line it updates the config file's mapping key by key."
        },
    )
    teachers_path: Optional[str] = field(
        default=None,
        metadata={"help": "Load the teachers from a previous run (a model folder or its teachers/ folder)."},
    )
    student_path: Optional[str] = field(
        default=None,
        metadata={"help": "Load the student from a previous run's model folder (config.json + safetensors)."},
    )

    def __post_init__(self) -> None:
        if not self.hash_bits or any(int(k) <= 0 for k in self.hash_bits):
            raise ValueError(
                f"--hash_bits: expected one or more positive code lengths, got {self.hash_bits!r}"
            )
        if len(set(self.hash_bits)) != len(self.hash_bits):
            raise ValueError(f"--hash_bits: expected distinct lengths, got {self.hash_bits!r}")
        self.hash_bits = [int(k) for k in self.hash_bits]
        self.model_config = _as_mapping("model_config", self.model_config)
        self.check_model_config()
        for name in ("teachers_path", "student_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_dir():
                raise ValueError(f"--{name}: expected an existing folder, got {path!r}")

    def check_model_config(self) -> None:
        """Refuse unknown `CRCGSConfig` fields (naming the closest) and the fields the data sets."""
        try:
            check_known_config_keys(self.model_config)
        except ValueError as err:
            raise ValueError(f"--model_config: {err}") from None
        for key in ("image_input_dim", "text_input_dim", "num_labels", "hash_bits"):
            if key in self.model_config:
                raise ValueError(
                    f"--model_config: {key!r} is set from the data / --hash_bits, remove it from model_config"
                )


@dataclass
class CRCGSTrainingArguments:
    """How to train: the three stages, Accelerate, checkpointing, logging and publishing."""

    config: Optional[str] = field(
        default=None,
        metadata={
            "help": "A YAML or JSON file of arguments (flags override it). Default: the shipped settings of "
            "--dataset mirflickr25k|nus_wide|mscoco|features (training/configs/), none for synthetic."
        },
    )
    output_dir: str = field(default="outputs", metadata={"help": "Where the run writes everything."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing over an output_dir that holds a finished model."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    stages: list[str] = field(
        default_factory=lambda: list(TRAINING_STAGES),
        metadata={"help": "Stages to run, in order: teachers student hash. Skipped ones load from a path."},
    )
    # Stage 1: teachers (the release ships no teacher training; L1 reconstruction + Adam, docs/METHOD.md).
    teacher_epochs: int = field(default=20, metadata={"help": "Teacher epochs."})
    teacher_batch_size: int = field(
        default=80,
        metadata={"help": f"Teacher batch size. {_GLOBAL_BATCH_HELP}"},
    )
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Teacher Adam learning rate."})
    teacher_adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    teacher_lr_patience: int = field(
        default=2, metadata={"help": "Halve the teacher lr after this many epochs without a better val loss."}
    )
    # Stage 2: student (docs/METHOD.md "Student losses").
    student_epochs: int = field(default=20, metadata={"help": "Student epochs (release: MIRFLICKR 20)."})
    student_batch_size: int = field(
        default=80,
        metadata={"help": f"Student batch size. {_GLOBAL_BATCH_HELP}"},
    )
    student_learning_rate: float = field(default=1e-4, metadata={"help": "Student Adam learning rate."})
    student_adam_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    discriminator_learning_rate: float = field(default=1e-4, metadata={"help": "Discriminator Adam lr."})
    discriminator_adam_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    student_lr_patience: Optional[int] = field(
        default=None,
        metadata={"help": "Halve the student lr on a val-mAP plateau of this many epochs (MS-COCO: 5)."},
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={
            "help": "Student and hash stages: stop after this many epochs without a better validation mAP "
            "(the best epoch is kept either way). Default: train every epoch, as the release."
        },
    )
    student_ema_decay: Optional[float] = field(
        default=None,
        metadata={
            "help": "Validate, keep and save an exponential moving average of the student's weights, "
            "updated after every step with this decay in (0, 1) (recipe for own features: 0.99). "
            "Default: the weights as trained, as the release."
        },
    )
    refit_student: bool = field(
        default=False,
        metadata={
            "help": "Once the student has its best epoch on the validation split, train it again from the same "
            "initial weights on train + validation for that many epochs and keep the last epoch: the "
            "validation pairs become training data (recipe for own features: true). Twice the student's "
            "training time; the refit has no plateau lr schedule. The hash heads train on the refit student."
        },
    )
    # Stage 3: hash heads (docs/METHOD.md "Hash-head losses").
    hash_epochs: int = field(default=30, metadata={"help": "Hash-head epochs (release: MIRFLICKR 30)."})
    hash_batch_size: int = field(
        default=100,
        metadata={"help": f"Hash-head batch size. {_GLOBAL_BATCH_HELP}"},
    )
    hash_learning_rate: float = field(default=1e-4, metadata={"help": "Hash-head Adam learning rate."})
    hash_adam_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    cache_student_embeddings: bool = field(
        default=True,
        metadata={
            "help": "Encode the training set once with the frozen student and train the hash head from "
            "the cached embeddings (false: recompute the student every epoch, as the release does)."
        },
    )
    min_learning_rate: float = field(default=1e-6, metadata={"help": "Floor of the plateau lr halving."})
    # Accelerate.
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per update."})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata={"help": "no|fp16|bf16"})
    checkpointing_steps: Optional[int] = field(
        default=None, metadata={"help": "Also save the state every N optimizer steps (always at epoch end)."}
    )
    checkpoints_total_limit: Optional[int] = field(
        default=2, metadata={"help": "Keep at most this many checkpoints (oldest removed first)."}
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "'latest' (in output_dir/checkpoints) or a checkpoint folder."}
    )
    eval_batch_size: int = field(
        default=256, metadata={"help": "Batch size per process for encoding at evaluation."}
    )
    eval_top_k: Optional[int] = field(
        default=None, metadata={"help": "k of mAP@k in the final evaluation (default: number of queries)."}
    )
    # Logging and publishing.
    report_to: list[str] = field(
        default_factory=lambda: ["jsonl"],
        metadata={"help": "Trackers: jsonl (always on), tensorboard, wandb (when installed)."},
    )
    logging_steps: int = field(default=1, metadata={"help": "Log the per-term losses every N steps."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload each model folder to the Hub."})
    hub_model_id: Optional[str] = field(
        default=None, metadata={"help": "org/name; with several hash lengths '-<bits>bits' is appended."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_private_repo: Optional[bool] = field(
        default=None, metadata={"help": "As in transformers' TrainingArguments: same as --hub_private."}
    )
    hub_token: Optional[str] = field(
        default=None,
        metadata={"help": "Hub token for --push_to_hub (default: the HF_TOKEN variable or `hf auth login`)."},
    )
    # transformers' TrainingArguments names: defaults for every stage that its own flag overrides.
    num_train_epochs: Optional[int] = field(
        default=None,
        metadata={
            "help": "Epochs of every stage whose --<stage>_epochs flag is not given on the command line."
        },
    )
    per_device_train_batch_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "Batch size PER DEVICE of every stage whose --<stage>_batch_size flag is not given: the "
            "stage's global batch is this times the number of processes."
        },
    )
    learning_rate: Optional[float] = field(
        default=None,
        metadata={
            "help": "Adam learning rate of every stage (and the discriminators) whose --<stage>_learning_rate "
            "flag is not given on the command line."
        },
    )
    save_total_limit: Optional[int] = field(
        default=None,
        metadata={"help": "As in transformers' TrainingArguments: same as --checkpoints_total_limit."},
    )

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in TRAINING_STAGES]
        if unknown or not self.stages:
            raise ValueError(
                f"--stages: expected a non-empty subset of {TRAINING_STAGES}, got {self.stages!r}"
            )
        if list(self.stages) != [s for s in TRAINING_STAGES if s in self.stages]:
            raise ValueError(
                f"--stages: expected the stages in the order {TRAINING_STAGES}, got {self.stages!r}"
            )
        for name in (
            "teacher_epochs",
            "student_epochs",
            "hash_epochs",
            "teacher_batch_size",
            "student_batch_size",
            "hash_batch_size",
            "eval_batch_size",
            "teacher_learning_rate",
            "student_learning_rate",
            "discriminator_learning_rate",
            "hash_learning_rate",
            "gradient_accumulation_steps",
            "logging_steps",
        ):
            _check_positive(name, getattr(self, name))
        _check_positive("min_learning_rate", self.min_learning_rate, allow_zero=True)
        _check_positive("teacher_lr_patience", self.teacher_lr_patience, allow_zero=True)
        for name in (
            "student_lr_patience",
            "early_stopping_patience",
            "checkpointing_steps",
            "checkpoints_total_limit",
            "eval_top_k",
            "num_train_epochs",
            "per_device_train_batch_size",
            "learning_rate",
            "save_total_limit",
        ):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        for name in (
            "teacher_adam_betas",
            "student_adam_betas",
            "discriminator_adam_betas",
            "hash_adam_betas",
        ):
            _check_betas(name, list(getattr(self, name)))
        decay = self.student_ema_decay
        if decay is not None and (
            isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1
        ):
            raise ValueError(f"--student_ema_decay: expected a number in (0, 1), got {decay!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision: expected no, fp16 or bf16, got {self.mixed_precision!r}")
        bad = [t for t in self.report_to if t not in TRACKERS + ("all", "none")]
        if bad:
            raise ValueError(
                f"--report_to: expected trackers among {TRACKERS + ('all', 'none')}, got {bad!r}"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--hub_model_id: --push_to_hub needs the repository id, e.g. my-org/crcgs-mir")
        if self.hub_model_id is not None and self.hub_model_id.count("/") != 1:
            raise ValueError(f"--hub_model_id: expected 'org/name', got {self.hub_model_id!r}")


ARGUMENT_CLASSES = (DataArguments, ModelArguments, CRCGSTrainingArguments)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON (.json) config file into a flat mapping of argument -> value."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: expected an existing .yaml/.yml/.json file, got {str(path)!r}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(
                f"--config: {path}{where}: not valid YAML ({getattr(err, 'problem', err)})"
            ) from None
    elif path.suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as err:
            raise ValueError(f"--config: {path}: not valid JSON ({err})") from None
    else:
        raise ValueError(f"--config: expected a .yaml, .yml or .json file, got {path.name!r}")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"--config: {path} must hold a mapping of argument -> value, got {type(values).__name__}"
        )
    known = {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config: {path} has unknown argument(s) {unknown}; see `train.py --help`")
    return values


def default_config_file(dataset: Optional[str]) -> Optional[Path]:
    """The shipped settings of a dataset (``training/configs/<dataset>.yaml``), used when no --config is given."""
    return CONFIG_DIR / f"{dataset}.yaml" if dataset in DEFAULT_CONFIGS else None


def parse_args(
    argv: Optional[list[str]] = None,
) -> tuple[DataArguments, ModelArguments, CRCGSTrainingArguments]:
    """Parse `--config FILE` and flags; flags override the file's values (`--model_config` and
    `--dataset_options` key by key: :func:`merge_mapping_flags`).

    Without `--config`, `--dataset mirflickr25k|nus_wide|mscoco|features` takes that dataset's shipped file
    (`training/configs/<dataset>.yaml`: the release's settings, or the recipe for your own features); the file
    used is recorded as `config`."""
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--dataset", default=None)
    known, _ = pre.parse_known_args(argv)
    config_file = known.config or default_config_file(known.dataset)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    file_values = load_config_file(config_file) if config_file is not None else {}
    if config_file is not None:
        parser.set_defaults(**file_values, config=str(config_file))
    outputs = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    data_args, model_args, train_args = outputs[:3]
    command_line = sys.argv[1:] if argv is None else argv
    merge_mapping_flags(file_values, data_args, model_args, command_line)
    apply_transformers_aliases(train_args, command_line)
    check_stage_sources(model_args, train_args)
    return data_args, model_args, train_args


STAGE_ALIASES = {
    "num_train_epochs": ("teacher_epochs", "student_epochs", "hash_epochs"),
    "per_device_train_batch_size": ("teacher_batch_size", "student_batch_size", "hash_batch_size"),
    "learning_rate": (
        "teacher_learning_rate",
        "student_learning_rate",
        "discriminator_learning_rate",
        "hash_learning_rate",
    ),
}


def _flags_given(argv: list[str]) -> set[str]:
    """Names of the ``--flag`` / ``--flag=value`` arguments on the command line."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def merge_mapping_flags(
    file_values: dict[str, Any], data_args: DataArguments, model_args: ModelArguments, argv: list[str]
) -> None:
    """`--model_config` / `--dataset_options` on the command line update the config file's mapping key by
    key, in place: `--model_config '{"contrastive_weight": 0.03}'` keeps every other value of the recipe
    (a whole mapping flag replacing the file's would silently drop them all)."""
    given = _flags_given(argv)
    for args, name in ((data_args, "dataset_options"), (model_args, "model_config")):
        if name in given and file_values.get(name) is not None:
            setattr(args, name, {**_as_mapping(name, file_values[name]), **getattr(args, name)})
            if name == "model_config":
                model_args.check_model_config()


def apply_transformers_aliases(args: CRCGSTrainingArguments, argv: list[str]) -> None:
    """Resolve transformers' TrainingArguments names onto the per-stage fields, in place.

    ``--num_train_epochs``, ``--per_device_train_batch_size`` and ``--learning_rate`` set every stage field
    that was not given as its own flag on the command line (a config file's per-stage values yield to them);
    the per-device batch becomes the global one: times ``WORLD_SIZE`` (the number of processes that
    ``accelerate launch`` starts). ``--hub_private_repo`` and ``--save_total_limit`` replace
    ``--hub_private`` and ``--checkpoints_total_limit``.
    """
    given = _flags_given(argv)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    for alias, fields in STAGE_ALIASES.items():
        value = getattr(args, alias)
        if value is None:
            continue
        if alias == "per_device_train_batch_size":
            value = value * processes
        for name in fields:
            if name not in given:
                setattr(args, name, value)
    if args.hub_private_repo is not None:
        args.hub_private = args.hub_private_repo
    if args.save_total_limit is not None:
        args.checkpoints_total_limit = args.save_total_limit


def student_uses_teachers(model_config: dict[str, Any]) -> bool:
    """``CRCGSConfig.student_uses_teachers`` of the config that ``model_config`` will build (a weight it leaves
    out takes the config default)."""
    from modeling_crcgs.configuration_crcgs import TEACHER_TERM_WEIGHTS, CRCGSConfig

    weights = {name: model_config[name] for name in TEACHER_TERM_WEIGHTS if name in model_config}
    return CRCGSConfig(**weights).student_uses_teachers


def check_stage_sources(model_args: ModelArguments, train_args: CRCGSTrainingArguments) -> None:
    """A stage that is run needs the earlier ones: trained in this run or loaded from a path. The student
    needs teachers only when one of its terms uses them (``student_uses_teachers``)."""
    stages = train_args.stages
    if (
        "student" in stages
        and "teachers" not in stages
        and not model_args.teachers_path
        and student_uses_teachers(model_args.model_config)
    ):
        raise ValueError(
            "--teachers_path: --stages without 'teachers' needs the teachers of a previous run (the "
            "distillation, adversarial or contrastive weight is > 0)"
        )
    if "hash" in stages and "student" not in stages and not model_args.student_path:
        raise ValueError("--student_path: --stages without 'student' needs the student of a previous run")


def resolved_arguments(*groups: Any) -> dict[str, Any]:
    """All arguments after parsing and validation, as one JSON-ready mapping (training_args.json); the Hub
    token is left out (a secret in a file that is uploaded with the model)."""
    resolved: dict[str, Any] = {}
    for group in groups:
        resolved.update(dataclasses.asdict(group))
    resolved.pop("hub_token", None)
    return resolved
