"""Write the model folder of one hash length, print the results table, push folders to the Hub.

Folder layout (docs/DESIGN.md): config.json + model.safetensors (a `CRCGSModel`), eval_results.json,
eval_summary.md and plots from the evaluator, teachers/ (when the run trained or loaded them),
training_args.json, README.md (model card).
The folder is assembled under a temp name beside it and renamed into place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from modeling_crcgs.utils import atomic_directory, atomic_write_text
from training.model_card import build_model_card
from training.model_setup import save_teachers

logger = logging.getLogger(__name__)

CARD_SETTINGS = (
    "student_epochs",
    "student_batch_size",
    "student_learning_rate",
    "student_adam_betas",
    "hash_epochs",
    "hash_batch_size",
    "hash_learning_rate",
    "early_stopping_patience",
    "student_ema_decay",
    "refit_student",
    "teacher_epochs",
    "seed",
)
CONFIG_SETTINGS = (
    "image_feature_normalization",
    "text_feature_normalization",
    "tower_hidden_dims",
    "tower_input_noise",
    "tower_input_dropout",
    "retrieval_embedding",
    "label_agreement_weight",
    "similarity_scale",
    "distillation_weight",
    "adversarial_weight",
    "dis_iter",
    "contrastive_weight",
    "contrastive_temperature",
    "support_set_weight",
    "support_set_temperature",
    "modality_gap_loss_weight",
)


class HubPushError(RuntimeError):
    """Uploading to the Hub failed; the local folders are complete."""


def model_folder_name(dataset: str, bits: int) -> str:
    return f"{dataset}-{bits}bits"


def hub_repo_id(hub_model_id: str, bits: int, num_lengths: int) -> str:
    """The repository of one length: the given id, or `<id>-<bits>bits` when several lengths train."""
    return hub_model_id if num_lengths == 1 else f"{hub_model_id}-{bits}bits"


def evaluate_model(
    accelerator: Any, model: Any, splits: Any, dataset: str, args: Any, processor: Any = None
) -> dict[str, Any]:
    """The evaluator's result (eval_results.json shape) for the retrieval model on query vs database.

    Backbone towers read the raw columns through ``processor`` (``evaluate_retrieval`` runs
    ``feature_level_view``).
    """
    from modeling_crcgs.retrieval.evaluation import evaluate_retrieval

    return evaluate_retrieval(
        model.crcgs,
        splits["query"],
        splits["database"],
        dataset_name=dataset,
        top_k=args.eval_top_k,
        batch_size=args.eval_batch_size,
        accelerator=accelerator,
        processor=processor,
        train_split=splits["train"],
    )


def write_model_folder(
    model: Any,
    result: dict[str, Any],
    folder: Path,
    dataset: str,
    resolved_args: dict[str, Any],
    unit_summaries: dict[str, Any],
    hub_id: Optional[str],
    with_teachers: bool = True,
) -> Path:
    """Assemble the model folder of `model` (main process only) and rename it into place; `teachers/` only
    `with_teachers` (teachers trained or loaded by this run)."""
    from modeling_crcgs.retrieval.evaluation import write_evaluation_report

    with atomic_directory(folder) as tmp:
        model.save_retrieval_model(tmp)
        if with_teachers:
            save_teachers(model, tmp / "teachers")
        write_evaluation_report(result, tmp)
        args_record = {**resolved_args, "hash_bits": model.config.hash_bits, "stages_summary": unit_summaries}
        atomic_write_text(tmp / "training_args.json", json.dumps(args_record, indent=2))
        settings = {
            k: resolved_args[k]
            for k in CARD_SETTINGS
            if k in resolved_args and (with_teachers or not k.startswith("teacher_"))
        }
        settings.update({k: getattr(model.config, k) for k in CONFIG_SETTINGS})
        card = build_model_card(
            result, dataset, model.config, settings, hub_id or str(folder), hub_id, with_teachers
        )
        card.save(str(tmp / "README.md"))
    return folder


# the continuous row of the table, by how it ranks (eval_results.json's embedding_distance)
_CONTINUOUS_LABELS = {"cosine": "continuous embeddings", "inner_product": "label posteriors (inner product)"}


def results_table(results: dict[int, dict[str, Any]]) -> str:
    """Markdown table per code length and ranking (Hamming codes, continuous embeddings): I2T/T2I mAP@all
    beside mAP@k with k = the evaluation's k (by default the number of queries: the quantity the CRCGS
    paper's table calls mAP), and a note saying which of the two to compare with the paper."""
    from modeling_crcgs.retrieval.evaluation import embedding_distance

    first = results[min(results)]
    k = first["hamming"]["i2t"]["k"]
    lines = [
        f"| bits | ranking | I2T mAP@all | T2I mAP@all | I2T mAP@{k} (paper's mAP) | T2I mAP@{k} (paper's mAP) |",
        "|---|---|---|---|---|---|",
    ]
    for bits in sorted(results):
        continuous = _CONTINUOUS_LABELS[embedding_distance(results[bits])]
        for space, label in (("hamming", "Hamming codes"), ("continuous", continuous)):
            r = results[bits][space]
            lines.append(
                f"| {bits} | {label} | {r['i2t']['map_all']:.4f} | {r['t2i']['map_all']:.4f} | "
                f"{r['i2t']['map_at_k']:.4f} | {r['t2i']['map_at_k']:.4f} |"
            )
    lines += [
        "",
        f"mAP@{k}: the top {k} of the ranking (k = {k}; by default the number of queries, "
        f"{first['num_query']} here), what the CRCGS paper's table reports as mAP: compare paper figures "
        f"with these columns. mAP@all ranks the whole database ({first['num_database']} items) "
        + (
            "and differs from it, in either direction."
            if k < first["num_database"]
            else "and is the same here: k covers the whole database."
        ),
    ]
    return "\n".join(lines)


