"""hypermobility-cds: a CDS Hooks 2.0 service for hypermobility-related back and hip pain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from cds_service.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask application factory (imported lazily so subpackages stay light)."""
    from cds_service.app import create_app as factory

    return factory(settings)


def __getattr__(name: str) -> Any:  # pragma: no cover - nothing else is exported
    raise AttributeError(name)
