//! Facebook ids, parsed once where they come in (DESIGN §4 rule 10).
//!
//! Every id that goes into a Graph URL is one of these types, and these types can only
//! hold what Facebook's ids look like: digits (Pages, people), or digits, `_`, digits
//! (posts and comments: `{page}_{post}`, `{post}_{comment}`). A sender id such as
//! `../../me/feed?x=` in a signed webhook, or a `threadId` of `<page>/feed#` from a Reply
//! URL call, is refused when it is parsed, and can never become part of a request to
//! Graph. URLs are still built by path segments (see `graph`), so even a valid id is
//! one segment, never more.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest run of digits accepted in an id (Facebook's are up to ~20).
const MAX_DIGITS: usize = 32;

/// Why a text is not a Facebook id. The text itself is not repeated: it comes from
/// outside and goes to logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not a Facebook id ({expected})")]
pub struct IdError {
    pub what: &'static str,
    pub expected: &'static str,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DIGITS && s.bytes().all(|b| b.is_ascii_digit())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $expected:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, IdError> {
                let valid: fn(&str) -> bool = $valid;
                if valid(text) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(IdError {
                        what: $what,
                        expected: $expected,
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// From a JSON string or number, as Facebook sends ids.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = match serde_json::Value::deserialize(d)? {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A Facebook Page (`entry[].id`, `[[page]] id`): digits.
    PageId,
    "the page id",
    "digits",
    digits
);

id_type!(
    /// An Instagram professional account (`entry[].id` of `object: "instagram"`
    /// webhooks, `[[instagram]] id`): digits.
    InstagramId,
    "the Instagram account id",
    "digits",
    digits
);

/// An account that sends through the Send API (`POST /{id}/messages`): a Page, or an
/// Instagram account with its own token (Instagram Login).
pub trait Sender {
    fn as_segment(&self) -> &str;
}

impl Sender for PageId {
    fn as_segment(&self) -> &str {
        self.as_str()
    }
}

impl Sender for InstagramId {
    fn as_segment(&self) -> &str {
        self.as_str()
    }
}

id_type!(
    /// A person as a Page sees them: a Messenger PSID, or the author of a post or
    /// comment on the wall. Digits.
    UserId,
    "the customer id",
    "digits",
    digits
);

id_type!(
    /// A post or a comment: `{page}_{post}` / `{post}_{comment}` (digits, `_`, digits), or
    /// plain digits for objects Facebook names that way.
    ObjectId,
    "the post or comment id",
    "digits, or digits_digits",
    |s| match s.split_once('_') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(s),
    }
);

/// A Facebook id. Facebook sends ids as JSON strings or numbers; we keep them as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FbId(pub String);

impl fmt::Display for FbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FbId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = FbId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id as a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FbId, E> {
                Ok(FbId(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FbId, E> {
                Ok(FbId(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FbId, E> {
                Ok(FbId(v.to_string()))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hold_only_what_facebook_ids_look_like() {
        for good in ["1", "12345654332", "98765432143212345678"] {
            assert_eq!(UserId::parse(good).unwrap().as_str(), good);
            assert!(PageId::parse(good).is_ok());
            assert!(ObjectId::parse(good).is_ok());
        }
        for good in ["1234567890321_900728623356296", "1_2"] {
            assert!(ObjectId::parse(good).is_ok(), "{good}");
            assert!(UserId::parse(good).is_err(), "{good}");
        }
        for bad in [
            "",
            "../../me/feed?x=",
            "123/feed#",
            "1234567890321/feed",
            "12 34",
            "123\n",
            "-1",
            "+1",
            "1_2_3",
            "_1",
            "1_",
            "١٢٣",
            "me",
            "1234567890123456789012345678901234567890",
            "%2e%2e",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
            assert!(PageId::parse(bad).is_err(), "{bad:?}");
            assert!(ObjectId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_come_as_strings_or_numbers_and_nothing_else() {
        let id: UserId = serde_json::from_str("987654321432").unwrap();
        assert_eq!(id.as_str(), "987654321432");
        let id: UserId = serde_json::from_str("\"987654321432\"").unwrap();
        assert_eq!(id.to_string(), "987654321432");
        assert!(serde_json::from_str::<UserId>("\"../../me\"").is_err());
        assert!(serde_json::from_str::<UserId>("-5").is_err());
        assert!(serde_json::from_str::<UserId>("1.5").is_err());
        assert!(serde_json::from_str::<UserId>("null").is_err());
        let e = UserId::parse("../../me/feed?x=").unwrap_err();
        assert!(!e.to_string().contains("feed"), "{e}");
    }
}
