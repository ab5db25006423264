"""The layout's rules, read from every import in the tree (lazy imports inside functions too).

* ``shared`` imports no project package and nothing heavy (TensorFlow, Keras, Telegram, a web
  framework): the bot and the producers install and start without them.  prometheus_client
  (small, pure Python) is a base dependency: every process exports metrics.
* ``bot`` imports ``shared`` only, never the worker or TensorFlow.
* ``api`` (the HTTP API) imports ``shared`` only, never the worker, the bot or TensorFlow.
* ``worker.model`` (the TensorFlow library) is imported only by ``worker``, ``worker.training``
  and ``bench``; the worker service does not import the offline tools (``worker.training``).
* Nothing imports a command module (a console script's module, or a ``__main__``): commands are
  thin and call the libraries.  Tests may, to call ``main()``.
* ``bench`` imports no test module.
* No import circle between production modules (``shared``, ``worker``, ``bot``, ``api``): each
  concept has one home, below its users.  Every import counts, inside functions too (a lazy
  import hides a circle from Python, not from the design).
* No production module is over ``MAX_LINES`` lines (as ``wc -l`` counts them): split it along
  a seam instead.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "worker", "bot", "api", "bench", "tests")
WEB = {"fastapi", "starlette", "uvicorn"}
HEAVY = {"tensorflow", "keras", "telegram", "sklearn", "scipy", "matplotlib", "gensim", *WEB}
#: The packages that ship (and so must stay free of circles and of oversized modules).
PRODUCTION = ("shared", "worker", "bot", "api")
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, set[str]]]:
    """Each import statement of ``source``: its module, and every name it may bring in
    (``from x import y`` may import the module ``x.y``)."""
    found: list[tuple[str, set[str]]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, {alias.name}) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, {base, *(f"{base}.{alias.name}" for alias in node.names)}))
    return found


def command_modules(root: Path) -> set[str]:
    """Modules behind the console scripts, and every ``__main__``."""
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    found = {target.partition(":")[0] for target in scripts.values()}
    found.update(
        module_name(p, root) for pkg in PACKAGES for p in (root / pkg).rglob("__main__.py")
    )
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every broken rule in the tree at ``root``, as readable lines."""
    commands = command_modules(root)
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            me = module_name(path, root)
            for target, names in imports_of(path.read_text(), me, path.name == "__init__.py"):
                top = target.split(".")[0]
                rules = [
                    (
                        pkg == "shared" and (top in HEAVY or top in PACKAGES[1:]),
                        "shared stays light and imports nothing of ours",
                    ),
                    (
                        pkg == "bot"
                        and (top in HEAVY - {"telegram"} or top in ("worker", "api", "bench")),
                        "the bot never loads the worker or TensorFlow",
                    ),
                    (
                        pkg == "api" and (top in HEAVY - WEB or top in ("worker", "bot", "bench")),
                        "the API never loads the worker, the bot or TensorFlow",
                    ),
                    (
                        _within(target, "worker.model")
                        and not (_within(me, "worker") or pkg in ("bench", "tests")),
                        "only worker, worker.training and bench use worker.model",
                    ),
                    (
                        _within(me, "worker")
                        and not _within(me, "worker.training")
                        and _within(target, "worker.training"),
                        "the worker service needs no offline tools",
                    ),
                    (
                        pkg != "tests" and bool(names & commands) and me not in names,
                        "a command module is never imported",
                    ),
                    (pkg == "bench" and top == "tests", "bench never imports a test module"),
                ]
                out.extend(f"{me} imports {target}: {why}" for broken, why in rules if broken)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Production module -> the production modules it imports, anywhere in its code.

    ``from x import y`` points at the module ``x.y`` when there is one, else at ``x``; ``import
    x.y`` at ``x.y`` (or its nearest enclosing module of ours).
    """
    files = {
        module_name(path, root): path
        for pkg in PRODUCTION
        for path in sorted((root / pkg).rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for me, path in files.items():
        edges = graph.setdefault(me, set())
        for base, names in imports_of(path.read_text(), me, path.name == "__init__.py"):
            members = {n for n in names - {base} if n in files}
            targets = members or {base}
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != me:
                    edges.add(target)
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every circle of ``graph``: each group of two or more modules that reach each other (a
    strongly connected component), its modules sorted; the groups sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graphs here are a few hundred modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def shortest_loop(graph: Mapping[str, set[str]], group: Sequence[str]) -> list[str]:
    """The fewest imports that lead from ``group``'s first module back to it, inside the group:
    ``[a, b, ..., a]`` (one concrete loop to open the code at)."""
    start, inside = group[0], set(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        ahead = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & inside):
                if nxt == start:
                    loop = [start, node]
                    while loop[-1] != start:
                        loop.append(came[loop[-1]])
                    return loop[::-1]
                if nxt not in came:
                    came[nxt] = node
                    ahead.append(nxt)
        frontier = ahead
    raise ValueError(f"no loop through {start} inside {list(group)}")


def circles(root: Path) -> list[str]:
    """Each import circle between production modules, as a readable line: its modules, and
    the shortest loop through the first of them."""
    graph = import_graph(root)
    return [
        f"import circle of {len(group)} modules: {', '.join(group)} "
        f"(e.g. {' -> '.join(shortest_loop(graph, group))})"
        for group in import_cycles(graph)
    ]


def oversized(root: Path) -> list[str]:
    """Each production module over ``MAX_LINES`` lines (counted like ``wc -l``)."""
    out = []
    for pkg in PRODUCTION:
        for path in sorted((root / pkg).rglob("*.py")):
            lines = path.read_bytes().count(b"\n")
            if lines > MAX_LINES:
                out.append(
                    f"{path.relative_to(root)}: {lines} lines (at most {MAX_LINES}): split it"
                )
    return out


def test_the_tree_follows_the_layout_rules() -> None:
    assert violations(REPO) == []


def test_no_import_circle_between_production_modules() -> None:
    assert circles(REPO) == []


def test_no_production_module_is_over_the_line_limit() -> None:
    assert oversized(REPO) == []


def test_models_is_data_not_a_package() -> None:
    assert not (REPO / "models" / "__init__.py").exists()


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("shared/x.py", "import tensorflow\n", "shared stays light"),
        ("shared/x.py", "from worker import jobs\n", "shared stays light"),
        ("bot/x.py", "def f():\n    import keras\n", "the bot never loads"),
        ("worker/training/x.py", "from worker.model import cnn\n", None),
        ("bench/x.py", "from worker.model import cnn\n", None),
        ("bot/x.py", "from worker.model import cnn\n", "only worker, worker.training and bench"),
        ("worker/x.py", "from worker.training.train import train\n", "no offline tools"),
        ("worker/model/x.py", "from shared.commands.enqueue import run\n", "a command module"),
        ("worker/training/x.py", "from .commands import train\n", "a command module"),
        ("bench/x.py", "from tests.conftest import REPO\n", "bench never imports a test"),
        ("api/x.py", "from shared.aqueue import AsyncQueueClient\n", None),
        ("api/x.py", "import fastapi\n", None),
        ("api/x.py", "def f():\n    import tensorflow\n", "the API never loads"),
        ("api/x.py", "from bot.render import answer\n", "the API never loads"),
        ("shared/x.py", "import fastapi\n", "shared stays light"),
    ],
)
def test_a_deliberate_violation_is_reported_and_an_allowed_import_is_not(
    tmp_path: Path, where: str, source: str, expected: str | None
) -> None:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "worker" / "model").mkdir()
    (tmp_path / "worker" / "training" / "commands").mkdir(parents=True)
    (tmp_path / "worker" / "training" / "commands" / "train.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project.scripts]\nsentiment-train = "worker.training.commands.train:main"\n'
        'sentiment-enqueue = "shared.commands.enqueue:main"\n'
    )
    (tmp_path / where).write_text(source)
    found = violations(tmp_path)
    if expected is None:  # allowed
        assert found == []
    else:
        assert found and any(expected in line for line in found), found


@pytest.mark.parametrize(
    ("graph", "groups", "loops"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, [], []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]], [["a", "b", "a"]]),
        (
            {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}},
            [["a", "b", "c"]],
            [["a", "b", "c", "a"]],
        ),
        # Two circles, apart; a module outside both points into one.
        (
            {"x": {"y"}, "y": {"x"}, "a": {"b"}, "b": {"a", "x"}, "z": {"a"}},
            [["a", "b"], ["x", "y"]],
            [["a", "b", "a"], ["x", "y", "x"]],
        ),
        # One group, not a simple ring: the loop is the shortest through its first module.
        (
            {"a": {"b"}, "b": {"c", "a"}, "c": {"d"}, "d": {"a"}},
            [["a", "b", "c", "d"]],
            [["a", "b", "a"]],
        ),
        ({"a": {"a"}}, [], []),  # a module importing itself is no circle between modules
    ],
)
def test_the_cycle_finder_on_small_graphs(
    graph: dict[str, set[str]], groups: list[list[str]], loops: list[list[str]]
) -> None:
    assert import_cycles(graph) == groups
    assert [shortest_loop(graph, group) for group in groups] == loops


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PRODUCTION:
        (root / pkg).mkdir(exist_ok=True)
    return root


def test_a_deliberate_circle_is_reported_naming_its_modules_lazy_imports_too(
    tmp_path: Path,
) -> None:
    root = _tree(
        tmp_path,
        {
            "worker/__init__.py": "",
            "worker/training/__init__.py": "",
            # The circle of issue 26, in little: data -> train only inside a function.
            "worker/training/data.py": "def prepare():\n    from worker.training.train import x\n",
            "worker/training/train.py": "from .data import prepare\n",
            "worker/training/gate.py": "from worker.training import data\n",  # into it, not in it
            "shared/text.py": "import shared.vocab\n",
            "shared/vocab.py": "",
        },
    )
    assert import_graph(root)["worker.training.gate"] == {"worker.training.data"}
    assert circles(root) == [
        "import circle of 2 modules: worker.training.data, worker.training.train "
        "(e.g. worker.training.data -> worker.training.train -> worker.training.data)"
    ]
    (root / "worker/training/data.py").write_text("def prepare():\n    pass\n")
    assert circles(root) == []


def test_a_module_over_the_limit_is_named(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "api/long.py": "x = 1\n" * (MAX_LINES + 1),
            "api/fits.py": "x = 1\n" * MAX_LINES,
            "bench/long.py": "x = 1\n" * (MAX_LINES + 1),  # not production
        },
    )
    assert oversized(root) == [
        f"api/long.py: {MAX_LINES + 1} lines (at most {MAX_LINES}): split it"
    ]
