//! Headscale-compatible REST API v1.
