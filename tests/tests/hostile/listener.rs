//! Placeholder: filled in by the listener hardening change.
