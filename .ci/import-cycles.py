#!/usr/bin/env python3
"""Fails when modules of a workspace crate import each other in a circle.

Cargo already refuses cycles between crates; inside a crate nothing does. This
reads every crate's `src/` as text, takes each file's `crate::a::b` and
`super::x` paths as arrows between modules (two levels deep: `http::ops`),
and reports any circle. Arrows from a child to its parent module (`super::
AppState`) are not circles in this sense and are not counted.
"""
import collections
import os
import re
import sys

CRATES = ["core", "pg", "server", "projections", "sdk", "bench", "tests"]


def module_path(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def cycles(src_dir):
    files = {}
    for root, _, names in os.walk(src_dir):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[path] = module_path(os.path.relpath(path, src_dir))
    nodes = {tuple(m[:2]) for m in files.values()}
    graph = collections.defaultdict(set)
    for path, mod in files.items():
        text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
        # Comments and docs name modules without importing them.
        text = "\n".join(line.split("//")[0] for line in text.splitlines())
        here = tuple(mod[:2])
        for target in re.findall(r"crate::((?:[a-z_]+::)*[a-z_]+)", text):
            graph[here].add(tuple(target.split("::")[:2]))
        for target in re.findall(r"\bsuper::([a-z_]+)", text):
            graph[here].add(tuple((mod[:-1] + [target])[:2]))
    graph = {u: {v for v in vs if v != u and v in nodes} for u, vs in graph.items()}
    found, color = [], {}

    def visit(u, stack):
        color[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if color.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in color:
                visit(v, stack)
        stack.pop()
        color[u] = 2

    for u in sorted(graph):
        if u not in color:
            visit(u, [])
    return found, len(nodes)


def main():
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    failed = False
    for crate in CRATES:
        found, count = cycles(os.path.join(top, crate, "src"))
        for circle in found:
            failed = True
            print(f"{crate}: import circle: " + " -> ".join("::".join(m) or "crate" for m in circle))
        if not found:
            print(f"{crate}: no import circle among {count} modules")
    sys.exit(1 if failed else 0)


main()
