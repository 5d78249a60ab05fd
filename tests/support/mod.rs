//! Helpers shared by the integration tests; include with `mod support;`.

pub mod deps;
pub mod examples;
pub mod h2client;
pub mod load;
pub mod proc;
pub mod proxy;
pub mod python;
pub mod tls;
