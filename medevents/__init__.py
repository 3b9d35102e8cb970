"""medevents: durable, per-patient ordered, exactly-once ingestion of medical events.

The kernel shared by the components: settings (:mod:`medevents.config`), the event model
(:mod:`medevents.model`), subjects and partitions (:mod:`medevents.subjects`), event ids
(:mod:`medevents.ids`), the JetStream topology (:mod:`medevents.topology`), the MongoDB store
(:mod:`medevents.store`), logs, metrics, probes, problems, the CLI and the local runner.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
