//! The process provider (see the crate docs).
