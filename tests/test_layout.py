"""The house as built: no import cycle, the library's imports point down its layer table,
library files stay small, launchers stay thin.

Read with `ast` only (nothing is imported). Every `import a.b`, `from a import b` (b a
submodule or a name) and relative import is resolved to the most specific project module,
imports inside functions included; a lazy table of module names (importlib.import_module)
counts for the layers but not for cycles. Each check is a function of a root folder, so that the
tests at the bottom run the same checks on small fake trees: each one can fail and pass.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import pathlib
import tokenize

ROOT = pathlib.Path(__file__).resolve().parents[1]

# aan_jax's role subpackages, bottom (0) to top. A module may import its own subpackage, lower
# layers, and nothing else: not a higher layer, not another subpackage of the same layer.
LAYERS = {
    "util": 0,        # config errors, atomic writes, PRNG, CLI and XLA-cache helpers
    "data": 1,        # corpora, annotations, feature files, protocols, the synthetic stand-ins
    "models": 2,      # the Flax modules (AAN, baselines, VAANet, VTT, FER) and the CPU kernel
    "convert": 3,     # released checkpoints into Flax parameters, no code from files run
    "tasks": 3,       # losses and metrics of regression, binary and categorical targets
    "engine": 4,      # runs, model specs and the compiled training programs
    "evaluation": 5,  # pooled test figures, bootstrap intervals, prediction tables
    "export": 6,      # trained models as self-contained folders, and their loaders
    "outputs": 6,     # results.json, plots, progress lines
    "training": 7,    # train-and-evaluate drivers behind the experiment launchers
    "inference": 8,   # predictions on new films: curves, events, reports
}
LIBRARY = "aan_jax"
PROJECT = ("aan_jax", "extract", "experiments")  # the packages of the module graph
NEVER_IMPORTED = ("extract", "experiments", "datasets", "benchmarks")  # by aan_jax
# The one exception: inference runs a user's film end to end, so its pipeline calls the
# extractors (torch), imported inside the functions that use them; aan_jax never imports
# extract/ at module import time (DESIGN.md), so `import aan_jax.inference.pipeline` pulls no torch.
LAZY_EXTRACT = ("inference",)
MAX_LIBRARY_LINES = 600
MAX_LAUNCHER_CODE_LINES = 45


# ------------------------------------------------------------------------------- the graph


@dataclasses.dataclass(frozen=True)
class Import:
  importer: str        # module name
  name: str            # the absolute dotted name imported (`from a import b` -> "a.b")
  target: str | None   # the project module it resolves to (None: outside the project)
  path: str            # importer's file, relative to the root
  line: int
  by_name: bool = False  # a string in a lazy table (importlib.import_module), no statement
  nested: bool = False   # inside a function: runs when called, not at import

  def where(self) -> str:
    return f"{self.path}:{self.line}"


def project_modules(root, packages=PROJECT) -> dict[str, pathlib.Path]:
  """module name -> file, for every .py file under the given packages of `root`."""
  root = pathlib.Path(root)
  out = {}
  for pkg in packages:
    for path in sorted((root / pkg).rglob("*.py")):
      if "__pycache__" in path.parts:
        continue
      parts = list(path.relative_to(root).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts.pop()
      out[".".join(parts)] = path
  return out


def resolve(name: str, modules) -> str | None:
  """The most specific project module that importing `name` runs (None: not the project's)."""
  parts = name.split(".")
  for n in range(len(parts), 0, -1):
    if ".".join(parts[:n]) in modules:
      return ".".join(parts[:n])
  return None


def imports_of(module: str, path: pathlib.Path, modules, root) -> list[Import]:
  """Every import in the file, at any depth; imports by name too (see below)."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  rel = str(path.relative_to(root))
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = []

  def add(name, node, by_name=False):
    out.append(Import(module, name, resolve(name, modules), rel, node.lineno, by_name,
                      node.lineno in nested_lines))

  nested_lines = {n.lineno for f in ast.walk(tree)
                  if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name, node)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".") if package else []
        base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
        base = ".".join(base + ([node.module] if node.module else []))
      else:
        base = node.module
      if base == "__future__":
        continue
      for alias in node.names:
        full = f"{base}.{alias.name}" if alias.name != "*" else base
        # `from a import b`: the submodule a.b when there is one, else a name of module a.
        add(full if resolve(full, modules) == full else base, node)
  # Imports by name (importlib.import_module, __import__): a string constant that names a
  # project module, in a module that imports by name (a lazy table: {"kind": "a.b.module"}).
  if any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None))
         in ("import_module", "__import__") for n in ast.walk(tree)):
    for node in ast.walk(tree):
      if isinstance(node, ast.Constant) and isinstance(node.value, str) \
          and node.value in modules:
        add(node.value, node, by_name=True)
  return sorted(out, key=lambda i: (i.line, i.name))


def all_imports(root, packages=PROJECT) -> list[Import]:
  root = pathlib.Path(root)
  modules = project_modules(root, packages)
  return [i for m, p in modules.items() for i in imports_of(m, p, modules, root)]


def module_graph(imports) -> dict[str, dict[str, Import]]:
  """importer -> {imported project module: the first import of it}, self-imports left out.

  Imports by name are left out too: a lazy name -> module table is how a registry avoids
  importing its entries (engine.specs -> engine.zoo, which imports specs for ModelSpec);
  they still have to point down the layer table (layering_offences)."""
  graph: dict[str, dict[str, Import]] = {}
  for i in imports:
    graph.setdefault(i.importer, {})
    if i.target is not None and i.target != i.importer and not i.by_name:
      graph[i.importer].setdefault(i.target, i)
  return graph


def strongly_connected(graph) -> list[list[str]]:
  """Tarjan's strongly connected components (iterative), each sorted, biggest first."""
  index, low, on_stack, stack, comps = {}, {}, set(), [], []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph.get(start, ()))))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      v, children = work[-1]
      for w in children:
        if w not in index:
          index[w] = low[w] = counter
          counter += 1
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph.get(w, ())))))
          break
        if w in on_stack:
          low[v] = min(low[v], index[w])
      else:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
          comp = []
          while True:
            w = stack.pop()
            on_stack.discard(w)
            comp.append(w)
            if w == v:
              break
          comps.append(sorted(comp))
  return sorted(comps, key=lambda c: (-len(c), c))


