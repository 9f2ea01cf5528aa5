"""Evaluate a saved CRCGS model on a dataset's query/database splits and write the evaluation report.

    python evaluation/run_evaluation.py --model_dir outputs/synthetic-64bits --dataset synthetic
    python evaluation/run_evaluation.py --model_dir outputs/mirflickr25k-64bits --dataset mirflickr25k \\
        --data_dir /data/mirflickr --output_dir reports/flickr-64 --batch_size 512 --top_k 2000
    accelerate launch evaluation/run_evaluation.py --model_dir ... --dataset ...   # encoding sharded over processes

Writes ``eval_results.json``, ``eval_summary.md``, ``pr_curve.png`` and ``precision_at_k.png`` as one set
(all written into a temporary folder first, then renamed into place) to ``--output_dir`` (default:
``<model_dir>/evaluation/<dataset>/``, so the training's own evaluation in the model folder stays as it is);
see ``modeling_crcgs.retrieval.evaluation``. Arguments may also come
from one ``.json``/``.yaml`` file: ``python evaluation/run_evaluation.py args.yaml``.

A model with backbone towers (raw images/captions) reads the splits' ``image``/``text`` columns
through the ``CRCGSProcessor`` saved in its folder, exactly as ``training/train.py`` evaluates it
(``modeling_crcgs.retrieval.evaluation.feature_level_view``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from evaluation.encode_dataset import DatasetArguments, load_model_and_processor, load_split

logger = logging.getLogger("crcgs.evaluate")


@dataclass
class EvaluationArguments:
    """Which model to evaluate and where to write the report."""

    model_dir: str = field(metadata={"help": "A saved CRCGSModel folder (config.json + model.safetensors)."})
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder for the report (default: <model_dir>/evaluation/<dataset>)."}
    )
    batch_size: int = field(default=256, metadata={"help": "Rows per forward pass on each process."})
    top_k: Optional[int] = field(
        default=None, metadata={"help": "k of mAP@k (default: the number of queries, as in the paper)."}
    )

    def __post_init__(self) -> None:
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ValueError(f"--model_dir: expected a folder with config.json, got {self.model_dir!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"--batch_size: expected a positive integer, got {self.batch_size!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top_k: expected a positive integer, got {self.top_k!r}")


def parse_arguments(argv: Optional[list[str]] = None) -> tuple[DatasetArguments, EvaluationArguments]:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((DatasetArguments, EvaluationArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    data_args, args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return data_args, args


def dataset_of_run(data_args: DatasetArguments, model_dir: str) -> DatasetArguments:
    """The dataset the model was trained on, from ``<model_dir>/training_args.json`` when it is there.

    Given flags win: the run's ``dataset``, ``data_dir`` and ``dataset_options`` fill only what was not
    given, and the run's ``data_dir`` / ``dataset_options`` apply only when the dataset is the run's (the
    same splits as at training time, e.g. the synthetic job's ``num_train``)."""
    import json

    record_file = Path(model_dir) / "training_args.json"
    if not record_file.is_file():
        return data_args
    try:
        record = json.loads(record_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{record_file}: not valid JSON ({err})") from err
    dataset = data_args.dataset or record.get("dataset")
    if dataset != record.get("dataset"):
        return data_args
    data_dir = data_args.data_dir or record.get("data_dir")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"{record_file}: the run's data_dir {data_dir!r} is not a folder; pass --data_dir")
    return DatasetArguments(
        dataset=dataset,
        data_dir=data_dir,
        dataset_options=data_args.dataset_options or record.get("dataset_options") or {},
        cache_dir=data_args.cache_dir,
    )


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the evaluation; returns the result dict (the content of ``eval_results.json``)."""
    from accelerate import Accelerator

    from modeling_crcgs.retrieval.evaluation import (
        REPORT_FILES,
        evaluate_retrieval,
        ranking_name,
        write_evaluation_report,
    )
    from modeling_crcgs.utils import move_into

    # 1. arguments
    data_args, args = parse_arguments(argv)
    data_args = dataset_of_run(data_args, args.model_dir)
    if data_args.dataset is None:
        raise ValueError(
            "--dataset: required (a load_crcgs_dataset name, e.g. synthetic) when --model_dir has no "
            "training_args.json"
        )
    output_dir = Path(args.output_dir or Path(args.model_dir) / "evaluation" / data_args.dataset)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")

    # 2. processes and logging
    accelerator = Accelerator()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)

    # 3. data: the main process prepares the Arrow cache first, the others then read it
    with accelerator.main_process_first():
        query_split = load_split(data_args, "query")
        database_split = load_split(data_args, "database")
        train_split = load_split(data_args, "train")  # for the linear CCA baseline

    # 4. model, and its processor when it has backbone towers (raw images/texts)
    model, processor = load_model_and_processor(args.model_dir, accelerator.device)
    backbones = [name for name in ("vision_config", "text_config") if getattr(model.config, name) is not None]
    if backbones and processor is None:
        raise ValueError(
            f"--model_dir: the model has backbone towers ({', '.join(backbones)}), which read raw images/texts "
            f"through the CRCGSProcessor saved with it, but {args.model_dir!r} holds no processor_config.json"
        )

    # 5. evaluate (encoding sharded over the processes; every process gets the same result); backbone
    # towers run once per item first (modeling_crcgs.retrieval.evaluation.feature_level_view, as in training)
    result = evaluate_retrieval(
        model,
        query_split,
        database_split,
        dataset_name=data_args.dataset,
        top_k=args.top_k,
        batch_size=args.batch_size,
        accelerator=accelerator,
        processor=processor,
        train_split=train_split,
    )

    # 6. report
    if accelerator.is_main_process:
        # the whole set is written into a temporary folder, then renamed into place file by file: a
        # failure while writing leaves the previous report as it was
        move_into(lambda tmp: write_evaluation_report(result, tmp), output_dir)
        paths = [output_dir / name for name in REPORT_FILES]
        for space, name in (("hamming", "hamming"), ("continuous", f"continuous ({ranking_name(result)})")):
            for direction in ("i2t", "t2i"):
                scores = result[space][direction]
                logger.info(
                    "%s %s: mAP@all %.4f, mAP@%d %.4f",
                    name,
                    direction,
                    scores["map_all"],
                    scores["k"],
                    scores["map_at_k"],
                )
        logger.info("wrote %s", ", ".join(str(p) for p in paths))
    accelerator.wait_for_everyone()
    return result


if __name__ == "__main__":
    from modeling_crcgs.utils import run_command

    run_command(main)
