"""`python -m loadtests plan`: turn a traffic profile into nodes, caches and bandwidth.

    python -m loadtests plan --dau 1000000 --views-per-user 20 --peak-factor 3 \\
        --images 100000 --variants-per-image 5 --original-kb 2000 --variant-kb 50 \\
        --retention-days 365 --uploads-per-day 1000 --target-hit 0.9

The back-of-the-envelope an architect would do, with every step shown: QPS at the edge
and the origin, origin storage, cache sizes for the target hit ratio (from the S3-FIFO
simulator's curve for Zipf traffic), egress, and edge nodes from the per-process and
per-core throughput that `python -m loadtests bench` measured (its results file, not
typed-in numbers). Units are decimal: 1 KB = 1,000 bytes, 1 GB = 10^9 bytes.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench import RESULTS

DAY = 86_400
KB = 1_000
Curve = Callable[[float], float]  # hit ratio for a cache of this fraction of the working set
FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class Profile:
    dau: float
    views_per_user: float
    peak_factor: float
    images: float
    variants_per_image: float
    original_kb: float
    variant_kb: float
    retention_days: float
    uploads_per_day: float
    target_hit: float
    l1_share: float = 0.8  # of the hits, the share memory should serve
    alpha: float = 0.9
    cores_per_node: int = 8
    utilisation: float = 0.6
    node_gbps: float = 10.0  # each node's network link


SIMULATED_REQUESTS = 400_000  # the simulator's budget (~5 s); objects shrink to keep it
MIN_OBJECTS = 1_000


@dataclass(frozen=True)
class Measured:
    # one edge process, L1 and L2 (disk) hits: a core's worth; with one edge process per
    # core (EDGE_PROCESSES=0) hits scale with cores (CPU per hit is flat from 1 to N
    # processes: loadtests.bench_cores)
    l1_rps: float
    l2_rps: float
    # unique-URL transforms a second per core, for the traffic's mix of workloads: the
    # harmonic mean weighted by each workload's share (time per transform averages, rates
    # do not: one slow workload in four costs more than the plain mean of rates says)
    transform_per_core: float
    workloads: tuple[tuple[str, float, float], ...] = ()  # name, per core, share

    @classmethod
    def from_results(cls, path: Path, mix: dict[str, float] | None = None) -> Measured:
        """`mix`: a share for some workloads (by the start of their names); the rest share
        what is left equally. None: every workload alike."""
        data = json.loads(path.read_text())
        hits = {h["name"]: h["rps"] for h in data["hits"]}
        rows = [
            (t.get("name", f"workload {i + 1}"), t["edge_rps"] / data["cores"])
            for i, t in enumerate(data["transforms"])
        ]
        shares = _shares([name for name, _ in rows], mix or {})
        seconds = sum(share / rate for (_, rate), share in zip(rows, shares, strict=True))
        workloads = tuple(
            (name, rate, share) for (name, rate), share in zip(rows, shares, strict=True)
        )
        return cls(hits["edge L1 hit"], hits["edge L2 hit"], 1 / seconds, workloads)


def _shares(names: list[str], mix: dict[str, float]) -> list[float]:
    given = [next((v for k, v in mix.items() if name.startswith(k)), None) for name in names]
    if any(v is not None and v < 0 for v in given) or sum(v or 0 for v in given) > 1:
        raise ValueError("shares of the mix are between 0 and 1 and add up to at most 1")
    rest = [i for i, v in enumerate(given) if v is None]
    left = (1 - sum(v or 0 for v in given)) / len(rest) if rest else 0.0
    shares = [left if v is None else v for v in given]
    total = sum(shares)
    if total <= 0:
        raise ValueError("the mix gives no workload any share")
    return [share / total for share in shares]


def simulated_objects(requests_per_object: float) -> tuple[int, int]:
    """Objects and requests for the simulator: as many requests per object as the day has
    (up to SIMULATED_REQUESTS / MIN_OBJECTS = 400), with fewer objects as it grows."""
    per_object = min(max(requests_per_object, 1.0), SIMULATED_REQUESTS / MIN_OBJECTS)
    objects = max(MIN_OBJECTS, min(10_000, int(SIMULATED_REQUESTS / per_object)))
    return objects, int(objects * per_object)


def simulated_curve(alpha: float, requests_per_object: float) -> Curve:
    """Hit ratio against cache size from the S3-FIFO simulator (objects of 5-500 KB), with
    as many requests per object as the profile's day has (so one-hit wonders count)."""
    from loadtests.simulate import run_s3fifo, sizes, zipf_trace

    rng = random.Random(1)
    objects, requests = simulated_objects(requests_per_object)
    size_of = sizes(objects, rng)
    trace = zipf_trace(objects, requests, alpha, rng)
    total = sum(size_of)
    points = [(0.0, 0.0)] + [
        (f, run_s3fifo(trace, size_of, int(total * f)).hit_ratio) for f in FRACTIONS
    ]

    xs = [x for x, _ in points]

    def curve(fraction: float) -> float:
        i = min(bisect.bisect_left(xs, fraction), len(points) - 1)
        (x0, y0), (x1, y1) = points[max(i - 1, 0)], points[i]
        return y1 if x1 == x0 else y0 + (y1 - y0) * (fraction - x0) / (x1 - x0)

    return curve


