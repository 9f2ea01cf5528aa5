"""Per-epoch validation: teacher reconstruction loss and retrieval mAP on the FULL validation split.

Protocol (deterministic, every validation item exactly once): the validation split is encoded in order
by a sequential, sharded loader; `gather_for_metrics` drops the padding Accelerate adds to an uneven
last batch, so every process holds each item once. The validation split is then both the query set and
the database: image queries rank the texts (I2T) and text queries rank the images (T2I); relevance is
sharing at least one label; the score is mAP@all (docs/METHOD.md) averaged over I2T and T2I. The student
is scored on its continuous retrieval embeddings (the common space by cosine, or the class posteriors by
inner product: ``config.retrieval_embedding``), a hash head on its codes (Hamming).
The release instead scores a random 1000-sample subset; this protocol has no sampling noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from modeling_crcgs.hashing import sign_codes
from modeling_crcgs.networks import evaluating
from modeling_crcgs.retrieval.encoding import encode_batches


def encode_validation(
    accelerator: Any,
    retrieval_model: Any,
    loader: DataLoader,
    with_codes: bool = True,
    retrieval_embeddings: bool = True,
) -> dict[str, torch.Tensor]:
    """Encode a prepared sequential loader with a `CRCGSModel` (eval mode); gathered, on CPU, in order
    (:func:`modeling_crcgs.retrieval.encoding.encode_batches`, the loop evaluation and the shards use).

    Returns `image_embeds`, `text_embeds`, `labels`, `index` and, with `with_codes`, `image_codes`,
    `text_codes` (sign of the hash head, int8 in {-1, +1}). The embeddings are the retrieval embeddings
    (``retrieval_model.retrieval_embeddings``), or with `retrieval_embeddings=False` the common-space u, v.
    """

    def encode(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        index = batch.pop("index")
        labels = batch.pop("labels")
        out = retrieval_model(**batch)
        image, text = out.image_embeds, out.text_embeds
        if retrieval_embeddings:
            image, text = (
                retrieval_model.retrieval_embeddings(image),
                retrieval_model.retrieval_embeddings(text),
            )
        values = {
            "image_embeds": image.float(),
            "text_embeds": text.float(),
            "labels": labels,
            "index": index,
        }
        if with_codes:
            values["image_codes"] = sign_codes(out.image_hash_logits)
            values["text_codes"] = sign_codes(out.text_hash_logits)
        return values

    with evaluating(retrieval_model):
        return encode_batches(loader, encode, accelerator)


def check_each_item_once(encoded: dict[str, torch.Tensor], num_items: int) -> None:
    """Raise if the gathered validation set is not exactly the split (no item missing or duplicated)."""
    index = encoded["index"]
    if len(index) != num_items or len(torch.unique(index)) != num_items:
        raise RuntimeError(
            f"validation: expected {num_items} distinct items after gathering, got {len(index)} rows with "
            f"{len(torch.unique(index))} distinct indices"
        )


def retrieval_map(
    encoded: dict[str, torch.Tensor], kind: str, embedding_distance: str = "cosine"
) -> dict[str, float]:
    """I2T, T2I and mean mAP@all with the validation split as queries and database.

    `kind="continuous"` ranks the embeddings by `embedding_distance` (``"cosine"`` or ``"inner_product"``,
    the model's ``config.retrieval_distance``), `kind="hamming"` the codes by Hamming distance.
    """
    from modeling_crcgs.retrieval.metrics import mean_average_precision

    if kind == "continuous":
        image, text, distance = encoded["image_embeds"], encoded["text_embeds"], embedding_distance
    elif kind == "hamming":
        image, text, distance = encoded["image_codes"], encoded["text_codes"], "hamming"
    else:
        raise ValueError(f"kind: expected 'continuous' or 'hamming', got {kind!r}")
    labels = encoded["labels"]
    i2t = float(mean_average_precision(image, text, labels, labels, distance=distance))
    t2i = float(mean_average_precision(text, image, labels, labels, distance=distance))
    return {"i2t": i2t, "t2i": t2i, "mean": (i2t + t2i) / 2}


@torch.no_grad()
def teacher_validation_loss(accelerator: Any, model: Any, loader: DataLoader) -> float:
    """Validation value of the teachers' summed L1 reconstruction loss (`stage="teacher"`).

    Each item carries its batch's mean loss; the mean over the gathered items (padding dropped) is the
    batch-size-weighted mean of the batch losses.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch.pop("index")
        out = model(**batch, stage="teacher")
        per_item = out.loss.detach().float().expand(batch["image_features"].shape[0])
        gathered = accelerator.gather_for_metrics(per_item).cpu().double()
        total += float(gathered.sum())
        count += len(gathered)
    model.train(was_training)
    return total / count
