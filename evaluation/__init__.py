"""Retrieval commands over a saved CRCGS model: ``run_evaluation.py`` (the evaluation report),
``encode_dataset.py`` (embeddings and packed codes as shards), ``build_index.py`` and ``search.py``.

The metric module ``crcgs_map/`` is loaded by path (``evaluate.load("evaluation/crcgs_map")``), not imported.
"""
