"""Print the repository's size per top-level folder and its longest functions.

Counts the files git tracks (``git ls-files``): per top-level folder the number of files and of lines
(every file), then the ``--top`` longest Python functions and methods, measured with ``ast`` as
``end_lineno - lineno + 1`` of the ``def`` (decorators excluded, nested functions counted inside their
parent and on their own).

Usage: ``python scripts/code_stats.py [--repo DIR] [--top 10]``
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from collections import defaultdict
from pathlib import Path


def tracked_files(repo: Path) -> list[Path]:
    """The files git tracks under ``repo``, relative to it."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files"], check=True, capture_output=True, text=True)
    return [Path(line) for line in out.stdout.splitlines() if (repo / line).is_file()]


def folder_sizes(repo: Path, files: list[Path]) -> dict[str, tuple[int, int]]:
    """``{top-level folder (or "." for root files): (files, lines)}``."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in files:
        folder = path.parts[0] if len(path.parts) > 1 else "."
        with open(repo / path, "rb") as handle:
            lines = handle.read().count(b"\n")
        sizes[folder][0] += 1
        sizes[folder][1] += lines
    return {folder: (n, lines) for folder, (n, lines) in sorted(sizes.items())}


def function_lengths(repo: Path, files: list[Path]) -> list[tuple[int, str]]:
    """``(lines, "path:line qualified.name")`` for every function and method in the tracked Python files."""
    found: list[tuple[int, str]] = []
    for path in files:
        if path.suffix != ".py":
            continue
        tree = ast.parse((repo / path).read_text(encoding="utf-8"), filename=str(path))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        length = child.end_lineno - child.lineno + 1
                        found.append((length, f"{path}:{child.lineno} {name}"))
                    stack.append((child, f"{name}."))
                else:
                    stack.append((child, prefix))
    return sorted(found, key=lambda item: (-item[0], item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    files = tracked_files(args.repo)
    sizes = folder_sizes(args.repo, files)
    print("| folder | files | lines |\n|---|---:|---:|")
    for folder, (count, lines) in sizes.items():
        print(f"| {folder} | {count} | {lines} |")
    total_files = sum(count for count, _ in sizes.values())
    total_lines = sum(lines for _, lines in sizes.values())
    print(f"| total | {total_files} | {total_lines} |\n")
    print(f"| longest functions (top {args.top}) | lines |\n|---|---:|")
    for length, where in function_lengths(args.repo, files)[: args.top]:
        print(f"| {where} | {length} |")


if __name__ == "__main__":
    main()
