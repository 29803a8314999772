"""Locust suites for the edge: `python -m loadtests run` drives them (see docs/load-testing.md).

    locust -f loadtests/locustfile.py --host http://edge:8080 HotUser

User classes, one per scenario:
- HotUser: Zipf-popular variants (alpha 0.9) of the image set: the cache-hit path.
- ColdUser: never-seen variants (width, quality, format, fit): the transform path.
- MixedUser: hot and cold in LOADTEST_MIX (default 95:5), the shape of real traffic.
- StampedeUser: every user asks for the same new variant at the same moment, once a
  second: coalescing.
- DegradedUser: mixed traffic; the runner stops the origin partway through.

Every response is checked (status, content type, and on a sample that the image decodes
to the asked width) and reported under `<scenario> <outcome>`: the outcome is read from
`Cache-Status` (hit:memory, hit:disk, hit:shared, miss, collapsed, stale, revalidated,
stale-if-error) or the error status, so Locust's tables separate hits from misses.

Set-up: `python -m loadtests run` uploads the images and warms the edge (for hot and
mixed) before Locust starts, then passes LOADTEST_IMAGES (`key:width,...`). Run by hand,
with LOADTEST_ORIGIN, LOADTEST_ORIGIN_KEY and LOADTEST_IMAGES_DIR, `test_start` uploads
them itself (no warm-up: Locust's run time would count it). LOADTEST_SIGNING_KEY signs
URLs; without it they are unsigned.

With `--csv PREFIX`, the tables `python -m loadtests run` reads are PREFIX_final_stats.csv
and PREFIX_final_failures.csv, written when Locust quits: its own PREFIX_stats.csv is
rewritten once a second while users run and not after, so requests still in flight when
the run time ends (all of a short run's, on a loaded machine) are missing from it.
"""

from __future__ import annotations

import bisect
import csv
import os
import random
import time
from pathlib import Path
from typing import Any, ClassVar

import pyvips
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests.suite import (
    ACCEPTS,
    Image,
    Variant,
    edge_path,
    hot_variants,
    parse_images,
    upload,
)

SAMPLE_EVERY = 20  # decode one response in this many to check its size
OUTCOMES = {
    "hit; detail=memory": "hit:memory",
    "hit; detail=disk": "hit:disk",
    "hit; detail=shared": "hit:shared",
    "collapsed": "collapsed",
    "stale-if-error": "stale-if-error",
    "stale-while-revalidate": "stale",
    "fwd=stale": "revalidated",
    "uri-miss": "miss",
}


class ImageSet:
    """The origin keys and widths the users ask for, and the Zipf popularity of variants."""

    images: ClassVar[list[Image]] = []
    variants: ClassVar[list[Variant]] = []
    cumulative: ClassVar[list[float]] = []

    @classmethod
    def load(cls, images: list[Image]) -> None:
        cls.images = images
        cls.variants, cls.cumulative = hot_variants(images)

    @classmethod
    def popular(cls, rng: random.Random) -> Variant:
        point = rng.random() * cls.cumulative[-1]
        return cls.variants[bisect.bisect_left(cls.cumulative, point)]


class Run:
    environment: ClassVar[Environment | None] = None


@events.init.add_listener
def _keep(environment: Environment, **_: Any) -> None:
    Run.environment = environment


@events.quit.add_listener
def _final_tables(**_: Any) -> None:
    """The stats and failures once every user has stopped (fired after the runner quits)."""
    environment = Run.environment
    prefix = environment and environment.parsed_options and environment.parsed_options.csv_prefix
    if not environment or not prefix:
        return
    tables = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for name, write in (("stats", tables.requests_csv), ("failures", tables.failures_csv)):
        with open(f"{prefix}_final_{name}.csv", "w", newline="") as f:
            write(csv.writer(f))


@events.test_start.add_listener
def _set_up(environment: Any, **_: Any) -> None:
    origin = os.environ.get("LOADTEST_ORIGIN")
    api_key = os.environ.get("LOADTEST_ORIGIN_KEY")
    if origin and api_key:
        images = upload(origin, api_key, Path(os.environ["LOADTEST_IMAGES_DIR"]))
    else:
        images = parse_images(os.environ.get("LOADTEST_IMAGES", ""))
    if not images:
        raise RuntimeError("no images: set LOADTEST_ORIGIN(+_KEY) and _IMAGES_DIR, or _IMAGES")
    ImageSet.load(images)


