//! postgres store: being written.
