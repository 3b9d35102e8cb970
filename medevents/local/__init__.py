"""Running medevents on one machine: embedded servers, child processes, ``medevents up``."""

from medevents.local.procs import Child, spawn
from medevents.local.servers import EmbeddedMongo, EmbeddedNats, EmbeddedNatsCluster, free_port

__all__ = ["Child", "EmbeddedMongo", "EmbeddedNats", "EmbeddedNatsCluster", "free_port", "spawn"]
