//! Placeholder: filled in by the api hardening change.
