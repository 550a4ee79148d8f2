//! The creators' ingest API: assets, simple uploads and tus 1.0.0 resumable
//! uploads, the watch folder, RTMP (issue #4).
//!
//! Not built yet: `cascade serve --roles ingest` currently serves only the
//! health endpoints. Kept as its own crate so the binary's role wiring and
//! the layering (ingest -> platform -> schemas) are in place.
