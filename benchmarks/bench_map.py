"""Speed and memory of ``modeling_crcgs.retrieval.metrics.mean_average_precision`` (mAP@all).

Compares, in one process on the same random data:

* new: the compiled route (numba kernels, ``modeling_crcgs/retrieval/_metrics_numba.py``), 1 and 2 threads;
* current: the numpy route (chunked, vectorized popcounts and stable argsorts; what runs without numba),
  1 thread and 2 threads (its opt-in chunk thread pool);
* (a) the per-query numpy loop most hashing repositories use (DCMH/DJSRH style: Hamming distance by a
  dot product, ``argsort``, relevance gathered, cumulative precision). Two variants: with the default
  ``np.argsort`` (quicksort: NOT tie-exact, its mAP moves when codes collide) and with
  ``kind="stable"`` (the documented tie rule; equal to ours);
* (b) a pure-Python double loop over queries and ranking positions, like the authors' release
  (``utils/evaluate.py``), with a stable order; timed on a subset of queries and extrapolated linearly.

Then the MS-COCO scale (query 5000 x database 117218, 80 labels): time and peak memory (peak RSS over
the process baseline, sampled every 5 ms by a thread: the kernels release the GIL); the cosine route
(compiled radix sort vs numpy stable argsort, both after the same float32 product); and the first-call
cost of the compiled route in fresh processes (cold numba cache: compilation; warm: cache load).

Run from the repository root: ``python -m benchmarks.bench_map`` (a few minutes on 2 cores; ``--quick`` for a smaller run).
Timings are wall-clock on a shared machine, best of several interleaved repeats, with the load average
printed: compare the ratios, which are measured in the same process. ``--background_load N`` keeps N
busy-looping processes running during the timings. "N threads" means ``torch.set_num_threads(N)`` plus
``CRCGS_MAP_THREADS=N`` (numba threads of the compiled route; chunk thread pool of the numpy route).
"""

from __future__ import annotations

import os

# The baselines' per-query products (one row times the database) gain nothing from BLAS threads, and
# spinning BLAS threads make them many times slower on a shared 2-core machine: pin numpy's BLAS to one
# thread (before numpy is imported) so that baseline (a) is measured at its best.
if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import multiprocessing  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modeling_crcgs.retrieval import metrics  # noqa: E402
from modeling_crcgs.retrieval.metrics import mean_average_precision  # noqa: E402
from tests.map_baselines import numpy_loop_map, python_loop_map, random_problem  # noqa: E402


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak resident set size over the value at entry, sampled every 5 ms by a thread."""

    def __enter__(self) -> PeakRss:
        self.base = current_rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def with_threads(num_threads: int, fn, *args, **kwargs):
    """Call with ``num_threads`` torch threads and ``CRCGS_MAP_THREADS=num_threads``."""
    previous, previous_pool = torch.get_num_threads(), os.environ.get("CRCGS_MAP_THREADS")
    torch.set_num_threads(num_threads)
    os.environ["CRCGS_MAP_THREADS"] = str(num_threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(previous)
        if previous_pool is None:
            del os.environ["CRCGS_MAP_THREADS"]
        else:
            os.environ["CRCGS_MAP_THREADS"] = previous_pool


@contextlib.contextmanager
def numpy_route() -> Iterator[None]:
    """The metrics as they run without numba (the route before the compiled kernels)."""
    kernels = metrics._compiled_kernels
    metrics._compiled_kernels = lambda: None
    try:
        yield
    finally:
        metrics._compiled_kernels = kernels


def current_map(num_threads: int, *args, **kwargs) -> float:
    with numpy_route():
        return with_threads(num_threads, mean_average_precision, *args, **kwargs)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # background load: one busy core
    while not stop.is_set():
        sum(range(10_000))


def best_of(methods: dict, repeats: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Best wall time, value and best CPU time (process, all threads) of each method, repeats interleaved
    (the machine is shared: CPU time is what the method costs, wall time what the load lets it take)."""
    best: dict[str, float] = {}
    values: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            cpu_start = time.process_time()
            seconds, values[name] = timed(fn)
            cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - cpu_start)
            best[name] = min(best.get(name, float("inf")), seconds)
    return best, values, cpu


