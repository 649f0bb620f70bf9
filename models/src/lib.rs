//! Per-architecture modules.
