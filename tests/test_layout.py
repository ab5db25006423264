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
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "worker", "bot", "api", "bench", "tests")
WEB = {"fastapi", "starlette", "uvicorn"}
HEAVY = {"tensorflow", "keras", "telegram", "sklearn", "scipy", "matplotlib", "gensim", *WEB}


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


def test_the_tree_follows_the_layout_rules() -> None:
    assert violations(REPO) == []


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
