"""The kopf operator: reconciles EventPipeline resources and scales processors from stream lag."""

__all__: list[str] = []
