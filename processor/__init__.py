"""The processor: JetStream -> MongoDB, per-patient ordered and exactly once (see docs/ARCHITECTURE.md)."""
