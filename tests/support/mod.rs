//! Helpers shared by the integration tests; include with `mod support;`.

pub mod deps;
pub mod load;
pub mod proc;
pub mod python;
pub mod tls;
