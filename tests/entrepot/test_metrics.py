"""Metrics counted on the hot path reach the exposition exactly, histograms included."""

from __future__ import annotations

from entrepot.metrics import Metrics


def test_batched_request_metrics_match_what_observe_would_give() -> None:
    m = Metrics()
    for seconds in (0.0004, 0.003, 0.003, 0.2, 99.0):
        m.record_request("zip", 200, seconds, 1000)
    m.record_request("info", 404, 0.001, 0)
    m.record_cache("zip", "hit")
    m.record_cache("zip", "hit")
    text = m.exposition().decode()
    assert 'entrepot_http_requests_total{code="200",endpoint="zip"} 5.0' in text
    assert 'entrepot_http_requests_total{code="404",endpoint="info"} 1.0' in text
    assert 'entrepot_http_response_bytes_total{endpoint="zip"} 5000.0' in text
    assert 'entrepot_cache_results_total{endpoint="zip",result="hit"} 2.0' in text
    # Cumulative buckets: <=0.0005 → 1, <=0.005 → 3, <=0.25 → 4, +Inf → 5.
    assert 'entrepot_http_request_duration_seconds_bucket{endpoint="zip",le="0.0005"} 1.0' in text
    assert 'entrepot_http_request_duration_seconds_bucket{endpoint="zip",le="0.005"} 3.0' in text
    assert 'entrepot_http_request_duration_seconds_bucket{endpoint="zip",le="0.25"} 4.0' in text
    assert 'entrepot_http_request_duration_seconds_bucket{endpoint="zip",le="+Inf"} 5.0' in text
    assert 'entrepot_http_request_duration_seconds_count{endpoint="zip"} 5.0' in text
    assert 'entrepot_http_request_duration_seconds_sum{endpoint="zip"} 99.2064' in text
    # A second scrape does not count twice.
    assert 'entrepot_http_requests_total{code="200",endpoint="zip"} 5.0' in m.exposition().decode()
