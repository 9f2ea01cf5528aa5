"""Retrieval with a trained CRCGS model: metrics, batched encoding (in memory or as resumable shards),
the evaluator and its report, and the binary search index.

* :mod:`.metrics`: mAP@k, P@k/R@k, Hamming-radius PR curves and NDCG over Hamming or cosine rankings.
* :mod:`.encoding`: one batched encoding core (``encode_rows``) for ``encode_split``, the index and the shards.
* :mod:`.evaluation`: ``evaluate_retrieval`` (query vs database, both directions) and ``write_evaluation_report``.
* :mod:`.index`: ``HashIndex`` over packed codes (faiss, imported lazily).

The subpackage sits above the model classes (it encodes with a ``CRCGSModel``); the models never import it.
"""
