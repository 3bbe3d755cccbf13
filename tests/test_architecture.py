"""The import rules of the package (docs/architecture.md), checked on the source: an AST pass over
every .py file under mbpo_ray/ collects every import -- at module level, inside functions and
classes, under ``if TYPE_CHECKING``, relative ones resolved -- and each rule below is a function
of those imports, so that a rule can also be shown to fail on a small package made for it.

What counts as an import of module M by file F:
  * ``import a.b.c``                          -> a.b.c
  * ``from a.b import c``                     -> a.b.c when a/b/c is a module or package, else a.b
  * ``from . import x`` / ``from ..y import z`` resolved against F's package
  * a string literal that is exactly the dotted name of an mbpo_ray module, alone or as
    ``"module:attr"`` (the registries that ``importlib.import_module`` reads)
For the cycle check, importing a.b.c also runs the ``__init__`` of a.b (and a), unless that
package is one F itself belongs to (it is being initialised already): those edges count, so a
package ``__init__`` that re-exports from a submodule is part of the graph.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mbpo_ray"

# Where `ray` may be imported: these modules and everything under them (mbpo_ray.tune: the
# sweeps on Ray Tune; mbpo_ray.rehearsal: the rehearsal of a cluster launch).
RAY_ALLOWED = ("mbpo_ray.runtime.ray", "mbpo_ray.algos.rllib_sac", "mbpo_ray.tune", "mbpo_ray.rehearsal")
# The only runtime modules an algorithm may import.
RUNTIME_INTERFACE = ("mbpo_ray.runtime.base", "mbpo_ray.runtime.factory")
# The core: no algorithm, no runtime, no Ray.
CORE = ("mbpo_ray.models", "mbpo_ray.agents", "mbpo_ray.data", "mbpo_ray.planning", "mbpo_ray.envs",
        "mbpo_ray.nn", "mbpo_ray.config", "mbpo_ray.devices", "mbpo_ray.live_metrics", "mbpo_ray.rng",
        "mbpo_ray.atomic")
# The analyses of finished runs: they read what training wrote, and training never imports them.
ANALYSES = ("mbpo_ray.diagnostics", "mbpo_ray.analysis")
# What mbpo_ray.config may import of this package (besides itself), and what of the heavy libraries.
CONFIG_MAY_IMPORT = ("mbpo_ray.errors",)
CONFIG_HEAVY = ("torch", "gymnasium", "numpy", "ray")


# --- collecting imports ----------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    file: str  # the file, relative to the scanned tree's parent (e.g. mbpo_ray/algos/mbpo.py)
    line: int
    target: str  # the dotted module imported
    dynamic: bool = False  # named by a string literal, not an import statement

    def where(self) -> str:
        how = " (string literal)" if self.dynamic else ""
        return f"{self.file}:{self.line}: imports {self.target}{how}"


def within(module: str, prefixes: Iterable[str]) -> bool:
    """``module`` is one of ``prefixes`` or lies under one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path) -> Dict[str, Path]:
    """Every module and package of the tree at ``root`` (a package directory), by dotted name."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


_MODULE_STRING = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")


def imports_of_file(path: Path, root: Path, modules: Dict[str, Path]) -> List[Import]:
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    rel = str(path.relative_to(root.parent))
    out: List[Import] = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(name, rel, node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 > 0:
                    base_parts = base_parts[:-(node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if alias.name != "*" and candidate in modules:
                    out.append(Import(name, rel, node.lineno, candidate))
                else:
                    out.append(Import(name, rel, node.lineno, base))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            target = node.value.split(":")[0]
            if target in modules and target != name:
                out.append(Import(name, rel, node.lineno, target, dynamic=True))
    return list(dict.fromkeys(out))  # `from a import x, y` of two names of a: one import of a


def scan(root: Path) -> Tuple[Dict[str, Path], List[Import]]:
    """The modules of the package at ``root`` and every import in them."""
    modules = find_modules(root)
    imports = [imp for path in modules.values() for imp in imports_of_file(path, root, modules)]
    return modules, imports


# --- the rules: each returns one message per violation, naming file, line and rule ---------------

def check_runtime_does_not_import_algos(imports: Sequence[Import]) -> List[str]:
    rule = "runtime/ never imports algos/"
    return [f"{i.where()} -- rule: {rule}" for i in imports
            if within(i.importer, ["mbpo_ray.runtime"]) and within(i.target, ["mbpo_ray.algos"])]


def check_algos_use_only_the_runtime_interface(imports: Sequence[Import]) -> List[str]:
    rule = f"algos/ reaches the runtime only through {' and '.join(RUNTIME_INTERFACE)}"
    return [f"{i.where()} -- rule: {rule}" for i in imports
            if within(i.importer, ["mbpo_ray.algos"]) and within(i.target, ["mbpo_ray.runtime"])
            and i.target not in RUNTIME_INTERFACE]


def check_ray_only_where_allowed(imports: Sequence[Import]) -> List[str]:
    rule = f"`ray` is imported only under {', '.join(RAY_ALLOWED)}"
    return [f"{i.where()} -- rule: {rule}" for i in imports
            if within(i.target, ["ray"]) and not within(i.importer, RAY_ALLOWED)]


def check_config_is_light(imports: Sequence[Import]) -> List[str]:
    rule = (f"mbpo_ray/config/ imports no {'/'.join(CONFIG_HEAVY)} and no mbpo_ray module but "
            f"{', '.join(CONFIG_MAY_IMPORT)} and itself")
    bad = []
    for i in imports:
        if not within(i.importer, ["mbpo_ray.config"]):
            continue
        heavy = within(i.target, CONFIG_HEAVY)
        ours = within(i.target, [PACKAGE]) and not within(i.target, ("mbpo_ray.config",) + CONFIG_MAY_IMPORT)
        if heavy or ours:
            bad.append(f"{i.where()} -- rule: {rule}")
    return bad


def check_core_stays_below(imports: Sequence[Import]) -> List[str]:
    rule = "the core (models, agents, data, planning, envs, nn, config, devices) never imports algos/, runtime/, ray"
    return [f"{i.where()} -- rule: {rule}" for i in imports
            if within(i.importer, CORE) and within(i.target, ["mbpo_ray.algos", "mbpo_ray.runtime", "ray"])]


def check_training_does_not_import_the_analyses(imports: Sequence[Import]) -> List[str]:
    rule = "runtime/ and the core never import diagnostics/ or analysis/ (the layers point one way)"
    return [f"{i.where()} -- rule: {rule}" for i in imports
            if within(i.importer, CORE + ("mbpo_ray.runtime",)) and within(i.target, ANALYSES)]


def module_graph(modules: Dict[str, Path], imports: Sequence[Import]) -> Dict[str, Dict[str, Import]]:
    """importer -> {imported module of this package -> the first import that makes the edge},
    with the implicit edges to the packages whose ``__init__`` an import runs."""
    graph: Dict[str, Dict[str, Import]] = {m: {} for m in modules}
    for i in imports:
        if i.target not in modules and not within(i.target, [PACKAGE]):
            continue
        # the target, or (for `from a import name` of a name that is no module) the package a
        targets = [i.target] if i.target in modules else []
        parts = i.target.split(".")
        importer_packages = {".".join(i.importer.split(".")[:n]) for n in range(1, i.importer.count(".") + 2)}
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if parent in modules and parent not in importer_packages:
                targets.append(parent)
        for t in targets:
            if t != i.importer:
                graph[i.importer].setdefault(t, i)
    return graph


def find_cycles(modules: Dict[str, Path], imports: Sequence[Import]) -> List[str]:
    """One message per strongly connected component of more than one module, showing one cycle
    through it edge by edge (file:line of each import)."""
    graph = module_graph(modules, imports)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iteratively (deep graphs would overflow recursion)
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    messages = []
    for component in components:
        if len(component) < 2:
            continue
        members = set(component)
        start = min(component)
        path = _cycle_through(graph, members, start)
        edges = [graph[a][b].where() for a, b in zip(path, path[1:])]
        messages.append("import cycle " + " -> ".join(path) + " -- rule: no import cycles between mbpo_ray "
                        "modules (imports inside functions count)\n    " + "\n    ".join(edges))
    return messages


def _cycle_through(graph, members: Set[str], start: str) -> List[str]:
    """A shortest cycle start -> ... -> start inside one strongly connected component (BFS)."""
    previous: Dict[str, Optional[str]] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for w in sorted(graph[node]):
                if w == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return list(reversed(path)) + [start]
                if w in members and w not in previous:
                    previous[w] = node
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # cannot happen inside a component


RULES = {
    "runtime-never-imports-algos": check_runtime_does_not_import_algos,
    "algos-use-runtime-interface": check_algos_use_only_the_runtime_interface,
    "ray-only-where-allowed": check_ray_only_where_allowed,
    "config-is-light": check_config_is_light,
    "core-stays-below": check_core_stays_below,
    "training-does-not-import-the-analyses": check_training_does_not_import_the_analyses,
}


# --- the rules on this repository -------------------------------------------------------------

@pytest.fixture(scope="module")
def package_imports():
    return scan(REPO / PACKAGE)


def test_the_scan_sees_the_package(package_imports):
    modules, imports = package_imports
    assert "mbpo_ray.train" in modules and "mbpo_ray.config" in modules
    assert any(i.importer == "mbpo_ray.train" and i.target == "mbpo_ray.run_dir" for i in imports)
    # imports inside functions are collected too (cli.py defers `train` until the config is good)
    assert any(i.importer == "mbpo_ray.cli" and i.target == "mbpo_ray.train" for i in imports)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_rule(rule, package_imports):
    _, imports = package_imports
    violations = RULES[rule](imports)
    assert not violations, f"{len(violations)} import(s) break a rule:\n" + "\n".join(violations)


def test_no_import_cycles(package_imports):
    cycles = find_cycles(*package_imports)
    assert not cycles, "\n".join(cycles)


def test_importing_config_imports_no_torch_gymnasium_numpy_or_ray():
    code = ("import sys, mbpo_ray.config; "
            f"print(','.join(m for m in {CONFIG_HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = [m for m in out.stdout.strip().split(",") if m]
    assert loaded == [], f"`import mbpo_ray.config` imported {loaded}"


# Documents outside the repository, which a user of it does not have: spelled in two pieces so
# that this file does not cite them itself.
OUTSIDE_DOCS = ("REFERENCE" + ".md", "DESIGN" + ".md")
CITATION_SCOPE = ("mbpo_ray", "docs", "benchmarks", "tests", "README.md", "setup.cfg", "pyproject.toml", "Makefile")


def citations_of_outside_docs(repo: Path) -> List[str]:
    found = []
    for entry in CITATION_SCOPE:
        top = repo / entry
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for path in files:
            if "__pycache__" in path.parts or ".egg-info" in str(path):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary (plots, checkpoints)
            for number, line in enumerate(text.splitlines(), 1):
                for doc in OUTSIDE_DOCS:
                    if doc in line:
                        found.append(f"{path.relative_to(repo)}:{number}: cites {doc} (not in the repository; "
                                     f"cite docs/..., the paper or an issue thread)")
    return found


def test_no_file_cites_documents_outside_the_repository():
    found = citations_of_outside_docs(REPO)
    assert not found, f"{len(found)} citation(s):\n" + "\n".join(found)


# --- each checker fails on a package made to break it -------------------------------------------

def write_package(tmp_path: Path, files: Dict[str, str]) -> Path:
    """A throwaway mbpo_ray tree under tmp_path (every directory gets an __init__.py)."""
    root = tmp_path / PACKAGE
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    return root


GOOD = {
    "errors.py": "class ConfigError(ValueError):\n    pass\n",
    "config/__init__.py": "from .schema import TrainConfig\nfrom mbpo_ray.errors import ConfigError\n",
    "config/schema.py": "import dataclasses\nfrom . import presets\n",
    "config/presets.py": "PRESETS = {}\n",
    "models/ensemble.py": "import torch\nfrom mbpo_ray.config import TrainConfig\nfrom mbpo_ray.nn import mlp\n",
    "nn.py": "import torch\n\ndef mlp():\n    pass\n",
    "runtime/base.py": "from typing import Protocol\n",
    "runtime/factory.py": "def make(cfg):\n    from mbpo_ray.runtime.ray.driver import RayRuntime\n    from mbpo_ray.runtime import local\n",
    "runtime/local.py": "from mbpo_ray.runtime.base import Protocol\nfrom mbpo_ray.models.ensemble import x\n",
    "runtime/ray/driver.py": "import ray\nfrom ray.util import queue\nfrom ..base import Protocol\n",
    "algos/__init__.py": "CLASSES = {'mbpo': 'mbpo_ray.algos.mbpo:MBPO'}\n",
    "algos/mbpo.py": "from mbpo_ray.runtime.factory import make\nfrom mbpo_ray.runtime.base import Protocol\n",
    "algos/rllib_sac.py": "def build():\n    import ray\n    from ray.rllib import algorithms\n",
}


def test_a_well_behaved_package_passes_every_check(tmp_path):
    modules, imports = scan(write_package(tmp_path, GOOD))
    for name, check in RULES.items():
        assert check(imports) == [], name
    assert find_cycles(modules, imports) == []
    # relative imports and `from package import submodule` resolve to the submodule
    targets = {(i.importer, i.target) for i in imports}
    assert ("mbpo_ray.config.schema", "mbpo_ray.config.presets") in targets
    assert ("mbpo_ray.runtime.ray.driver", "mbpo_ray.runtime.base") in targets
    assert ("mbpo_ray.runtime.factory", "mbpo_ray.runtime.local") in targets
    assert ("mbpo_ray.algos", "mbpo_ray.algos.mbpo") in targets  # the registry string


@pytest.mark.parametrize("rule, files, where", [
    ("runtime-never-imports-algos",
     {"runtime/driver.py": "import os\n\ndef loop():\n    from mbpo_ray.algos.mbpo import MBPOLoop\n"},
     "mbpo_ray/runtime/driver.py:4"),
    ("runtime-never-imports-algos",  # relative, two levels up
     {"runtime/ray/driver.py": "from ...algos import mbpo\n"}, "mbpo_ray/runtime/ray/driver.py:1"),
    ("algos-use-runtime-interface",
     {"algos/pets.py": "from mbpo_ray.runtime.local import ActionScaler\n"}, "mbpo_ray/algos/pets.py:1"),
    ("algos-use-runtime-interface",  # the package, not its interface module
     {"algos/pets.py": "\n\nfrom mbpo_ray.runtime import Runtime\n"}, "mbpo_ray/algos/pets.py:3"),
    ("algos-use-runtime-interface",  # a registry string counts as an import
     {"algos/__init__.py": "CLASSES = {\n    'x': 'mbpo_ray.runtime.local:LocalRuntime'}\n",
      "runtime/local.py": ""}, "mbpo_ray/algos/__init__.py:2"),
    ("ray-only-where-allowed",
     {"runtime/local.py": "def f():\n    import ray.util\n"}, "mbpo_ray/runtime/local.py:2"),
    ("ray-only-where-allowed",
     {"algos/mbpo.py": "from ray import remote\n"}, "mbpo_ray/algos/mbpo.py:1"),
    ("config-is-light",
     {"config/validate.py": "def device():\n    import torch\n"}, "mbpo_ray/config/validate.py:2"),
    ("config-is-light",
     {"config/__init__.py": "from mbpo_ray.envs import SUPPORTED_ENVS\n", "envs.py": ""},
     "mbpo_ray/config/__init__.py:1"),
    ("config-is-light",
     {"config/schema.py": "import numpy as np\n"}, "mbpo_ray/config/schema.py:1"),
    ("core-stays-below",
     {"models/rollout.py": "from mbpo_ray.runtime.base import Runtime\n"}, "mbpo_ray/models/rollout.py:1"),
    ("core-stays-below",
     {"envs.py": "import ray\n"}, "mbpo_ray/envs.py:1"),
    ("core-stays-below",
     {"agents/sac.py": "from ..algos import records\n"}, "mbpo_ray/agents/sac.py:1"),
    ("training-does-not-import-the-analyses",
     {"runtime/local.py": "\nfrom mbpo_ray.diagnostics.live import elite_mse\n"}, "mbpo_ray/runtime/local.py:2"),
    ("training-does-not-import-the-analyses",
     {"models/rollout.py": "from mbpo_ray.analysis import stats\n"}, "mbpo_ray/models/rollout.py:1"),
])
def test_each_rule_fails_on_a_package_that_breaks_it(tmp_path, rule, files, where):
    modules, imports = scan(write_package(tmp_path, {**GOOD, **files}))
    violations = RULES[rule](imports)
    assert len(violations) == 1 and violations[0].startswith(where + ":"), violations
    assert "rule:" in violations[0]


def test_cycle_check_finds_direct_function_level_and_reexport_cycles(tmp_path):
    # algos.mbpo -> runtime.ray.driver -> algos.mbpo, the second edge inside a function
    files = {**GOOD, "algos/__init__.py": "", "algos/mbpo.py": "from mbpo_ray.runtime.ray.driver import RayRuntime\n",
             "runtime/ray/driver.py": "def f():\n    from mbpo_ray.algos.mbpo import MBPOLoop\n"}
    cycles = find_cycles(*scan(write_package(tmp_path / "a", files)))
    assert len(cycles) == 1
    assert "mbpo_ray.algos.mbpo -> mbpo_ray.runtime.ray.driver -> mbpo_ray.algos.mbpo" in cycles[0]
    assert "mbpo_ray/runtime/ray/driver.py:2" in cycles[0] and "mbpo_ray/algos/mbpo.py:1" in cycles[0]

    # a cycle through a package __init__ that re-exports: importing models.ensemble runs
    # models/__init__, which imports models.trainer, which imports data.buffers, which imports
    # models.ensemble
    files = {**GOOD, "models/__init__.py": "from mbpo_ray.models.trainer import Trainer\n",
             "models/trainer.py": "from mbpo_ray.data.buffers import ReplayBuffer\n",
             "data/buffers.py": "from mbpo_ray.models.ensemble import Ensemble\n",
             "models/ensemble.py": "import torch\n"}
    cycles = find_cycles(*scan(write_package(tmp_path / "b", files)))
    assert len(cycles) == 1 and "mbpo_ray.models" in cycles[0] and "mbpo_ray.data.buffers" in cycles[0]

    # `from package import submodule` is an import of that submodule
    files = {**GOOD, "envs.py": "from mbpo_ray import nn\n", "nn.py": "from mbpo_ray import envs\n"}
    cycles = find_cycles(*scan(write_package(tmp_path / "c", files)))
    assert len(cycles) == 1 and "mbpo_ray.envs -> mbpo_ray.nn -> mbpo_ray.envs" in cycles[0]

    # a submodule importing a sibling through its own package is not a cycle (the package is
    # being initialised already), as Python itself runs it
    files = {**GOOD, "models/__init__.py": "from mbpo_ray.models.trainer import Trainer\n",
             "models/trainer.py": "from mbpo_ray.models.ensemble import Ensemble\n"}
    assert find_cycles(*scan(write_package(tmp_path / "d", files))) == []


def test_citation_check_finds_outside_documents(tmp_path):
    (tmp_path / "mbpo_ray").mkdir()
    (tmp_path / "mbpo_ray" / "x.py").write_text("# see docs/resume.md\n# as in " + OUTSIDE_DOCS[1] + " section 2\n")
    (tmp_path / "README.md").write_text("The " + OUTSIDE_DOCS[0] + " table\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    found = citations_of_outside_docs(tmp_path)
    assert [f.split(": ")[0] for f in found] == ["mbpo_ray/x.py:2", "README.md:1"]


def test_the_torch_floor_is_the_version_ci_tests():
    # The package may be installed with any torch its requirement allows (a GPU cluster's CUDA
    # build); the code uses APIs of the version CI tests (torch.cuda.is_bf16_supported's
    # including_emulation, for one), so the floor is that version.
    import configparser
    import re

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    (floor,) = re.findall(r"^torch>=([\d.]+)$", setup["options"]["install_requires"], re.M)
    (pinned,) = re.findall(r"^torch==([\d.]+)$", (REPO / "constraints-cpu.txt").read_text(), re.M)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))[:2]
    assert as_tuple(floor) == as_tuple(pinned), (floor, pinned)


def test_the_layouts_name_every_module_and_package():
    """docs/architecture.md's layout names every module and subpackage of mbpo_ray (and of its
    subpackages); the README's names every subpackage and top-level module."""
    layout = (REPO / "docs" / "architecture.md").read_text()
    layout = layout[layout.index("## Layout"):layout.index("## Import rules")]
    readme = (REPO / "README.md").read_text()
    readme = readme[readme.index("## Layout"):readme.index("## Documentation")]
    missing, missing_readme = [], []
    for path in sorted((REPO / PACKAGE).rglob("*")):
        if "__pycache__" in path.parts or path.name == "__init__.py" or not (path.is_dir() or path.suffix == ".py"):
            continue
        name = path.name + ("/" if path.is_dir() else "")
        if name not in layout:
            missing.append(str(path.relative_to(REPO)))
        top_level = path.parent == REPO / PACKAGE
        if top_level and name not in readme and path.name != "__main__.py":
            missing_readme.append(str(path.relative_to(REPO)))
    assert missing == [] and missing_readme == []
