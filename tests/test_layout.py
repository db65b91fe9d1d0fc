"""The project's layout: no import circle anywhere (lazy imports included), longvid_core's rooms
import only the rooms below them, one file per sampling method with the step rules and the walk
apart, no engine or trainer file over 450 lines, and no document naming a path that is gone."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("longvid_core", "nodes", "training", "tests", "tools", "bench")
PACK = "<pack>"  # the repository's own __init__.py: the package ComfyUI imports
MAX_LINES = 450

# What each room of longvid_core may import (besides itself), lowest first. The shared words are
# the modules at the top of the package (problems, shapes, progress) and import none of the rooms.
WORDS = "words"
ROOMS = ("networks", "weights", "sampling", "evaluation", "run")
MAY_IMPORT = {
    WORDS: set(),
    "networks": {WORDS},
    "weights": {WORDS, "networks"},
    "sampling": {WORDS, "networks"},
    "evaluation": {WORDS, "networks", "sampling"},
    "run": {WORDS, "networks", "weights", "sampling", "evaluation"},
}


# ----------------------------------------------------------------------------------- the graph


def python_files():
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0] in TOP_LEVEL or parts == ("__init__.py",):
            if not any(part.startswith(".") or part == "__pycache__" for part in parts):
                yield path


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts == ("__init__",):
        return PACK
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = REPO / Path(*name.split("."))
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The project modules ``path`` imports anywhere in its text: top-level, lazy (inside a
    function) and TYPE_CHECKING imports alike. ``from package import name`` is an edge to the
    module ``package.name`` when there is one, else to the package."""
    name = module_name(path)
    package = "" if name == PACK else name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name.split(".")[0] in TOP_LEVEL}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = ".".join(part for part in (base, node.module) if part)
            elif node.module and node.module.split(".")[0] in TOP_LEVEL:
                base = node.module
            else:
                continue
            targets = {f"{base}.{alias.name}".lstrip(".") for alias in node.names
                       if is_module(f"{base}.{alias.name}".lstrip("."))}
            edges |= targets
            if len(targets) < len(node.names):
                edges.add(base or PACK)  # names from the module itself
    return edges - {name}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in python_files()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_reader_sees_every_kind_of_import(graph):
    assert "longvid_core.run.pipeline" in graph["longvid_core.run.cli"]  # at the top
    assert "longvid_core.evaluation.tiny" in graph["longvid_core.run.cli"]  # inside smoke()
    assert "longvid_core.weights.loading" in graph["longvid_core"]  # inside __getattr__
    assert "training.config" in graph["training.lr_schedule"]  # under TYPE_CHECKING too
    assert "nodes" in graph[PACK] and "nodes.comfy_v3" in graph[PACK]  # relative, from the pack's root
    assert "longvid_core.sampling.progressive" in graph["longvid_core.sampling"]  # from . import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_anywhere_imports_one_that_imports_it_back(graph):
    assert len(graph) > 120  # the whole project: engine, nodes, trainer, tests, tools, benchmarks
    assert find_cycle(graph) is None


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "longvid_core" or len(parts) == 1 or parts[1] == "__main__":
        return None  # the entry points: __init__.py names the public names, __main__.py runs the command line
    return parts[1] if parts[1] in ROOMS else WORDS


def test_each_room_of_the_engine_imports_only_the_rooms_below_it(graph):
    wrong = []
    for module, edges in graph.items():
        room = room_of(module)
        if room is None:
            continue
        for target in edges:
            other = room_of(target)
            if target.split(".")[0] != "longvid_core" or target == "longvid_core":
                if target.split(".")[0] in TOP_LEVEL:
                    wrong.append(f"{module} -> {target} (outside the engine)")
                continue
            if other != room and other not in MAY_IMPORT[room]:
                wrong.append(f"{module} ({room}) -> {target} ({other})")
    assert not wrong, wrong


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_what_lives_there_and_what_it_may_import(room):
    doc = ast.get_docstring(ast.parse((REPO / "longvid_core" / room / "__init__.py").read_text(encoding="utf-8")))
    assert doc and "May import" in doc, room
    if MAY_IMPORT[room] - {WORDS}:
        assert all(other in doc for other in MAY_IMPORT[room] - {WORDS}), (room, doc)


