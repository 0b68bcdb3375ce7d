//! Herald's admin dashboard: askama pages over an admin port that the server implements.
//!
//! This crate is a placeholder until the dashboard issue lands; see `README.md` and
//! `ARCHITECTURE.md` for the seam it will fill (the `AdminPort` trait and `router(...)`).
