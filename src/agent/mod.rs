//! The long-running hub agent: the scheduler that applies the backup rule to every
//! connector under the hub root ([`scheduler`]), its settings from flags, environment and
//! a file ([`config`]), and its Prometheus metrics ([`metrics`]). Shutdown is a value
//! passed in ([`shutdown`]).

pub mod capture;
pub mod compactor;
pub mod config;
pub mod log;
pub mod malloc;
pub mod metrics;
pub mod scheduler;
pub mod shutdown;
pub mod watch;

pub use scheduler::{Agent, AgentOptions};
