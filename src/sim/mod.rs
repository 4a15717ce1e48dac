//! Simulated peers: a Facebook (webhook sender and Graph API) and a Motion (Openchannel
//! API), real HTTP servers on loopback that behave like the real ones — including their
//! errors, slowness, duplicates and outages. `demo` and the test suite use them; the
//! daemon's own code paths are never replaced.

pub mod facebook;
pub mod http;
pub mod motion;
pub mod postgres;
pub mod rundirs;
pub mod tls;
