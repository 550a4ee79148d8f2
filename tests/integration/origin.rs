//! The playback origin (issue #5): tests live here.
