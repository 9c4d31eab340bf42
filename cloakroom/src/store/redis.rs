//! redis store: being written.
