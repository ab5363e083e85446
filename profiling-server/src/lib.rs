//! HTTP server for profiling-core (filled by its issue).
