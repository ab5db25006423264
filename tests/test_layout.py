"""Dependency direction: bot -> shared <- worker; shared never imports TF or telegram."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_roots(package: str) -> set[str]:
    roots: set[str] = set()
    for file in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_shared_imports_nothing_heavy_or_of_ours() -> None:
    assert not imported_roots("shared") & {
        "tensorflow",
        "keras",
        "telegram",
        "worker",
        "bot",
        "sklearn",
    }


def test_bot_never_imports_the_worker_or_tensorflow() -> None:
    assert not imported_roots("bot") & {"tensorflow", "keras", "worker"}


def test_models_is_data_not_a_package() -> None:
    assert not (REPO / "models" / "__init__.py").exists()
