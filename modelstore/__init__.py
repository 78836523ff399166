"""modelstore: Git-like, content-addressed storage for large ML checkpoints and datasets.

``from modelstore import Repository`` is the library entry point; ``modelstore.api`` has one
function per CLI verb. Imports are lazy so that ``ms --version`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["MsError", "Repository", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelstore.errors import MsError
    from modelstore.repository import Repository


_LAZY = {"Repository": "modelstore.repository", "MsError": "modelstore.errors"}


def __getattr__(name: str) -> Any:
    # importlib keeps the package root free of static imports: every layer may import
    # ``modelstore`` itself without depending on the repository layer.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
