"""Speed and memory of ``modeling_crcgs.retrieval.metrics.mean_average_precision`` (mAP@all, Hamming ranking).

Compares, in one process on the same random data:

* ours: chunked, vectorized torch (``mean_average_precision``), with 1 thread and with all threads;
* (a) the per-query numpy loop most hashing repositories use (DCMH/DJSRH style: Hamming distance by a
  dot product, ``argsort``, relevance gathered, cumulative precision). Two variants: with the default
  ``np.argsort`` (quicksort: NOT tie-exact, its mAP moves when codes collide) and with
  ``kind="stable"`` (the documented tie rule; equal to ours);
* (b) a pure-Python double loop over queries and ranking positions, like the authors' release
  (``utils/evaluate.py``), with a stable order; timed on a subset of queries and extrapolated linearly.

Then the MS-COCO scale (query 5000 x database 117218, 80 labels): time and peak memory (peak RSS over
the process baseline, sampled every 5 ms, plus the tracemalloc peak of Python/numpy allocations).

Run from the repository root: ``python -m benchmarks.bench_map`` (about 1-2 minutes on 2 cores; ``--quick`` for a smaller run).
Timings are wall-clock on a shared machine: compare the ratios, which are measured in the same process.
``--background_load N`` keeps N busy-looping processes running during the timings (a loaded machine:
does the thread pool of the bit path still pay off?). "N threads" below means ``torch.set_num_threads(N)``
plus the opt-in thread pool ``CRCGS_MAP_THREADS=N``; results are bit-identical for any number (checked).
"""

from __future__ import annotations

import os

# The baselines' per-query products (one row times the database) gain nothing from BLAS threads, and
# spinning BLAS threads make them many times slower on a shared 2-core machine: pin numpy's BLAS to one
# thread (before numpy is imported) so that baseline (a) is measured at its best.
if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import torch  # noqa: E402

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
    """Call with ``num_threads`` torch threads and bit-path thread pool (``CRCGS_MAP_THREADS``)."""
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


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # background load: one busy core
    while not stop.is_set():
        sum(range(10_000))


def bench_flickr_scale(num_query: int, num_database: int, python_subset: int, repeats: int) -> None:
    print(f"== query {num_query} x database {num_database}, 64 bits, 24 labels (mAP@all, Hamming) ==")
    qc, dc, ql, dl = random_problem(num_query, num_database, 64, 24, seed=0)
    threads = torch.get_num_threads()
    mean_average_precision(qc[:8], dc, ql[:8], dl)  # warm-up (imports, allocator)
    methods = {
        f"ours, {threads} threads (thread pool)": lambda: with_threads(
            threads, mean_average_precision, qc, dc, ql, dl
        ),
        "ours, 1 torch thread (no thread pool)": lambda: with_threads(
            1, mean_average_precision, qc, dc, ql, dl
        ),
        "(a) numpy loop, np.argsort default": lambda: numpy_loop_map(qc, dc, ql, dl, stable=False),
        "(a) numpy loop, stable argsort": lambda: numpy_loop_map(qc, dc, ql, dl, stable=True),
    }
    notes = {
        "(a) numpy loop, np.argsort default": "not tie-exact",
        "(a) numpy loop, stable argsort": "tie-exact",
    }
    best: dict[str, float] = {}
    values: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, best of `repeats`: the machine is shared
        for name, fn in methods.items():
            seconds, values[name] = timed(fn)
            best[name] = min(best.get(name, float("inf")), seconds)
    t_py_sub, m_py_sub = timed(python_loop_map, qc[:python_subset], dc, ql[:python_subset], dl)
    name_py = f"(b) python double loop (x{num_query}/{python_subset})"
    best[name_py], values[name_py] = t_py_sub * num_query / python_subset, m_py_sub
    notes[name_py] = f"timed once on {python_subset} queries, extrapolated linearly; mAP of that subset"
    m_ours_sub = mean_average_precision(qc[:python_subset], dc, ql[:python_subset], dl)

    print(f"{'method':48s} {'seconds':>9s} {'mAP@all':>20s}  note (best of {repeats})")
    for name, seconds in best.items():
        print(f"{name:48s} {seconds:9.3f} {values[name]:20.17f}  {notes.get(name, '')}")
    ours_n, ours_1 = (
        best[f"ours, {threads} threads (thread pool)"],
        best["ours, 1 torch thread (no thread pool)"],
    )
    for name in ("(a) numpy loop, np.argsort default", "(a) numpy loop, stable argsort", name_py):
        print(
            f"speed-up vs {name[:34]:34s}: {best[name] / ours_1:7.1f}x (1 thread), "
            f"{best[name] / ours_n:.1f}x ({threads} threads)"
        )
    ours = values["ours, 1 torch thread (no thread pool)"]
    print(
        f"equal results: ours {threads} threads == 1 thread: {values[f'ours, {threads} threads (thread pool)'] == ours}; "
        f"ours == (a) stable: {abs(ours - values['(a) numpy loop, stable argsort']) < 1e-12}; "
        f"ours == (b) on its subset: {abs(m_ours_sub - m_py_sub) < 1e-12}; "
        f"(a) default argsort differs by {values['(a) numpy loop, np.argsort default'] - ours:+.2e}"
    )


def bench_coco_scale(num_query: int, num_database: int) -> None:
    print(f"\n== query {num_query} x database {num_database}, 64 bits, 80 labels (MS-COCO scale) ==")
    qc, dc, ql, dl = random_problem(num_query, num_database, 64, 80, seed=1, label_rate=0.03)
    input_mib = sum(a.nbytes for a in (qc, dc, ql, dl)) / 2**20
    threads = torch.get_num_threads()
    for num_threads in sorted({1, threads}):
        tracemalloc.start()
        with PeakRss() as rss:
            seconds, value = timed(with_threads, num_threads, mean_average_precision, qc, dc, ql, dl)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"mAP@all {value:.6f} in {seconds:.2f} s ({num_threads} threads)")
        print(
            f"  peak RSS over baseline: {rss.delta_mib:.0f} MiB (inputs already resident: {input_mib:.0f} MiB); "
            f"tracemalloc peak (Python/numpy allocations): {traced_peak / 2**20:.0f} MiB; "
            f"process max RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
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
        bench_coco_scale(500, 20000)
    else:
        bench_flickr_scale(2000, 18015, python_subset=40, repeats=3)
        bench_coco_scale(5000, 117218)


if __name__ == "__main__":
    main()