class EdgeUser(FastHttpUser):
    abstract = True
    scenario = "edge"
    warm = False  # the runner asks for every hot variant before the run (hot, mixed)
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.key = os.environ.get("LOADTEST_SIGNING_KEY") or None
        self.count = 0

    def url(self, options: str, source: str) -> str:
        return edge_path(options, source, self.key)

    def accept(self) -> str:
        point = self.rng.random()
        for header, share in ACCEPTS:
            if point < share:
                return header
            point -= share
        return ACCEPTS[-1][0]

    sheds = False  # a 503 with Retry-After is the expected answer (burst), not a failure

    def ask(self, options: str, source: str, expect_width: int | None) -> None:
        self.count += 1
        with self.client.get(
            self.url(options, source),
            headers={"Accept": self.accept()},
            name=self.scenario,
            catch_response=True,
        ) as response:
            response.request_meta["name"] = f"{self.scenario} {outcome(response)}"
            problem = check(response, expect_width if self.count % SAMPLE_EVERY == 0 else None)
            if problem and self.sheds and shed(response):
                problem = None
            if problem:
                response.failure(problem)
            else:
                response.success()

    def hot(self) -> None:
        key, source_width, asked = ImageSet.popular(self.rng)
        self.ask(f"w={asked},f=auto", key, min(asked, source_width))

    def cold(self) -> None:
        key, source_width = self.rng.choice(ImageSet.images)
        width = self.rng.randrange(64, 2049)
        quality = self.rng.randrange(40, 96)
        fmt = self.rng.choice(("webp", "jpeg", "avif", "png"))
        fit = self.rng.choice(("scale-down", "contain", "cover"))
        expected = min(width, source_width) if fit == "scale-down" else width
        # cover and contain without a height keep the aspect ratio at the asked width
        self.ask(f"w={width},q={quality},f={fmt},fit={fit}", key, expected)


def shed(response: Any) -> bool:
    """Load shedding as the contract says: 503 with a Retry-After."""
    return bool(response.status_code == 503 and response.headers.get("retry-after"))


def outcome(response: Any) -> str:
    status = response.status_code
    if shed(response):
        return "shed"
    if status != 200:
        return f"error:{status}" if status else "error:connection"
    cache_status = response.headers.get("cache-status", "")
    for marker, name in OUTCOMES.items():
        if marker in cache_status:
            return name
    return "other"


def check(response: Any, width: int | None) -> str | None:
    if response.status_code != 200:
        return f"status {response.status_code}"
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("image/"):
        return f"content type {content_type!r}"
    if width is not None:
        try:
            got = pyvips.Image.new_from_buffer(response.content, "").width
        except pyvips.Error:
            return "body does not decode"
        if got != width:
            return f"width {got}, expected {width}"
    return None


class HotUser(EdgeUser):
    scenario = "hot"
    warm = True

    @task
    def popular(self) -> None:
        self.hot()


class ColdUser(EdgeUser):
    scenario = "cold"

    @task
    def new_variant(self) -> None:
        self.cold()


def _mix() -> tuple[int, int]:
    hot, _, cold = os.environ.get("LOADTEST_MIX", "95:5").partition(":")
    return int(hot), int(cold or 0)


class MixedUser(EdgeUser):
    scenario = "mixed"
    warm = True
    HOT, COLD = _mix()

    @task(HOT)
    def popular(self) -> None:
        self.hot()

    @task(COLD)
    def new_variant(self) -> None:
        self.cold()


class DegradedUser(MixedUser):
    scenario = "degraded"


class StampedeUser(EdgeUser):
    """Once a second every user asks for that second's new variant of one image."""

    scenario = "stampede"

    def wait_time(self) -> float:
        return 1.0 - time.time() % 1.0  # sleep to the next second: all users start together

    @task
    def same_new_variant(self) -> None:
        second = int(time.time())
        key, source_width = ImageSet.images[second % len(ImageSet.images)]
        # a width and quality no other second uses (within a day of runs)
        width = 200 + second % 600
        self.ask(f"w={width},q={30 + second % 60},f=webp", key, min(width, source_width))


class BurstHotUser(HotUser):
    """The burst's readers of popular variants: they must keep getting hits."""

    scenario = "burst-hot"
    fixed_count = int(os.environ.get("LOADTEST_HOT_USERS", "4"))


class BurstColdUser(ColdUser):
    """The burst itself: new variants at LOADTEST_COLD_RATE requests/s per user (the
    runner sets it to 4x the measured transform capacity over all of them); every user
    not reading popular variants is one of these."""

    scenario = "burst-cold"
    sheds = True
    wait_time = constant_throughput(float(os.environ.get("LOADTEST_COLD_RATE", "1")))


class CeilingUser(FastHttpUser):
    """The generator's own limit: the same client against a trivial server."""

    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get("/ceiling", name="ceiling")