def bench_flickr_scale(num_query: int, num_database: int, python_subset: int, repeats: int) -> None:
    print(f"== query {num_query} x database {num_database}, 64 bits, 24 labels (mAP@all, Hamming) ==")
    print(f"({load()})")
    qc, dc, ql, dl = random_problem(num_query, num_database, 64, 24, seed=0)
    mean_average_precision(qc[:8], dc, ql[:8], dl)  # warm-up (imports, numba cache, thread pool)
    current_map(1, qc[:8], dc, ql[:8], dl)
    methods = {
        "new: compiled, 1 thread": lambda: with_threads(1, mean_average_precision, qc, dc, ql, dl),
        "new: compiled, 2 threads": lambda: with_threads(2, mean_average_precision, qc, dc, ql, dl),
        f"new: compiled, default ({metrics._compiled_threads()} now)": lambda: mean_average_precision(
            qc, dc, ql, dl
        ),
        "current: numpy route, 1 thread": lambda: current_map(1, qc, dc, ql, dl),
        "current: numpy route, 2 threads": lambda: current_map(2, qc, dc, ql, dl),
        "(a) numpy loop, np.argsort default": lambda: numpy_loop_map(qc, dc, ql, dl, stable=False),
        "(a) numpy loop, stable argsort": lambda: numpy_loop_map(qc, dc, ql, dl, stable=True),
    }
    notes = {
        "(a) numpy loop, np.argsort default": "not tie-exact",
        "(a) numpy loop, stable argsort": "tie-exact",
    }
    best, values, cpu = best_of(methods, repeats)
    t_py_sub, m_py_sub = timed(python_loop_map, qc[:python_subset], dc, ql[:python_subset], dl)
    name_py = f"(b) python double loop (x{num_query}/{python_subset})"
    best[name_py], values[name_py] = t_py_sub * num_query / python_subset, m_py_sub
    notes[name_py] = f"timed once on {python_subset} queries, extrapolated linearly; mAP of that subset"
    m_ours_sub = mean_average_precision(qc[:python_subset], dc, ql[:python_subset], dl)

    print(f"{'method':48s} {'seconds':>9s} {'CPU s':>7s} {'mAP@all':>20s}  note (best of {repeats})")
    for name, seconds in best.items():
        cpu_s = f"{cpu[name]:7.3f}" if name in cpu else " " * 7
        print(f"{name:48s} {seconds:9.3f} {cpu_s} {values[name]:20.17f}  {notes.get(name, '')}")
    new_1, new_2 = best["new: compiled, 1 thread"], best["new: compiled, 2 threads"]
    for name in list(methods)[3:] + [name_py]:
        print(
            f"speed-up of new vs {name[:34]:34s}: {best[name] / new_1:7.1f}x (1 thread), {best[name] / new_2:.1f}x (2 threads)"
        )
    new = values["new: compiled, 1 thread"]
    print(
        f"equal results: new 2 threads == 1 thread: {values['new: compiled, 2 threads'] == new}; "
        f"new == (a) stable (abs diff): {abs(new - values['(a) numpy loop, stable argsort']):.1e}; "
        f"new == current (abs diff): {abs(new - values['current: numpy route, 1 thread']):.1e}; "
        f"new == (b) on its subset (abs diff): {abs(m_ours_sub - m_py_sub):.1e}; "
        f"(a) default argsort differs by {values['(a) numpy loop, np.argsort default'] - new:+.2e}"
    )
    print(f"({load()})")


def bench_coco_scale(num_query: int, num_database: int, repeats: int) -> None:
    print(f"\n== query {num_query} x database {num_database}, 64 bits, 80 labels (MS-COCO scale) ==")
    print(f"({load()})")
    qc, dc, ql, dl = random_problem(num_query, num_database, 64, 80, seed=1, label_rate=0.03)
    input_mib = sum(a.nbytes for a in (qc, dc, ql, dl)) / 2**20
    runs = {
        "new: compiled, 1 thread": lambda: with_threads(1, mean_average_precision, qc, dc, ql, dl),
        "new: compiled, 2 threads": lambda: with_threads(2, mean_average_precision, qc, dc, ql, dl),
        "current: numpy route, 2 threads": lambda: current_map(2, qc, dc, ql, dl),
    }
    results = {}
    for name, fn in runs.items():
        times, cpu_times, peaks = [], [], []
        for _ in range(repeats if name.startswith("new") else 1):
            cpu_start = time.process_time()
            with PeakRss() as rss:
                seconds, value = timed(fn)
            cpu_times.append(time.process_time() - cpu_start)
            times.append(seconds)
            peaks.append(rss.delta_mib)
        results[name] = value
        print(
            f"{name:34s} {min(times):6.2f} s, CPU {min(cpu_times):6.2f} s (best of {len(times)})  mAP@all {value:.15f}  "
            f"peak RSS over baseline {max(peaks):5.0f} MiB (inputs already resident: {input_mib:.0f} MiB)"
        )
    new = results["new: compiled, 1 thread"]
    print(
        f"equal results: new 2 threads == 1 thread: {results['new: compiled, 2 threads'] == new}; "
        f"new == current (abs diff): {abs(new - results['current: numpy route, 2 threads']):.1e}"
    )
    print(f"({load()})")


