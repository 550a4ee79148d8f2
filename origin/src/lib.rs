//! The caching HTTP origin players and CDNs pull HLS (RFC 8216) and DASH
//! (ISO/IEC 23009-1) manifests and CMAF segments from (issue #5).
//!
//! Not built yet: `cascade serve --roles origin` currently serves only the
//! health endpoints. Kept as its own crate so the binary's role wiring and
//! the layering (origin -> platform -> schemas) are in place.
