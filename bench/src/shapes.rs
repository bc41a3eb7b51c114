//! Criterion shapes (stub).