def shortest_cycle(graph, comp) -> list[Import]:
  """One shortest cycle through the component's first module, as the imports that make it."""
  start, members = comp[0], set(comp)
  prev: dict[str, Import] = {}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w, imp in sorted(graph.get(v, {}).items()):
        if w not in members or w in prev:
          continue
        prev[w] = imp
        if w == start:
          path, node = [], start
          while True:
            path.append(prev[node])
            node = prev[node].importer
            if node == start:
              return path[::-1]
        nxt.append(w)
    frontier = nxt
  return []


def import_cycles(root, packages=PROJECT) -> list[str]:
  """One line per import cycle (strongly connected component): its modules, then one
  shortest cycle through them with the file and line of each import."""
  graph = module_graph(all_imports(root, packages))
  out = []
  for comp in strongly_connected(graph):
    if len(comp) < 2:
      continue
    cycle = shortest_cycle(graph, comp)
    steps = " -> ".join([cycle[0].importer] + [f"{i.target} ({i.where()})" for i in cycle])
    out.append(f"{len(comp)} modules import each other: {', '.join(comp)}\n"
               f"    e.g. {steps}")
  return out


# ------------------------------------------------------------------------------- the checks


def subpackage(module: str) -> str | None:
  """aan_jax.<subpackage>.module -> subpackage (None for aan_jax itself)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def layering_offences(root, layers=LAYERS) -> list[str]:
  """Every library import that goes up the layer table or sideways between subpackages of
  one layer; the library importing launchers, extractors, dataset builders or benchmarks;
  a module directly in aan_jax/ (other than __init__); a subpackage not in the table."""
  root = pathlib.Path(root)
  out = []
  modules = project_modules(root, (LIBRARY,))
  unknown = set()
  for path in modules.values():
    rel = path.relative_to(root)
    if len(rel.parts) == 2 and rel.name != "__init__.py":
      out.append(f"{rel}: library files live in a role subpackage (one of {', '.join(layers)})")
    elif len(rel.parts) > 2 and rel.parts[1] not in layers:
      unknown.add(rel.parts[1])
  out += [f"{LIBRARY}/{u}/: a subpackage not in the layer table; give it a layer and a role "
          "in LAYERS (tests/test_layout.py)" for u in sorted(unknown)]
  for i in sorted(all_imports(root, PROJECT), key=lambda i: (i.path, i.line, i.name)):
    if not (i.importer == LIBRARY or i.importer.startswith(LIBRARY + ".")):
      continue
    top = i.name.split(".")[0]
    if top == "extract" and i.nested and subpackage(i.importer) in LAZY_EXTRACT:
      continue
    if top in NEVER_IMPORTED:
      out.append(f"{i.importer} -> {i.name} (the library never imports {top}/) [{i.where()}]")
      continue
    if i.importer == LIBRARY:  # the root package runs nothing
      out.append(f"{i.importer} -> {i.name} (aan_jax/__init__.py imports nothing) [{i.where()}]")
      continue
    if i.target is None or i.target == LIBRARY or not i.target.startswith(LIBRARY + "."):
      continue
    a, b = subpackage(i.importer), subpackage(i.target)
    if a == b or a not in layers or b not in layers:
      continue  # own subpackage; unknown subpackages are reported above
    la, lb = layers[a], layers[b]
    if lb > la:
      out.append(f"{i.importer} -> {i.target} (layer {la} {a} -> layer {lb} {b}) [{i.where()}]")
    elif lb == la:
      out.append(f"{i.importer} -> {i.target} (layer {la} {a} -> layer {lb} {b}, sideways) "
                 f"[{i.where()}]")
  return out


def long_files(root, limit=MAX_LIBRARY_LINES, package=LIBRARY) -> list[str]:
  """'path: N lines' for every library .py file over `limit` lines."""
  root = pathlib.Path(root)
  out = []
  for path in sorted((root / package).rglob("*.py")):
    if "__pycache__" in path.parts:
      continue
    n = len(path.read_text(encoding="utf-8").splitlines())
    if n > limit:
      out.append(f"{path.relative_to(root)}: {n} lines")
  return out


def code_lines(source: str) -> int:
  """Lines holding code: not blank, not only a comment, not the module docstring."""
  tree = ast.parse(source)
  doc = set()
  if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(
      getattr(tree.body[0], "value", None), ast.Constant) and isinstance(
          tree.body[0].value.value, str):
    doc = set(range(tree.body[0].lineno, tree.body[0].end_lineno + 1))
  skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
          tokenize.ENCODING, tokenize.ENDMARKER)
  lines = set()
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type not in skip:
      lines.update(range(tok.start[0], tok.end[0] + 1))
  return len(lines - doc)


def fat_launchers(root, limit=MAX_LAUNCHER_CODE_LINES, package="experiments") -> list[str]:
  """'path: N lines of code' for every launcher over `limit` lines of code."""
  root = pathlib.Path(root)
  out = []
  for path in sorted((root / package).glob("*.py")):
    if path.name == "__init__.py":
      continue
    n = code_lines(path.read_text(encoding="utf-8"))
    if n > limit:
      out.append(f"{path.relative_to(root)}: {n} lines of code")
  return out


# ------------------------------------------------------------------------------- the real tree


def test_no_import_cycle():
  cycles = import_cycles(ROOT)
  assert not cycles, "import cycles (modules of one cycle import each other, directly or " \
      "not):\n" + "\n".join(cycles)


def test_imports_point_down():
  bad = layering_offences(ROOT)
  assert not bad, (f"{len(bad)} import(s) against the layer table (tests/test_layout.py "
                   "LAYERS: util 0, data 1, models 2, convert|tasks 3, engine 4, evaluation 5, "
                   "export|outputs 6, training 7, inference 8):\n" + "\n".join(bad))


def test_library_files_are_small():
  bad = long_files(ROOT)
  assert not bad, f"library files over {MAX_LIBRARY_LINES} lines:\n" + "\n".join(bad)


def test_launchers_are_thin():
  bad = fat_launchers(ROOT)
  for line in bad:
    print(line)
  assert not bad, (f"launchers over {MAX_LAUNCHER_CODE_LINES} lines of code (the work belongs "
                   "in aan_jax):\n" + "\n".join(bad))


# ------------------------------------------------------------------------------- the checks fail


def _tree(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  """A fake project: every package folder gets an __init__.py unless given."""
  for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  for path in list(root.rglob("*")):
    if path.is_dir() and not (path / "__init__.py").exists():
      (path / "__init__.py").write_text("")
  return root


CLEAN = {
    "aan_jax/__init__.py": '"""Imports nothing."""\n__version__ = "0"\n',
    "aan_jax/util/config.py": "import os\nclass ConfigError(ValueError): pass\n",
    "aan_jax/data/corpus.py": "from aan_jax.util import config\nfrom ..util.config import ConfigError\n",
    "aan_jax/data/synthetic.py": "from . import corpus\nfrom .corpus import config\n",
    "aan_jax/models/aan.py": "import aan_jax.data.corpus\nfrom aan_jax import util\n",
    "aan_jax/tasks/losses.py": "from aan_jax.models import aan\n",
    "aan_jax/convert/ckpt.py": "import aan_jax.models.aan as aan\n",
    "aan_jax/training/regression.py": (
        "def f():\n  from aan_jax.tasks import losses\n  from aan_jax.convert import ckpt\n"),
    "aan_jax/engine/specs.py": ('import importlib\n_TABLE = {"aan": "aan_jax.engine.zoo"}\n'
                                "def get(k):\n  return importlib.import_module(_TABLE[k])\n"),
    "aan_jax/engine/zoo.py": "from aan_jax.engine import specs\n",  # no cycle: a lazy table
    "extract/core.py": "from aan_jax.data import corpus\n",
    "experiments/run.py": '"""Doc."""\nfrom aan_jax.training import regression\nimport extract.core\n',
}


def test_the_checks_pass_on_a_clean_tree(tmp_path):
  root = _tree(tmp_path, CLEAN)
  assert import_cycles(root) == []
  assert layering_offences(root) == []
  assert long_files(root) == [] and fat_launchers(root) == []
  imports = {(i.importer, i.target) for i in all_imports(root)}
  assert {("aan_jax.data.corpus", "aan_jax.util.config"),   # from package import module
          ("aan_jax.data.synthetic", "aan_jax.data.corpus"),  # relative, and a name of a module
          ("aan_jax.models.aan", "aan_jax.data.corpus"),      # import a.b.c
          ("aan_jax.models.aan", "aan_jax.util"),              # a package itself
          ("aan_jax.training.regression", "aan_jax.convert.ckpt"),  # inside a function
          ("aan_jax.engine.specs", "aan_jax.engine.zoo"),     # by name
          ("experiments.run", "extract.core")} <= imports


def test_a_cycle_is_found_with_its_modules(tmp_path):
  files = dict(CLEAN)
  # util.config -> util.atomic -> (in a function) data.synthetic -> data.corpus -> util.config;
  # and a second cycle between two launchers' helpers.
  files["aan_jax/util/config.py"] = "from . import atomic\n"
  files["aan_jax/util/atomic.py"] = "def f():\n  from ..data.synthetic import make\n"
  files["experiments/a.py"] = "from experiments import b\n"
  files["experiments/b.py"] = "import experiments.a\n"
  root = _tree(tmp_path, files)
  cycles = import_cycles(root)
  assert len(cycles) == 2, cycles
  assert cycles[0].startswith("4 modules import each other: aan_jax.data.corpus, "
                              "aan_jax.data.synthetic, aan_jax.util.atomic, aan_jax.util.config")
  assert "aan_jax/util/atomic.py:2" in cycles[0]
  assert cycles[1].startswith("2 modules import each other: experiments.a, experiments.b")
  assert cycles[1].endswith("e.g. experiments.a -> experiments.b (experiments/a.py:1) -> "
                            "experiments.a (experiments/b.py:1)")


def test_upward_sideways_and_outside_imports_are_offences(tmp_path):
  files = dict(CLEAN)
  files["aan_jax/util/config.py"] = "def f():\n  from aan_jax.engine import core\n"
  files["aan_jax/engine/core.py"] = ""
  files["aan_jax/convert/ckpt.py"] = "from ..tasks.losses import x\n"
  files["aan_jax/data/lists.py"] = "def f():\n  from extract import core\nimport datasets.cog\n"
  files["aan_jax/stray.py"] = "x = 1\n"
  files["aan_jax/util/registry.py"] = ("import importlib\n_T = {'r': 'aan_jax.training.regression'}"
                                       "\nf = lambda k: importlib.import_module(_T[k])\n")
  files["aan_jax/__init__.py"] = "from aan_jax.util import config\n"
  files["aan_jax/newrole/__init__.py"] = ""
  root = _tree(tmp_path, files)
  bad = layering_offences(root)
  assert sorted(bad) == sorted([
      "aan_jax/stray.py: library files live in a role subpackage (one of "
      + ", ".join(LAYERS) + ")",
      "aan_jax/newrole/: a subpackage not in the layer table; give it a layer and a role in "
      "LAYERS (tests/test_layout.py)",
      "aan_jax.util.config -> aan_jax.engine.core (layer 0 util -> layer 4 engine) "
      "[aan_jax/util/config.py:2]",
      "aan_jax.convert.ckpt -> aan_jax.tasks.losses (layer 3 convert -> layer 3 tasks, "
      "sideways) [aan_jax/convert/ckpt.py:1]",
      "aan_jax.data.lists -> extract.core (the library never imports extract/) "
      "[aan_jax/data/lists.py:2]",
      "aan_jax.data.lists -> datasets.cog (the library never imports datasets/) "
      "[aan_jax/data/lists.py:3]",
      "aan_jax.util.registry -> aan_jax.training.regression (layer 0 util -> layer 7 training) "
      "[aan_jax/util/registry.py:2]",
      "aan_jax -> aan_jax.util.config (aan_jax/__init__.py imports nothing) "
      "[aan_jax/__init__.py:1]",
  ]), bad
  # The same layer table with convert above tasks: that import points down, and passes.
  assert not [b for b in layering_offences(root, dict(LAYERS, convert=4)) if "ckpt" in b]


def test_only_inference_may_call_the_extractors_and_only_inside_functions(tmp_path):
  files = dict(CLEAN)
  files["aan_jax/inference/run.py"] = "def f():\n  from extract import core\n"
  files["aan_jax/inference/eager.py"] = "from extract import core\n"
  files["aan_jax/export/run.py"] = "def f():\n  from extract import core\n"
  bad = layering_offences(_tree(tmp_path, files))
  assert sorted(b for b in bad if "extract" in b) == [
      "aan_jax.export.run -> extract.core (the library never imports extract/) "
      "[aan_jax/export/run.py:2]",
      "aan_jax.inference.eager -> extract.core (the library never imports extract/) "
      "[aan_jax/inference/eager.py:1]"], bad


def test_long_files_and_fat_launchers_are_listed(tmp_path):
  files = dict(CLEAN)
  files["aan_jax/data/long.py"] = "x = 1\n" * (MAX_LIBRARY_LINES + 1)
  files["aan_jax/data/limit.py"] = "x = 1\n" * MAX_LIBRARY_LINES
  code = "".join(f"x{k} = (1,\n      2)\n" for k in range(MAX_LAUNCHER_CODE_LINES // 2))
  # 44 lines of code (a two-line statement counts twice), however much else is around it.
  thin = ('"""A docstring\n\nof several lines."""\n\n# a comment\n' + code + "\n\n# end\n")
  files["experiments/thin.py"] = thin
  files["experiments/fat.py"] = thin + "y = '''a\nb'''\n"  # 46
  root = _tree(tmp_path, files)
  assert long_files(root) == [f"aan_jax/data/long.py: {MAX_LIBRARY_LINES + 1} lines"]
  assert code_lines(thin) == 44
  assert fat_launchers(root) == ["experiments/fat.py: 46 lines of code"]
