"""The README's settings tables are the settings classes, written out (scripts/settings_table.py)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from mesh.services import SERVICES, WEB
from mesh.settings import MeshSettings

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings_classes() -> set[type[MeshSettings]]:
    """Every settings class the code defines: mesh's, meshctl's and each service's own."""
    modules = ["mesh.settings", "meshctl.settings"]
    packages = [spec.name for spec in SERVICES] + [WEB.name]
    modules += [f"{name}.settings" for name in packages if importlib.util.find_spec(f"{name}.settings")]
    found = set()
    for name in modules:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, type) and issubclass(value, MeshSettings) and value is not MeshSettings:
                found.add(value)
    return found


def test_the_readme_tables_are_what_the_classes_say() -> None:
    readme = (ROOT / "README.md").read_text()

    assert _script().with_tables(readme) == readme, "README.md's settings tables are stale: run `make gen`"


def test_every_settings_class_has_a_table() -> None:
    assert {kind for _, kind in _script().TABLES} == _settings_classes()


def _declared(kind: type[MeshSettings]) -> list[str]:
    """The fields `kind` declares itself, not those it inherits."""
    inherited = {name for base in kind.__mro__[1:] if issubclass(base, MeshSettings) for name in base.model_fields}
    return [name for name in kind.model_fields if name not in inherited]


def test_every_setting_says_what_it_means_under_a_variable_of_its_own() -> None:
    declared = [(kind, name) for kind in _settings_classes() for name in _declared(kind)]
    variables = [kind.variable(name) for kind, name in declared]

    assert [kind.variable(name) for kind, name in declared if not kind.model_fields[name].description] == []
    assert sorted(variables) == sorted(set(variables))
    assert all(variable.startswith("MESH_") for variable in variables)
