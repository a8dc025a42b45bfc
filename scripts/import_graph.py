"""Draw srsalvage's import graph (ARCHITECTURE.md): one node per package of the given depth.

    .venv/bin/python scripts/import_graph.py            # DOT text on stdout
    .venv/bin/python scripts/import_graph.py --depth 3  # core.lvm.model, core.vhd.reader, ...
    .venv/bin/python scripts/import_graph.py | dot -Tsvg > imports.svg   # where graphviz is

The graph is grimp's (the library `lint-imports` checks the contracts in .importlinter with):
every `import` statement, function-local ones included, so a cycle hidden in a function shows.
"""

from __future__ import annotations

import argparse
import sys

import grimp

PACKAGES = ("core", "app", "widgets")


def node(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def edges(depth: int) -> dict[tuple[str, str], int]:
    """(importer node, imported node) -> number of (module, module) imports between them."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    out: dict[tuple[str, str], int] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = node(importer, depth), node(imported, depth)
            if a != b:
                out[a, b] = out.get((a, b), 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2,
                        help="dotted components per node (default 2: core.lvm, app.screens)")
    args = parser.parse_args(argv)
    lines = ["digraph srsalvage {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    for (a, b), count in sorted(edges(args.depth).items()):
        lines.append(f'  "{a}" -> "{b}" [label="{count}"];')
    lines.append("}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
