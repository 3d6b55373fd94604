//! Placeholder: filled in by the engine_trust hardening change.
