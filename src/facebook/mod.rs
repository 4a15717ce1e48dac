//! Everything about Facebook: the webhook payloads it sends us ([`webhook`]), how their
//! signature is checked ([`signature`]), and the Graph API we call ([`graph`]).

pub mod feed;
pub mod graph;
/// The ids of Meta's objects live below Facebook's and Motion's worlds: both take them.
pub use crate::ids;
pub mod ig_comment;
pub mod login;
pub mod media;
pub mod signature;
pub mod signed_request;
pub mod webhook;
