"""The README.md model card of a trained model folder (huggingface_hub ModelCard + model-index)."""

from __future__ import annotations

from typing import Any, Optional

DATASET_NAMES = {
    "mirflickr25k": "MIRFLICKR-25K",
    "nus_wide": "NUS-WIDE",
    "mscoco": "MS-COCO",
    "features": "user-provided features",
    "synthetic": "CRCGS synthetic (generated)",
}

CITATION = """@inproceedings{zhang2022crcgs,
  title     = {Image-Text Retrieval via Contrastive Learning with Auxiliary Generative Features and Support-set Regularization},
  author    = {Zhang, Lei and Yang, Min and Li, Chengming and Xu, Ruifeng},
  booktitle = {Proceedings of the 45th International ACM SIGIR Conference on Research and Development in Information Retrieval},
  pages     = {1938--1943},
  year      = {2022},
  doi       = {10.1145/3477495.3531783}
}"""

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

CRCGS (Zhang et al., SIGIR 2022) cross-modal retrieval model with a {{ hash_bits }}-bit hash head,
trained on **{{ dataset_name }}** with this repository's `training/train.py`. Images and texts are
mapped to one common space (continuous embeddings) and to {{ hash_bits }}-bit binary codes that are
ranked by Hamming distance.

## Results

{{ summary }}

## How to load and search

```python
import numpy as np
import torch
{% if remote %}from transformers import AutoModel, AutoProcessor

# the model's code ships with it: no package to install
model = AutoModel.from_pretrained("{{ repo_or_path }}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{{ repo_or_path }}", trust_remote_code=True)
{% else %}import modeling_crcgs  # registers model_type "crcgs" with AutoModel / AutoProcessor
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo_or_path }}").eval()
processor = AutoProcessor.from_pretrained("{{ repo_or_path }}")
{% endif %}image_features = torch.rand(5, model.config.image_input_dim)   # your pre-extracted image features
text_features = torch.rand(100, model.config.text_input_dim)   # bag-of-words texts
image_codes = model.get_image_hash_codes(image_features)       # int8 in {-1, +1}, (5, {{ hash_bits }})
text_codes = model.get_text_hash_codes(text_features)
hamming = (model.config.hash_bits - image_codes.float() @ text_codes.float().T) / 2
ranking = hamming.argsort(dim=1, stable=True)                  # texts ranked for each image
packed = np.packbits((text_codes > 0).numpy(), axis=1)         # uint8 (100, {{ (hash_bits + 7) // 8 }}) for an index (= pack_codes)
print(processor.label_names)                                    # the label columns, also in model.config.id2label
```

{% if posterior %}Continuous ranking: `model.retrieval_embeddings(model.get_image_features(image_features))`
(and the same with `get_text_features`) gives each item's label posteriors, shape (n, {{ num_labels }}); rank by inner product,
`image_posteriors @ text_posteriors.T`, the probability that two items have the same label (this model's
`retrieval_embedding` is `label_posterior`).

{% else %}`model.get_image_features` / `get_text_features` give the continuous embeddings (cosine ranking).

{% endif %}## Training

{% if with_teachers %}Three stages (teachers, student with discriminators, hash head), best epoch of each by validation.
{% else %}Two stages (student, hash head), best epoch of each by validation: no student term used the teachers
(distillation, adversarial and contrastive weights 0), so none were trained.
{% endif %}{% if refit %}The student was then trained again from its initial weights on train + validation for
the number of epochs validation chose, its last epoch kept, and the hash head trained on it (`refit_student`).
{% endif %}Resolved arguments: `training_args.json` in this folder. Main settings:

{% for key, value in settings %}- `{{ key }}`: `{{ value }}`
{% endfor %}{% if with_teachers %}
The two teacher (generation) networks are in `teachers/`.
{% endif %}

## Intended use

Research on cross-modal (image-text) retrieval and hashing with the inputs the model was trained on:
{{ image_input_dim }}-d image features and {{ text_input_dim }}-d bag-of-words texts over the label
set of {{ dataset_name }}.

## Limitations

- Inputs must be produced exactly as in training (same feature extractor and vocabulary); the model
  does not take raw images or sentences unless it was trained with backbone towers.
- Relevance is label overlap: scores measure category-level retrieval, not caption-level matching.
- Figures on synthetic data only show that the pipeline learns; they say nothing about real data.
- Hash codes trade accuracy for speed and memory; compare with the continuous rows above.

## Citation

```bibtex
{{ citation }}
```
"""


def _eval_results(result: dict[str, Any], dataset: str) -> list[Any]:
    from huggingface_hub import EvalResult

    from modeling_crcgs.retrieval.evaluation import ranking_name

    bits = result["hash_bits"]
    entries = []
    continuous = "continuous, " + ranking_name(result)
    for ranking, label in (("hamming", f"Hamming, {bits} bits"), ("continuous", continuous)):
        for direction in ("i2t", "t2i"):
            scores = result[ranking][direction]
            for key, name in (("map_all", "mAP@all"), ("map_at_k", f"mAP@{scores['k']}")):
                entries.append(
                    EvalResult(
                        task_type="feature-extraction",
                        task_name="Cross-modal retrieval (image-text hashing)",
                        dataset_type=dataset,
                        dataset_name=DATASET_NAMES.get(dataset, dataset),
                        dataset_split="query/database",
                        metric_type="map",
                        metric_name=f"{direction.upper()} {name} ({label})",
                        metric_value=round(float(scores[key]), 4),
                    )
                )
    return entries


def build_model_card(
    result: dict[str, Any],
    dataset: str,
    config: Any,
    settings: dict[str, Any],
    repo_or_path: str,
    hub_model_id: Optional[str] = None,
    with_teachers: bool = True,
) -> Any:
    """A `ModelCard` with model-index eval results (I2T/T2I mAP@all and mAP@k), usage and citation.

    With `hub_model_id` the usage snippet loads from the Hub with ``trust_remote_code=True`` (the folder
    carries the model's modules); without it, from the local folder after ``import modeling_crcgs``.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from modeling_crcgs.retrieval.evaluation import summary_markdown

    name = hub_model_id.split("/")[-1] if hub_model_id else f"crcgs-{dataset}-{result['hash_bits']}bits"
    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        license="apache-2.0",
        tags=["crcgs", "cross-modal-retrieval", "hashing", "image-text-retrieval"],
        datasets=None,  # the data are local files (no Hub dataset id); named in the text and model-index
        metrics=["map"],
        eval_results=_eval_results(result, dataset),
    )
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_name=name,
        hash_bits=result["hash_bits"],
        dataset_name=DATASET_NAMES.get(dataset, dataset),
        summary=summary_markdown(result).strip(),
        repo_or_path=repo_or_path,
        remote=hub_model_id is not None,
        settings=sorted(settings.items()),
        image_input_dim=config.image_input_dim,
        text_input_dim=config.text_input_dim,
        citation=CITATION,
        with_teachers=with_teachers,
        refit=bool(settings.get("refit_student")),
        posterior=config.retrieval_embedding == "label_posterior",
        num_labels=config.num_labels,
    )
