//! A file on its way through the daemon — a customer's photo from Facebook's CDN into
//! Motion, an agent's file from Motion to Graph — as both worlds hand it over. Below
//! Facebook's and Motion's clients, which take it and give it without knowing each
//! other.

use bytes::Bytes;

/// A file fetched whole: its name, its MIME type, its bytes.
#[derive(Debug, Clone)]
pub struct Download {
    pub file_name: String,
    pub content_type: String,
    pub bytes: Bytes,
    /// The room its bytes hold in the file budget, while it lives.
    pub room: Option<crate::budget::Held>,
}
