"""Table of the bad-input and fault cases the test suite covers, by surface, with the expected outcome.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bad_input_cases.py [--details]

A case is one checked bad input: every ``pytest.raises`` / ``pytest.warns`` block, every ``caplog``
warning check and every ``returncode == 2`` check in a test function, counted once per collected test id
(parametrized inputs count separately). The test ids come from ``pytest --collect-only``; the checks from
the test functions' source (``ast``).
"""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# first matching prefix of the test file (or test file::function) names the surface
SURFACES = [
    ("tests/test_command_errors.py", "every command (exit status 2)"),
    ("tests/modeling/test_bad_model_folders.py", "model folders on disk"),
    ("tests/modeling", "model / config"),
    ("tests/losses", "model / losses"),
    ("tests/backbones", "model / backbones"),
    ("tests/utils", "model / utils"),
    ("tests/dataset_scripts", "data"),
    ("tests/evaluation/test_metrics.py", "metrics"),
    ("tests/evaluation/test_crcgs_map_module.py", "metrics (evaluate module)"),
    ("tests/evaluation/test_baselines.py", "metrics (baselines)"),
    ("tests/evaluation/test_evaluation_report.py", "evaluation report"),
    ("tests/evaluation/test_evaluate_cli.py", "CLI run_evaluation.py"),
    ("tests/evaluation/test_hash_index.py", "index (HashIndex)"),
    ("tests/evaluation/test_index_cli.py", "CLI build_index.py / search.py"),
    ("tests/encoding", "CLI encode_dataset.py / shards"),
    ("tests/training/test_training_arguments.py", "CLI train.py arguments"),
    ("tests/training/test_run_files.py", "faults: output folder protection"),
    ("tests/training/test_resume_rng_warning.py", "faults: resume"),
    ("tests/training/test_training_run.py", "CLI train.py / faults: resume, overwrite"),
    ("tests/training", "training"),
    ("tests", "other"),
]


def _surface(path: str) -> str:
    return next(name for prefix, name in SURFACES if path.startswith(prefix))


def _checks(func: ast.FunctionDef) -> collections.Counter:
    """Outcome -> number of bad-input checks in one test function."""
    found: collections.Counter = collections.Counter()
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "pytest" and node.func.attr in ("raises", "warns"):
                kind = ast.unparse(node.args[0]) if node.args else "?"
                found[f"{'raises' if node.func.attr == 'raises' else 'warns'} {kind}"] += 1
        if isinstance(node, ast.Compare) and ast.unparse(node).endswith("returncode == 2"):
            found["exit 2 + one error: line"] += 1
    if "caplog" in ast.unparse(func) and "WARNING" in ast.unparse(func):
        found["logged warning"] += 1
    return found


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}


def main() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    ids = [line for line in collected if "::" in line]
    per_function = collections.Counter(line.split("[", 1)[0] for line in ids)
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    sources: dict[str, dict[str, ast.FunctionDef]] = {}
    for test, instances in per_function.items():
        file, name = test.split("::", 1)
        name = name.split("::")[-1]
        functions = sources.setdefault(file, _functions(REPO / file))
        if name not in functions:
            continue
        for outcome, count in _checks(functions[name]).items():
            rows[(_surface(file), outcome)][test] += count * instances
    by_surface: dict[str, int] = collections.Counter()
    print("| surface | outcome | cases | tests |")
    print("|---|---|---:|---:|")
    for (surface, outcome), tests in sorted(rows.items()):
        cases = sum(tests.values())
        by_surface[surface] += cases
        print(f"| {surface} | {outcome} | {cases} | {len(tests)} |")
        if "--details" in sys.argv:
            for test, count in sorted(tests.items()):
                print(f"|  | {test} | {count} | |")
    print()
    print("| surface | cases |")
    print("|---|---:|")
    for surface, cases in sorted(by_surface.items()):
        print(f"| {surface} | {cases} |")
    print(f"\ntotal bad-input cases covered: {sum(by_surface.values())} (from {len(ids)} collected test ids)")


if __name__ == "__main__":
    main()
