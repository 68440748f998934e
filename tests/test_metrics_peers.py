"""Adding up the workers' metrics and statistics (the logic; tests/test_cli.py runs two real workers)."""

from v2serve.metrics.peers import merge_statistics
from v2serve.metrics.prometheus import render_merged


def stats(count: int, ns: int, last: int, batches: dict[int, int]) -> dict:
    return {
        "model_stats": [
            {
                "name": "m",
                "version": "1",
                "last_inference": last,
                "inference_count": count,
                "execution_count": count,
                "inference_stats": {"success": {"count": count, "ns": ns}, "fail": {"count": 0, "ns": 0}},
                "batch_stats": [
                    {"batch_size": size, "compute_infer": {"count": n, "ns": n * 10}} for size, n in batches.items()
                ],
            }
        ]
    }


def test_statistics_add_up_per_model_and_batch_size_and_keep_the_latest_inference():
    [merged] = merge_statistics([stats(3, 30, 100, {1: 3}), stats(5, 50, 90, {1: 4, 2: 1})])["model_stats"]
    assert merged["inference_count"] == 8 and merged["inference_stats"]["success"] == {"count": 8, "ns": 80}
    assert merged["last_inference"] == 100
    assert merged["batch_stats"] == [
        {"batch_size": 1, "compute_infer": {"count": 7, "ns": 70}},
        {"batch_size": 2, "compute_infer": {"count": 1, "ns": 10}},
    ]


def test_samples_add_up_and_state_gauges_take_the_largest():
    worker = [
        ["v2serve_requests", "counter", "Requests.", "v2serve_requests_total", {"model": "m"}, 3.0],
        ["v2serve_in_flight", "gauge", "In flight.", "v2serve_in_flight", {"model": "m"}, 1.0],
        ["v2serve_model_state", "gauge", "State.", "v2serve_model_state", {"model": "m", "state": "ready"}, 1.0],
    ]
    text = render_merged([worker, worker]).decode()
    assert 'v2serve_requests_total{model="m"} 6.0' in text
    assert 'v2serve_in_flight{model="m"} 2.0' in text
    assert 'v2serve_model_state{model="m",state="ready"} 1.0' in text
