"""Reading wrk's report: the figures the benchmark tables are made of."""

from __future__ import annotations

from loadtests.bench_origin import wrk_figures

# a report whose latency "+/- Stdev" ends in 99%: it was read as the p99 once, and the
# cache-hit table said "Req/Sec" where the p99 belonged
REPORT = """Running 6s test @ http://127.0.0.1:18096/_/w=400/bench/photo.jpg
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.91ms    1.01ms  20.79ms   89.99%
    Req/Sec    11.14k     1.21k   13.46k    69.00%
  Latency Distribution
     50%    2.77ms
     75%    3.10ms
     90%    3.59ms
     99%    5.97ms
  66580 requests in 6.00s, 1.75GB read
Requests/sec:  11096.63
Transfer/sec:    298.35MB
"""


def test_the_p99_is_the_distributions_line() -> None:
    assert wrk_figures(REPORT) == (11096.63, "5.97ms")


def test_a_report_without_a_distribution_says_so() -> None:
    assert wrk_figures(REPORT.split("  Latency Distribution")[0] + "Requests/sec: 5.5\n") == (
        5.5,
        "?",
    )