def fraction_for(curve: Curve, hit: float) -> float | None:
    """The smallest cache fraction reaching `hit` (bisection; the curve rises), or None."""
    if curve(1.0) < hit:
        return None
    low, high = 0.0, 1.0
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if curve(middle) < hit else (low, middle)
    return high


def plan(p: Profile, m: Measured, curve: Curve) -> dict[str, float]:
    out: dict[str, float] = {}
    out["views_per_day"] = p.dau * p.views_per_user
    out["avg_qps"] = out["views_per_day"] / DAY
    out["peak_qps"] = out["avg_qps"] * p.peak_factor
    reachable = curve(1.0)
    hit = min(p.target_hit, reachable)
    out["hit_ratio"] = hit
    out["origin_peak_qps"] = out["peak_qps"] * (1 - hit)
    out["origin_avg_qps"] = out["avg_qps"] * (1 - hit)
    stored = p.images + p.uploads_per_day * p.retention_days
    out["storage_bytes"] = stored * p.original_kb * KB
    out["working_set_bytes"] = p.images * p.variants_per_image * p.variant_kb * KB
    fleet = fraction_for(curve, hit) or 1.0
    memory = fraction_for(curve, hit * p.l1_share) or fleet
    out["cache_bytes"] = fleet * out["working_set_bytes"]
    out["memory_bytes"] = memory * out["working_set_bytes"]
    out["egress_peak_bits"] = out["peak_qps"] * p.variant_kb * KB * 8
    # every miss fetches its original (the source cache makes it fewer): origin to edges
    out["fill_peak_bits"] = out["origin_peak_qps"] * p.original_kb * KB * 8
    link = p.node_gbps * 1e9 * p.utilisation
    out["bandwidth_nodes"] = (out["egress_peak_bits"] + out["fill_peak_bits"]) / link
    out["egress_day_bytes"] = out["views_per_day"] * p.variant_kb * KB
    l1_qps = out["peak_qps"] * hit * p.l1_share
    l2_qps = out["peak_qps"] * hit * (1 - p.l1_share)
    # hits and transforms share every core of a node (one edge process per core, and
    # their transform workers): both are counted in cores
    out["hit_cores"] = l1_qps / m.l1_rps + l2_qps / m.l2_rps
    out["transform_cores"] = out["origin_peak_qps"] / m.transform_per_core
    cores = out["hit_cores"] + out["transform_cores"]
    out["cpu_nodes"] = cores / (p.cores_per_node * p.utilisation)
    needed = max(out["cpu_nodes"], out["bandwidth_nodes"], 1e-9)
    out["nodes"] = math.ceil(needed) + 1
    out["l1_per_node_bytes"] = out["memory_bytes"] / out["nodes"]
    out["l2_per_node_bytes"] = out["cache_bytes"] / out["nodes"]
    out["l3_bytes"] = out["cache_bytes"]
    out["reachable_hit"] = reachable
    return out


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:,.2f} {prefix}{unit}"
    return f"{value:,.2f} {unit}"


