"""The HTTP ingest service: validates events and makes them durable in JetStream before ``202``."""

from .app import IngestService, create_app
from .server import serve

__all__ = ["IngestService", "create_app", "serve"]