def bench_cosine(num_query: int, num_database: int, dim: int, repeats: int) -> None:
    print(f"\n== cosine: query {num_query} x database {num_database}, {dim}-d embeddings, 24 labels ==")
    print(f"({load()})")
    rng = np.random.default_rng(2)
    _, _, ql, dl = random_problem(num_query, num_database, 8, 24, seed=2)
    qe = rng.normal(size=(num_query, dim)).astype(np.float32)
    de = rng.normal(size=(num_database, dim)).astype(np.float32)
    mean_average_precision(qe[:8], de, ql[:8], dl, distance="cosine")  # warm-up
    methods = {
        "new: compiled radix sort, 1 thread": lambda: with_threads(
            1, mean_average_precision, qe, de, ql, dl, distance="cosine"
        ),
        "new: compiled radix sort, 2 threads": lambda: with_threads(
            2, mean_average_precision, qe, de, ql, dl, distance="cosine"
        ),
        "current: numpy stable argsort, 1 thread": lambda: current_map(1, qe, de, ql, dl, distance="cosine"),
        "current: numpy stable argsort, 2 threads": lambda: current_map(2, qe, de, ql, dl, distance="cosine"),
    }
    best, values, cpu = best_of(methods, repeats)
    for name, seconds in best.items():
        print(
            f"{name:44s} {seconds:7.3f} s  CPU {cpu[name]:7.3f} s  mAP@all {values[name]:.15f}  (best of {repeats})"
        )
    new = values["new: compiled radix sort, 1 thread"]
    current = values["current: numpy stable argsort, 1 thread"]
    print(
        f"speed-up of new vs current: {best['current: numpy stable argsort, 1 thread'] / best['new: compiled radix sort, 1 thread']:.1f}x "
        f"(1 thread), {best['current: numpy stable argsort, 2 threads'] / best['new: compiled radix sort, 2 threads']:.1f}x "
        f"(2 threads); new == current (abs diff): {abs(new - current):.1e}"
    )


_FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from modeling_crcgs.retrieval import metrics
imported = time.perf_counter()
codes = np.where(np.random.default_rng(0).random((50, 64)) < 0.5, 1, -1)
labels = np.eye(5, dtype=np.int8)[np.arange(50) % 5]
if {numpy_route}:
    metrics._compiled_kernels = lambda: None
metrics.mean_average_precision(codes, codes, labels, labels)
hamming = time.perf_counter()
metrics.mean_average_precision(codes.astype(np.float32), codes.astype(np.float32), labels, labels, distance="cosine")
cosine = time.perf_counter()
print(imported - start, hamming - imported, cosine - hamming)
"""


def bench_first_call() -> None:
    """Import and first calls (50 x 50 items) in fresh processes: numba cold cache / warm cache / no numba."""
    print(
        "\n== first call in a fresh process (import modeling_crcgs.retrieval.metrics, then a 50 x 50 problem) =="
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        for name, numpy_only in (
            ("compiled, cold cache", False),
            ("compiled, warm cache", False),
            ("numpy route", True),
        ):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL.format(numpy_route=numpy_only)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            ).stdout.split()
            imported, hamming, cosine = (float(x) for x in out[-3:])
            print(
                f"{name:22s} import {imported:5.2f} s, first Hamming call {hamming:6.3f} s, first cosine call {cosine:6.3f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems (smoke run)")
    parser.add_argument(
        "--background_load", type=int, default=0, help="busy-looping processes kept running meanwhile"
    )
    args = parser.parse_args()
    stop = multiprocessing.Event()
    spinners = [
        multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.background_load)
    ]
    for spinner in spinners:
        spinner.start()
    if spinners:
        print(f"(with {len(spinners)} busy-looping background processes)")
    try:
        run(args.quick)
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()


def run(quick: bool) -> None:
    if quick:
        bench_flickr_scale(200, 4000, python_subset=10, repeats=2)
        bench_coco_scale(500, 20000, repeats=2)
        bench_cosine(200, 4000, 64, repeats=2)
    else:
        bench_flickr_scale(2000, 18015, python_subset=40, repeats=5)
        bench_coco_scale(5000, 117218, repeats=3)
        bench_cosine(2000, 18015, 128, repeats=3)
    bench_first_call()


if __name__ == "__main__":
    main()
