//! sqlite store: being written.
