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


def __getattr__(name: str) -> Any:
    if name == "Repository":
        from modelstore.repository import Repository

        return Repository
    if name == "MsError":
        from modelstore.errors import MsError

        return MsError
    raise AttributeError(name)
