//! fb-openchannel: connects a Facebook Page (Messenger and wall) to XCALLY Motion's
//! Openchannel, self-hosted beside Motion. See DESIGN.md and README.md.

pub mod acme;
pub mod allocator;
pub mod budget;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod facebook;
#[doc(hidden)]
pub mod files;
pub mod fuzzing;
pub mod hosts;
pub mod http_client;
pub mod ids;
#[cfg(test)]
mod layers;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod motion;
pub mod relay;
pub mod server;
pub mod sim;
pub mod statedir;
pub mod store;
pub mod time;
