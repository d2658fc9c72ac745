"""Which optional extra a feature needs, and one clear error when it is not installed.

The base install (``pip install twinspace``) is the core, the clients and the CLI; servers and heavy
maths come with extras. A command that needs one says which, instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from twinspace.errors import TwinSpaceError

# Top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies]).
EXTRA_OF = {
    "fastapi": "broker", "starlette": "broker", "uvicorn": "broker", "sqlmodel": "broker", "sqlalchemy": "broker",
    "alembic": "broker", "psycopg": "broker", "pydantic_settings": "broker", "opa_client": "broker",
    "regopy": "broker", "redis": "broker", "jinja2": "broker", "multipart": "broker", "jsonschema": "broker",
    "numpy": "connector", "pyarrow": "connector", "tenseal": "connector", "pyproj": "connector",
    "shapely": "connector", "networkx": "connector",
    "web3": "chain", "eth_tester": "demo", "eth_utils": "chain",
}


class MissingExtra(TwinSpaceError):
    status = 501
    title = "Not Implemented"
    default_code = "missing_extra"

    def __init__(self, module: str, extra: str, what: str | None = None) -> None:
        self.module, self.extra = module, extra
        need = f"{what} needs" if what else "This needs"
        super().__init__(f"{need} the [{extra}] extra ({module} is not installed): "
                         f"pip install 'twinspace[{extra}]'")


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module an import failed on, or None for an unknown module."""
    return EXTRA_OF.get((exc.name or "").split(".")[0])


def require(module: str, extra: str | None = None, what: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingExtra naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or module, extra or extra_for(exc) or "all", what) from None
