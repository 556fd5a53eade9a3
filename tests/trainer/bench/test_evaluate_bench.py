"""`bench evaluate`: the scoring stage benchmark gives the same scores alone and in a process pool."""

from embedstore.trainer.bench.evaluate import bench_evaluate


def test_bench_evaluate_gives_the_same_scores_in_a_process_pool() -> None:
    alone = bench_evaluate(6, workers=1, distinct=3)
    pooled = bench_evaluate(6, workers=2, distinct=3)
    assert alone["n_tiles"] == pooled["n_tiles"] == 6 and pooled["seconds"] > 0
    assert pooled["bpq"] == alone["bpq"]
    assert 0.5 < alone["bpq"] <= 1.0  # model-like maps of synthetic tiles segment most cells
