"""The package's layout rules (docs/design.md, "Which way dependencies point"): no import
circle between modules of echovlm_jax/, configs/, tfds_builders/ and benchmarks/, counting
imports inside functions too, and a top level that holds only the entry point and what every
part shares."""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("echovlm_jax", "configs", "tfds_builders", "benchmarks")
TOP_LEVEL = {"__init__", "main", "losses", "sharding", "distributed", "scoring"}


def _modules() -> dict[str, str]:
  out = {}
  for pkg in PACKAGES:
    for d, _, files in os.walk(os.path.join(REPO, pkg)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, ".")
          out[rel.removesuffix(".__init__")] = os.path.join(d, f)
  return out


def _imports(path: str, name: str, known: set[str]) -> set[str]:
  """Modules of `known` that the file imports anywhere (module level or inside functions)."""
  tree = ast.parse(open(path).read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import sub` imports the submodule; `from mod import name` the module.
      targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                 for a in node.names]
    else:
      continue
    for t in targets:
      while t and t not in known:
        t = t.rpartition(".")[0]
      if t and t != name and not name.startswith(t + "."):   # a package's own __init__
        out.add(t)
  return out


def test_no_import_circle():
  mods = _modules()
  graph = {m: _imports(p, m, set(mods)) for m, p in mods.items()}
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        cycles.append(stack[stack.index(n):] + [n])
      elif n not in state:
        visit(n)
    stack.pop()
    state[m] = "done"
  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_top_level_holds_only_entry_points_and_shared_parts():
  top = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "echovlm_jax"))
         if f.endswith(".py")}
  assert top == TOP_LEVEL, top ^ TOP_LEVEL