def report(p: Profile, m: Measured, r: dict[str, float], source: str) -> str:
    hit = r["hit_ratio"]
    inputs = ", ".join(f"{name}={getattr(p, name):g}" for name in Profile.__dataclass_fields__)
    lines = [
        "Inputs",
        f"  profile          {inputs}",
        f"  measured         {m.l1_rps:,.0f} L1 hits/s, {m.l2_rps:,.0f} L2 hits/s per process",
    ]
    for name, rate, share in m.workloads:
        lines.append(f"  transform        {rate:6.1f}/s per core x {share:4.0%} of misses: {name}")
    lines += [
        "Traffic",
        f"  views a day      = {p.dau:,.0f} users x {p.views_per_user:g} views "
        f"= {r['views_per_day']:,.0f}",
        f"  average QPS      = {r['views_per_day']:,.0f} / 86,400 s = {r['avg_qps']:,.1f}",
        f"  peak QPS         = {r['avg_qps']:,.1f} x {p.peak_factor:g} = {r['peak_qps']:,.1f}",
        "Origin",
        f"  peak QPS         = {r['peak_qps']:,.1f} x (1 - {hit:.2f} hit ratio) "
        f"= {r['origin_peak_qps']:,.1f} (average {r['origin_avg_qps']:,.1f})",
        f"  storage          = ({p.images:,.0f} images + {p.uploads_per_day:,.0f}/day x "
        f"{p.retention_days:g} days) x {p.original_kb:,.0f} KB = {_si(r['storage_bytes'], 'B')}",
        "Caches",
        f"  working set      = {p.images:,.0f} images x {p.variants_per_image:g} variants x "
        f"{p.variant_kb:,.0f} KB = {_si(r['working_set_bytes'], 'B')}",
        f"  for {hit:.0%} hits   = {r['cache_bytes'] / r['working_set_bytes']:.1%} of it "
        f"= {_si(r['cache_bytes'], 'B')} across the fleet (S3-FIFO, Zipf {p.alpha:g})",
        f"  memory share     = {p.l1_share:.0%} of hits from L1 = "
        f"{_si(r['memory_bytes'], 'B')} across the fleet",
        f"  L1 per node      = {_si(r['l1_per_node_bytes'], 'B')} (EDGE_MEMORY_CACHE_MB)",
        f"  L2 per node      = {_si(r['l2_per_node_bytes'], 'B')} (EDGE_DISK_CACHE_MB; "
        "the load balancer hashes URLs, so nodes hold disjoint shares)",
        f"  L3 shared        = {_si(r['l3_bytes'], 'B')} (Redis/memcached for the fleet)",
        "Egress",
        f"  peak             = {r['peak_qps']:,.1f} x {p.variant_kb:,.0f} KB x 8 = "
        f"{_si(r['egress_peak_bits'], 'bit/s')}",
        f"  a day            = {r['views_per_day']:,.0f} x {p.variant_kb:,.0f} KB = "
        f"{_si(r['egress_day_bytes'], 'B')}",
        f"  origin -> edges  = {r['origin_peak_qps']:,.1f} misses/s x {p.original_kb:,.0f} KB "
        f"x 8 = {_si(r['fill_peak_bits'], 'bit/s')} at peak",
        f"Edge nodes (measured: {source})",
        f"  hit path         = {m.l1_rps:,.0f} L1 hits/s and {m.l2_rps:,.0f} L2 hits/s per "
        f"core = {r['hit_cores']:.3f} cores",
        f"  transforms       = {r['origin_peak_qps']:,.1f}/s / {m.transform_per_core:.1f} per "
        f"core (the mix's weighted harmonic mean) = {r['transform_cores']:.2f} cores",
        f"  CPU              = {r['hit_cores'] + r['transform_cores']:.2f} cores / "
        f"({p.cores_per_node} cores x {p.utilisation:.0%}) = {r['cpu_nodes']:.2f} nodes",
        f"  network          = ({_si(r['egress_peak_bits'], 'bit/s')} out + "
        f"{_si(r['fill_peak_bits'], 'bit/s')} in) / ({p.node_gbps:g} Gbit/s x "
        f"{p.utilisation:.0%}) = {r['bandwidth_nodes']:.2f} nodes",
        f"  nodes            = ceil(max) + 1 spare = {r['nodes']:.0f} nodes of "
        f"{p.cores_per_node} cores",
        "Assumptions",
        "  - one edge process per core (EDGE_PROCESSES=0); hits scale with cores, as measured",
        "  - every miss is a transform of a fetched source (the source cache makes it fewer)",
        "  - the hit-ratio curve simulates up to 400 requests per variant (more change little)",
        f"  - popularity is Zipf with alpha {p.alpha:g}; variants are equally large",
        f"  - nodes run at most {p.utilisation:.0%} busy at peak; one spare node for failures",
        "  - bench figures come from the bench machine; scale them by your cores' speed",
    ]
    if r["reachable_hit"] < p.target_hit:
        lines.append(
            f"  ! a {p.target_hit:.0%} hit ratio is out of reach: with these requests per "
            f"variant, even a cache of the whole working set hits {r['reachable_hit']:.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests plan", description=__doc__)
    add = parser.add_argument
    add("--dau", type=float, default=1_000_000, help="daily active users")
    add("--views-per-user", type=float, default=20, help="image views per user per day")
    add("--peak-factor", type=float, default=3, help="peak QPS over the day's average")
    add("--images", type=float, default=100_000, help="distinct original images")
    add("--variants-per-image", type=float, default=5)
    add("--original-kb", type=float, default=2000)
    add("--variant-kb", type=float, default=50)
    add("--retention-days", type=float, default=365)
    add("--uploads-per-day", type=float, default=1000)
    add("--target-hit", type=float, default=0.95)
    add("--l1-share", type=float, default=0.8, help="share of hits served from memory")
    add("--alpha", type=float, default=0.9, help="Zipf popularity exponent")
    add("--cores-per-node", type=int, default=8)
    add("--utilisation", type=float, default=0.6, help="busiest a node should be at peak")
    add("--node-gbps", type=float, default=10.0, help="each node's network link, Gbit/s")
    add(
        "--mix",
        default="",
        help="share of misses per transform workload, by the start of its name in the "
        "bench results: '2560x1600 JPEG -> 400 px WebP=0.6,5120=0.1' (the rest share "
        "what is left equally)",
    )
    add("--bench", type=Path, default=RESULTS, help="results of python -m loadtests bench")
    args = parser.parse_args(argv)
    if not args.bench.exists():
        parser.error(f"{args.bench} is missing: run python -m loadtests bench first")
    profile = Profile(
        **{
            name: getattr(args, name)
            for name in Profile.__dataclass_fields__
            if hasattr(args, name)
        }
    )
    try:
        mix = {
            name.strip(): float(share)
            for name, _, share in (part.rpartition("=") for part in args.mix.split(",") if part)
        }
        measured = Measured.from_results(args.bench, mix)
    except ValueError as error:
        parser.error(f"--mix: {error}")
    views_per_variant = (
        profile.dau * profile.views_per_user / (profile.images * profile.variants_per_image)
    )
    curve = simulated_curve(profile.alpha, views_per_variant)
    print(report(profile, measured, plan(profile, measured, curve), str(args.bench)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
