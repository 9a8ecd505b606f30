"""Writes the README's settings tables from the settings classes: each field's environment
variable, its default, and its docstring. `make gen` runs it; tests/unit/test_settings_table.py
fails while the README says something else.

    python scripts/settings_table.py          # rewrite README.md between the markers
    python scripts/settings_table.py --check  # exit 1 if README.md is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from admin_svc.settings import AdminSettings
from auth_svc.settings import AuthSettings
from chain_svc.settings import ChainSettings
from invite_svc.settings import InviteSettings
from mail_svc.settings import MailSettings
from mesh.settings import MeshSettings, Settings
from meshctl.settings import StackSettings
from ratelimit_svc.settings import RateLimitSettings
from web_svc.settings import WebSettings

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- settings: written by scripts/settings_table.py from the settings classes (make gen) -->"
END = "<!-- /settings -->"
TABLES: tuple[tuple[str, type[MeshSettings]], ...] = (
    ("Every process", Settings),
    ("meshctl and the edge it renders", StackSettings),
    ("auth_svc", AuthSettings),
    ("invite_svc", InviteSettings),
    ("mail_svc", MailSettings),
    ("ratelimit_svc", RateLimitSettings),
    ("admin_svc", AdminSettings),
    ("chain_svc", ChainSettings),
    ("web_svc", WebSettings),
)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    elif isinstance(value, list | dict):
        value = json.dumps(value)
    elif isinstance(value, SecretStr):
        return "set"
    return f"`{value}`"


def _table(title: str, kind: type[MeshSettings]) -> str:
    inherited = {name for base in kind.__mro__[1:] if hasattr(base, "model_fields") for name in base.model_fields}
    source = kind.__module__.replace(".", "/") + ".py"
    rows = [f"### {title} (`{source}`)", "", "| variable | default | meaning |", "|---|---|---|"]
    for name, field in kind.model_fields.items():
        if name in inherited:
            continue
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{kind.variable(name)}` | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def tables() -> str:
    return "\n\n".join(_table(title, kind) for title, kind in TABLES)


def with_tables(readme: str) -> str:
    before, _, rest = readme.partition(START + "\n")
    _, _, after = rest.partition(END)
    return f"{before}{START}\n\n{tables()}\n\n{END}{after}"


def main() -> int:
    current = README.read_text()
    wanted = with_tables(current)
    if "--check" in sys.argv[1:]:
        if wanted != current:
            print("README.md's settings tables are stale: run `make gen`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
