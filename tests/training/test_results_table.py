"""results.md and the console table put mAP@k (the paper's mAP) beside mAP@all, labelled."""

from training.publishing import results_table


def _result(offset: float) -> dict:
    def scores(base: float) -> dict:
        return {"map_all": base, "map_at_k": base + 0.1, "k": 50}

    return {
        "num_query": 50,
        "num_database": 250,
        "hamming": {"i2t": scores(0.1 + offset), "t2i": scores(0.2 + offset)},
        "continuous": {"i2t": scores(0.3 + offset), "t2i": scores(0.4 + offset)},
    }


def test_results_table_shows_map_at_k_beside_map_all_with_its_meaning():
    table = results_table({16: _result(0.01), 8: _result(0.0)})
    lines = table.splitlines()
    assert lines[0] == (
        "| bits | ranking | I2T mAP@all | T2I mAP@all | I2T mAP@50 (paper's mAP) | T2I mAP@50 (paper's mAP) |"
    )
    assert lines[2] == "| 8 | Hamming codes | 0.1000 | 0.2000 | 0.2000 | 0.3000 |"
    assert lines[3] == "| 8 | continuous embeddings | 0.3000 | 0.4000 | 0.4000 | 0.5000 |"
    assert lines[4] == "| 16 | Hamming codes | 0.1100 | 0.2100 | 0.2100 | 0.3100 |"
    note = lines[-1]
    assert "number of queries, 50 here" in note and "CRCGS paper" in note and "250 items" in note
    assert note.endswith("and differs from it, in either direction.")


def test_results_table_says_map_at_k_is_map_all_when_k_covers_the_database():
    result = _result(0.0)
    result["num_database"] = 50  # classic protocol: query = database, so k = the whole database
    note = results_table({8: result}).splitlines()[-1]
    assert note.endswith("and is the same here: k covers the whole database.") and "differs" not in note


def test_results_table_names_the_continuous_ranking_of_label_posteriors():
    result = _result(0.0)
    result["embedding_distance"] = "inner_product"
    lines = results_table({8: result}).splitlines()
    assert lines[3] == "| 8 | label posteriors (inner product) | 0.3000 | 0.4000 | 0.4000 | 0.5000 |"