# ----------------------------------------------------------------------------------- sizes and rooms


def test_no_engine_or_trainer_file_is_over_450_lines():
    long = {str(path.relative_to(REPO)): n for folder in ("longvid_core", "training")
            for path in (REPO / folder).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_one_file_per_sampling_method_and_the_step_rule_apart_from_the_walk(graph):
    from longvid_core import pipeline

    sampling = REPO / "longvid_core" / "sampling"
    method_files = {"progressive": "progressive", "context_windows": "context_windows",
                    "full_sequence": "full_sequence", "replacement_without_noise": "replacement",
                    "replacement_with_noise": "replacement"}
    assert set(method_files) == set(pipeline.MODES) - {pipeline.AUTO}
    for mode, file in method_files.items():
        text = (sampling / f"{file}.py").read_text(encoding="utf-8")
        assert re.search(rf"^def iter_{file}\(", text, re.M), mode  # the method lives in its own file
    # the walk and the step rules know no method; the step rules know no walk, only their weights' math
    assert not {f"longvid_core.sampling.{f}" for f in method_files.values()} & graph["longvid_core.sampling.walk"]
    assert {m for m in graph["longvid_core.sampling.step_rules"] if m.startswith("longvid_core")} <= {
        "longvid_core.sampling.step_coefficients"}
    assert not {m for m in graph["longvid_core.sampling.step_coefficients"] if m.startswith("longvid_core")}
    walk = (sampling / "walk.py").read_text(encoding="utf-8")
    assert "def euler_step" not in walk and "EULER" not in walk


# ----------------------------------------------------------------------------------- documents

# a path in a document: a known top-level folder or file, then path characters
PATH = re.compile(r"(?<![\w./-])((?:longvid_core|nodes|training|tests|tools|bench|docs|example_workflows)"
                  r"/[\w./-]*\w|README\.md|pyproject\.toml)")
DOTTED = re.compile(r"(?<![\w./])((?:longvid_core|training|nodes)(?:\.\w+)+)")
IMPORT = re.compile(r"^from ((?:longvid_core|training|nodes)[\w.]*) import ([\w, ]+)$", re.M)


def documents():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "tools").rglob("*.md")),
            *sorted((REPO / "bench").glob("*.md"))]


def resolves(dotted: str) -> bool:
    """A module, or a name defined in one (``longvid_core.run.pipeline.prepare_run``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        if is_module(".".join(parts[:cut])):
            if cut == len(parts):
                return True
            import importlib

            try:
                value = importlib.import_module(".".join(parts[:cut]))
                for attribute in parts[cut:]:
                    value = getattr(value, attribute)
            except (ImportError, AttributeError):
                return False
            return True
    return False


def test_the_readme_and_the_docs_name_no_path_that_is_gone():
    gone = []
    for document in documents():
        text = document.read_text(encoding="utf-8")
        for path in set(PATH.findall(text)):
            path = path.rstrip(".")
            if "*" in path or "<" in path or "{" in path:
                continue
            if not (REPO / path).exists():
                gone.append(f"{document.name}: {path}")
        for dotted in set(DOTTED.findall(text)):
            if not dotted.endswith(".md") and not resolves(dotted.rstrip(".")):  # training.md: a link
                gone.append(f"{document.name}: {dotted}")
        for module, names in IMPORT.findall(text):  # the examples' imports
            gone += [f"{document.name}: from {module} import {name}" for name in names.split(", ")
                     if not resolves(f"{module}.{name.strip()}")]
    assert not gone, gone
