//! The recording-overhead calibration, measured by `profiling-core`
//! ([`profiling_core::analyze::overhead`]) and re-exported here under its former path.

pub use profiling_core::analyze::overhead::{calibration, Calibration};