def check_hub_access(
    hub_model_id: str, hash_bits: list[int], private: bool, token: Optional[str] = None
) -> list[str]:
    """Before any training: the token is valid (``whoami``) and every repository exists or is created
    (``create_repo(exist_ok=True)``), so that a bad token or a name owned by someone else fails in seconds,
    not after the run. Returns the repository ids; raises `HubPushError` with one clear sentence."""
    from huggingface_hub import create_repo, whoami
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo_ids = [hub_repo_id(hub_model_id, bits, len(hash_bits)) for bits in hash_bits]
    try:
        user = whoami(token=token)
        for repo_id in repo_ids:
            create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
    except OfflineModeIsEnabled as err:
        raise HubPushError(
            "--push_to_hub: offline mode is on (HF_HUB_OFFLINE=1), nothing would be uploaded; unset it or "
            "drop --push_to_hub (the model folders can be uploaded later with `hf upload`)."
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise HubPushError(
            f"--push_to_hub: cannot use the Hub repositories {repo_ids} ({type(err).__name__}: {err}); check "
            f"the token (--hub_token, HF_TOKEN or `hf auth login`) and that you may write to {hub_model_id!r}."
        ) from err
    logger.info(f"Hub: logged in as {user.get('name', '?')}; will push to {', '.join(repo_ids)}")
    return repo_ids


def push_folders(
    folders: dict[int, Path], hub_model_id: str, private: bool, token: Optional[str] = None
) -> list[str]:
    """Create each repository and upload its folder; raise `HubPushError` with one clear sentence."""
    from huggingface_hub import create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    urls = []
    for bits, folder in sorted(folders.items()):
        repo_id = hub_repo_id(hub_model_id, bits, len(folders))
        try:
            create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
            info = upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message="Upload CRCGS model", token=token
            )
        except OfflineModeIsEnabled as err:
            raise HubPushError(
                f"Could not push to the Hub because offline mode is on (HF_HUB_OFFLINE=1); the model folder "
                f"{folder} is complete: unset HF_HUB_OFFLINE and run `hf upload {repo_id} {folder}`."
            ) from err
        except (HfHubHTTPError, OSError) as err:
            raise HubPushError(
                f"Could not push {folder} to the Hub repository {repo_id} ({type(err).__name__}: {err}); "
                f"the local folder is complete: log in (`hf auth login`) and run `hf upload {repo_id} {folder}`."
            ) from err
        urls.append(str(getattr(info, "commit_url", repo_id)))
    return urls
