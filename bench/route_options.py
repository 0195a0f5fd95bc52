"""The command line of bench/route_bench.py, and the check that its stores are its own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cti_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


# --- options ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    duration_s: float
    warmup_s: float
    customers: int
    rates: tuple[int, ...]
    concurrency: tuple[int, ...]
    info_concurrency: int
    database_url: str
    redis_url: str
    poisson: bool
    seed: int
    strict: bool
    results_dir: Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers such as 1,8,32") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="route_bench",
        description="Route benchmark: the FastAGI route script over real TCP, real PostgreSQL.",
    )
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run, < ~60 s)")
    parser.add_argument("--duration", type=float, help="seconds per phase (default 15, quick 2)")
    parser.add_argument("--customers", type=int, default=100_000, help="demo customers (>= 6)")
    parser.add_argument(
        "--rates",
        type=_int_list,
        default=(100, 500, 1000),
        metavar="R,R,..",
        help="open-loop offered rates, routes/s (default 100,500,1000)",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=(1, 8, 32, 64),
        metavar="N,N,..",
        help="closed-loop concurrent callers (default 1,8,32,64)",
    )
    parser.add_argument(
        "--info-concurrency",
        type=int,
        default=32,
        metavar="N",
        help="closed-loop N of the extra run with CTI_LOG_LEVEL=info",
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="open-loop inter-arrival times (default poisson)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a database used only by the bench (its name must contain 'bench')",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="a Redis db used only by the bench (not db 0); flushed",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the call mix")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 15.0)
    if duration <= 0 or duration > 3600:
        parser.error("--duration must be between 0 and 3600 seconds")
    if not 6 <= args.customers <= 9_999_999:
        parser.error("--customers must be between 6 and 9,999,999")
    if args.info_concurrency < 1:
        parser.error("--info-concurrency must be positive")
    return Options(
        quick=args.quick,
        duration_s=duration,
        warmup_s=0.5 if args.quick else 2.0,
        customers=args.customers,
        rates=args.rates,
        concurrency=args.concurrency,
        info_concurrency=args.info_concurrency,
        database_url=args.database_url,
        redis_url=args.redis_url,
        poisson=args.arrivals == "poisson",
        seed=args.seed,
        strict=args.strict,
        results_dir=args.results_dir,
    )


def check_dedicated(options: Options) -> None:
    """Refuse stores that do not look reserved for the bench: we truncate and flush them."""
    database = urlsplit(options.database_url).path.lstrip("/")
    if "bench" not in database:
        raise BenchError(f"database {database!r}: use one whose name contains 'bench'")
    db = urlsplit(options.redis_url).path.lstrip("/")
    if not db.isdigit() or int(db) == 0:
        raise BenchError(f"{options.redis_url}: name a Redis db other than 0, e.g. .../15")
