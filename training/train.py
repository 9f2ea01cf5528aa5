"""Train CRCGS end to end with Accelerate: teachers, student, one hash head per code length.

    accelerate launch training/train.py --config training/configs/synthetic.yaml
    accelerate launch training/train.py --dataset features --data_dir my_features/ --hash_bits 32 64
    accelerate launch training/train.py --config training/configs/mirflickr25k.yaml --data_dir data/mir \
        --resume_from_checkpoint latest

Writes one model folder per code length (`<output_dir>/<dataset>-<bits>bits/`, layout in
docs/DESIGN.md), checkpoints under `<output_dir>/checkpoints/`, per-stage best weights under
`<output_dir>/stages/`, logs and the loss curves under `<output_dir>/logs/`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed

from dataset_scripts import label_names
from modeling_crcgs import CRCGSForPreTraining, CRCGSProcessor
from modeling_crcgs.utils import atomic_write_text, run_command
from training.arguments import parse_args, resolved_arguments
from training.checkpointing import (
    STATE_NAME,
    CheckpointManager,
    StageStore,
    TrainerState,
)
from training.console import get_logger, quiet_library_bars
from training.data import FEATURE_COLUMNS, data_dims, load_splits
from training.fingerprint import fingerprint_differences, run_fingerprint
from training.logging_utils import LOG_NAME, plot_loss_curves, select_trackers, truncate_log
from training.loop import NonFiniteLossError, UnitRunner
from training.model_setup import (
    STUDENT_REFIT,
    build_config,
    fit_input_normalizers,
    load_partial_state,
    load_student,
    load_teachers,
    parameter_values,
)
from training.publishing import (
    HubPushError,
    check_hub_access,
    evaluate_model,
    hub_repo_id,
    model_folder_name,
    push_folders,
    results_table,
    write_model_folder,
)
from training.raw_inputs import prepare_raw_splits, required_columns, save_processor
from training.run_files import RunFiles, clean_leftover_temp_folders
from training.stages import hash_model_from, hash_unit, student_unit, teacher_unit

logger = get_logger(__name__)
RUN_SUMMARY = "run_summary.json"


def finished_models(output_dir: Path) -> list[Path]:
    """Model folders of a finished run in `output_dir`."""
    if not output_dir.is_dir():
        return []
    return sorted(p.parent for p in output_dir.glob("*bits/model.safetensors")) + (
        [output_dir / RUN_SUMMARY] if (output_dir / RUN_SUMMARY).is_file() else []
    )


def check_output_dir(
    output_dir: Path, overwrite: bool, resume: Optional[str], model_folders: list[str]
) -> None:
    """Refuse to clobber a finished model, to start over an unfinished run by accident, or to replace a
    model folder holding files this trainer did not write."""
    finished = finished_models(output_dir)
    if finished and not overwrite:
        raise ValueError(
            f"--output_dir {output_dir} already holds a finished model ({finished[0]}); pass "
            "--overwrite_output_dir to replace it or choose another --output_dir"
        )
    unfinished = [output_dir / d for d in ("checkpoints", "stages") if (output_dir / d).is_dir()]
    if unfinished and not resume and not overwrite:
        raise ValueError(
            f"--output_dir {output_dir} holds an unfinished run ({unfinished[0]}); pass "
            "--resume_from_checkpoint latest to continue it or --overwrite_output_dir to start over"
        )
    foreign = [
        f for name in model_folders for f in RunFiles(output_dir).in_the_way([name]) if name in f.parts
    ]
    if foreign and not overwrite:
        raise ValueError(
            f"--output_dir {output_dir}: the model folder {foreign[0].parent} this run writes holds files "
            f"it did not write ({', '.join(f.name for f in foreign[:5])}); move them or choose another "
            "--output_dir"
        )


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Tracker-friendly hyper-parameters: scalars as they are, everything else as a string."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in values.items()
    }


def run_or_restore(
    runner: UnitRunner,
    unit: str,
    build_spec: Any,
    model: torch.nn.Module,
    resume: Optional[tuple[Path, TrainerState]],
) -> dict[str, Any]:
    """Train a unit, resume it from the checkpoint that stopped inside it, or load it when it is done."""
    store = runner.store
    if store.is_done(unit):
        load_partial_state(model, store.load_best(unit), f"finished unit {unit}")
        logger.info(f"[{unit}] already finished in this output_dir: loaded its best epoch")
        return store.summary(unit)
    resume_dir = resume[0] if resume is not None and resume[1].unit == unit else None
    return runner.run(build_spec(), resume_dir)


def refit_or_restore(
    runner: UnitRunner,
    unit: str,
    chosen: dict[str, Any],
    initial: dict[str, torch.Tensor],
    build_spec: Any,
    model: torch.nn.Module,
    resume: Optional[tuple[Path, TrainerState]],
) -> dict[str, Any]:
    """The refit `unit`: back to the `initial` weights, then trained (or resumed, or restored) for as many
    epochs as its validated run `chosen` kept (``best_epoch + 1``); ``build_spec(epochs)`` makes its spec."""
    load_partial_state(model, initial, f"{unit}: initial weights")
    epochs = chosen["best_epoch"] + 1
    return run_or_restore(runner, unit, lambda: build_spec(epochs), model, resume)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    started = time.perf_counter()
    # 1. Arguments (flags, or a YAML/JSON file with --config plus overriding flags).
    data_args, model_args, args = parse_args(argv)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")
    resolved = resolved_arguments(data_args, model_args, args)

    # 2. Accelerator, logging, output folder.
    # Several processes without a GPU: say so, or `--multi_gpu` on a CPU-only machine starts
    # independent single processes instead of one gloo (MULTI_CPU) group.
    trackers, missing_trackers = select_trackers(args.report_to, output_dir / "logs")
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=cpu_group,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    quiet_library_bars()
    for name in missing_trackers:
        logger.warning(f"--report_to {name}: the package is not installed; logging to JSONL only")
    model_folders = [model_folder_name(data_args.dataset, bits) for bits in model_args.hash_bits]
    check_output_dir(output_dir, args.overwrite_output_dir, args.resume_from_checkpoint, model_folders)
    run_files = RunFiles(output_dir)
    start_over = args.overwrite_output_dir and not args.resume_from_checkpoint
    if start_over:  # every process refuses, so that none waits for a main process that stopped
        run_files.refuse_foreign(model_folders)
    resume_step = None
    if args.resume_from_checkpoint:
        start = CheckpointManager(output_dir).resolve(args.resume_from_checkpoint)
        resume_step = TrainerState.from_file(start / STATE_NAME).global_step
    if args.push_to_hub:  # a bad token or repo fails now, not after training (on every process: none waits)
        check_hub_access(args.hub_model_id, model_args.hash_bits, args.hub_private, args.hub_token)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if start_over:
            run_files.clear(model_folders)
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:  # the steps after the checkpoint are redone: drop their records
            truncate_log(output_dir / "logs" / LOG_NAME, resume_step)
        clean_leftover_temp_folders(output_dir)
    accelerator.wait_for_everyone()
    accelerator.init_trackers("crcgs", config=flat_config(resolved))
    if accelerator.is_main_process:
        run_files.record(Path("logs") / LOG_NAME)  # opened by the tracker: an interrupted run leaves it
    logger.info(
        f"{accelerator.num_processes} process(es), device {accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision}"
    )

    # 3. Data.
    with accelerator.main_process_first():
        splits = load_splits(data_args, required_columns(model_args.model_config, FEATURE_COLUMNS))
    # Raw images/captions (backbone towers): the teachers' fixed features and the raw transform.
    splits, raw_processor = prepare_raw_splits(
        splits,
        model_args.model_config,
        output_dir,
        accelerator,
        data_args.bow_min_count,
        data_args.bow_max_size,
    )
    if accelerator.is_main_process:
        run_files.record("teacher_features")
    dims = data_dims(splits["train"])
    names = label_names(splits["train"])
    # Every model folder gets a processor (auto_map, label names); raw towers' one also tokenizes.
    processor = raw_processor if raw_processor is not None else CRCGSProcessor(label_names=names)
    processor.label_names = names
    num_batches = math.ceil(len(splits["train"]) / args.student_batch_size)
    logger.info(f"data {data_args.dataset}: {dict((k, len(v)) for k, v in splits.items())}, dims {dims}")

    # 4. Model (the student's config with the first code length; each hash length gets its own head).
    config = build_config(model_args.model_config, dims, model_args.hash_bits[0], num_batches, names)
    set_seed(args.seed)
    model = CRCGSForPreTraining(config)
    initial_student = (
        parameter_values(model, model.student_parameters() + model.discriminator_parameters())
        if args.refit_student
        else None
    )
    normalized = fit_input_normalizers(model, splits["train"])
    if normalized:
        logger.info(f"input normalisation fitted on the training split: {', '.join(normalized)} features")

    # 5. Resume point and the runner shared by all units of work.
    checkpoints = CheckpointManager(output_dir, args.checkpoints_total_limit)
    fingerprint = run_fingerprint(resolved, {k: len(v) for k, v in splits.items()}, dims)
    resume = None
    if args.resume_from_checkpoint:
        resume_dir = checkpoints.resolve(args.resume_from_checkpoint)
        resume = (resume_dir, TrainerState.from_file(resume_dir / STATE_NAME))
        differences = fingerprint_differences(resume[1].fingerprint, fingerprint)
        if differences:
            raise ValueError(
                f"--resume_from_checkpoint: {resume_dir} was trained with other data or settings; resume "
                "with the same ones or start over with --overwrite_output_dir. Differences: "
                + "; ".join(differences)
            )
        logger.info(f"resuming from {resume_dir} (unit {resume[1].unit}, epoch {resume[1].epoch})")
    state = resume[1] if resume else TrainerState(fingerprint=fingerprint)
    if accelerator.is_main_process:
        atomic_write_text(output_dir / "training_args.json", _json(resolved))
        run_files.record("training_args.json")
    runner = UnitRunner(
        accelerator,
        state,
        checkpoints,
        StageStore(output_dir),
        args.seed,
        args.checkpointing_steps,
        args.logging_steps,
    )
    summaries: dict[str, Any] = {}
    workers = data_args.dataloader_num_workers

    # 6. Stage 1: teachers (or load them from a previous run); not trained when no student term uses them.
    teachers_trained = "teachers" in args.stages and model.config.student_uses_teachers
    teachers_loaded = bool(model_args.teachers_path) and "teachers" not in args.stages
    if teachers_trained:
        summaries["teachers"] = run_or_restore(
            runner, "teachers", lambda: teacher_unit(accelerator, model, splits, args, workers), model, resume
        )
    elif teachers_loaded:
        # parse_args refuses a student stage that uses teachers with neither
        logger.info(f"teachers loaded from {load_teachers(model, model_args.teachers_path)}")
    elif "teachers" in args.stages or "student" in args.stages:
        logger.info(
            "teachers stage skipped: distillation, adversarial and contrastive weights are all 0, so no "
            "student term uses the teachers (model folders get no teachers/)"
        )

    # 7. Stage 2: student with discriminators (or load it from a previous run).
    if "student" in args.stages:
        summaries["student"] = run_or_restore(
            runner, "student", lambda: student_unit(accelerator, model, splits, args, workers), model, resume
        )
        if initial_student is not None:
            if args.student_lr_patience is not None:
                logger.warning(
                    "--refit_student: the student's refit keeps its learning rate constant (a plateau "
                    "schedule needs the validation split); --student_lr_patience applied to the validated run only"
                )
            summaries[STUDENT_REFIT] = refit_or_restore(
                runner,
                STUDENT_REFIT,
                summaries["student"],
                initial_student,
                lambda epochs: student_unit(accelerator, model, splits, args, workers, refit_epochs=epochs),
                model,
                resume,
            )
    elif model_args.student_path:  # parse_args refuses a hash stage with neither
        logger.info(f"student loaded from {load_student(model, model_args.student_path)}")

    # 8. Stage 3: one hash head per code length, then evaluation and the model folder of each length.
    results: dict[int, dict[str, Any]] = {}
    folders: dict[int, Path] = {}
    if "hash" not in args.stages:
        logger.info(
            f"hash stage skipped: no model folder written; stage weights are in {output_dir / 'stages'}"
        )
    for bits in model_args.hash_bits if "hash" in args.stages else []:
        set_seed(args.seed + bits)
        hash_model = hash_model_from(
            model, build_config(model_args.model_config, dims, bits, num_batches, names)
        )
        unit = f"hash-{bits}"
        summaries[unit] = run_or_restore(
            runner,
            unit,
            lambda m=hash_model: hash_unit(accelerator, m, splits, args, workers),
            hash_model,
            resume,
        )
        accelerator.free_memory()
        results[bits] = evaluate_model(
            accelerator, hash_model, splits, data_args.dataset, args, raw_processor
        )
        folders[bits] = output_dir / model_folder_name(data_args.dataset, bits)
        if accelerator.is_main_process:
            hub_id = (
                hub_repo_id(args.hub_model_id, bits, len(model_args.hash_bits)) if args.hub_model_id else None
            )
            write_model_folder(
                hash_model,
                results[bits],
                folders[bits],
                data_args.dataset,
                resolved,
                summaries,
                hub_id,
                with_teachers=teachers_trained or teachers_loaded,
            )
            save_processor(processor, folders[bits])
            run_files.record(folders[bits].name)
        accelerator.wait_for_everyone()

    # 9. Results table, loss curves, run summary.
    accelerator.end_training()
    summary = {
        "results": {str(k): v for k, v in results.items()},
        "model_folders": {str(k): str(v) for k, v in folders.items()},
        "stages": summaries,
        "wall_time_s": time.perf_counter() - started,
        "num_processes": accelerator.num_processes,
    }
    if accelerator.is_main_process:
        log = output_dir / "logs" / LOG_NAME
        plot_loss_curves(log, output_dir / "logs" / "loss_curves.png")
        for bits, folder in folders.items():  # a model folder shows its own hash head only
            # in training order; a unit this run did not train has no panel
            units = ["teachers", "student", STUDENT_REFIT, f"hash-{bits}"]
            plot_loss_curves(log, folder / "loss_curves.png", units)
        if results:
            table = results_table(results)
            atomic_write_text(output_dir / "results.md", table + "\n")
            accelerator.print(f"\nmAP@all and mAP@k on {data_args.dataset} (query vs database):\n{table}")
            for bits, folder in sorted(folders.items()):
                accelerator.print(f"model ({bits} bits): {folder.resolve()}")
        atomic_write_text(output_dir / RUN_SUMMARY, _json(summary))
        run_files.record(RUN_SUMMARY, "results.md", "logs", *(f.name for f in folders.values()))

    # 10. Push to the Hub.
    if args.push_to_hub and accelerator.is_main_process and folders:
        for url in push_folders(folders, args.hub_model_id, args.hub_private, args.hub_token):
            logger.info(f"pushed {url}")
    return summary


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, default=str)


def cli() -> None:
    """Run `main`; a user error or a known failure ends the process with ``error: ...`` and exit status 2."""
    run_command(main, (NonFiniteLossError, HubPushError))


if __name__ == "__main__":
    cli()
