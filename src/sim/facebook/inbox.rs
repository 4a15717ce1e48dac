//! The simulated Conversations API: each account's inbox as Meta shows it, whether or
//! not a webhook told of its messages.
//!
//! `GET /{page}/conversations?platform=messenger|instagram` (a Page token; `instagram`
//! lists the linked Instagram account's), `GET /{account}/conversations` or
//! `/me/conversations` with an Instagram Login token, and `GET /{conversation}/messages`:
//! the most recently updated conversation first, the newest message first, `limit` and
//! `after` cursors with `paging.next` only while there is more, the nested
//! `messages.limit(n){…}` field, and Instagram's rule that only the 20 most recent
//! messages of a conversation have details. Scripted failures (rate limits) are answered
//! first, one per call.

use hyper::Method;
use serde_json::{Value, json};

use super::{SendFailure, SimGraph, State, graph_error};
use crate::sim::http::{SimResponse, json as json_response};

/// A message of a simulated inbox.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    /// `m_…`: the id the webhook would carry as `mid`.
    pub mid: String,
    /// Written by the customer (else by the account: an agent, another tool).
    pub from_customer: bool,
    pub text: Option<String>,
    /// Unix milliseconds (Graph shows whole seconds).
    pub at_ms: i64,
    /// A photo's URL, when it carries one.
    pub image_url: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Conversation {
    id: String,
    /// The Page (Messenger) or Instagram account whose inbox holds it.
    owner: String,
    platform: &'static str,
    customer: String,
    /// Oldest first.
    messages: Vec<InboxMessage>,
}

impl Conversation {
    fn updated_ms(&self) -> i64 {
        self.messages.iter().map(|m| m.at_ms).max().unwrap_or(0)
    }
}

/// Instagram shows details of this many of a conversation's latest messages.
const INSTAGRAM_DETAILED: usize = 20;

impl SimGraph {
    /// A message in `owner`'s inbox (`platform` "messenger" or "instagram") in its
    /// conversation with `customer`.
    pub fn add_inbox_message(
        &self,
        owner: &str,
        platform: &str,
        customer: &str,
        message: InboxMessage,
    ) {
        let platform = if platform == "instagram" {
            "instagram"
        } else {
            "messenger"
        };
        let mut inbox = self.state.inbox.lock().unwrap();
        match inbox
            .iter_mut()
            .find(|c| c.owner == owner && c.customer == customer && c.platform == platform)
        {
            Some(conversation) => {
                conversation.messages.push(message);
                conversation.messages.sort_by_key(|m| m.at_ms);
            }
            None => {
                let id = match platform {
                    "instagram" => format!("aWdfZAG06{owner}{customer}"),
                    _ => format!("t_{owner}{customer}"),
                };
                inbox.push(Conversation {
                    id,
                    owner: owner.to_owned(),
                    platform,
                    customer: customer.to_owned(),
                    messages: vec![message],
                });
            }
        }
    }

    /// The next Conversations API calls fail with these, one per call.
    pub fn fail_inbox_calls(&self, failures: Vec<SendFailure>) {
        self.state.inbox_failures.lock().unwrap().extend(failures);
    }

    /// Conversations API calls received (lists and message pages).
    pub fn inbox_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && (r.path.ends_with("/conversations") || r.path.ends_with("/messages"))
            })
            .count()
    }
}

/// Answers a Conversations API call, or `None` when the request is not one. `caller`
/// is what the token belongs to (a Page, or an Instagram Login account).
pub(super) fn answer(
    state: &State,
    method: &Method,
    segments: &[&str],
    query: &str,
    caller: &str,
    instagram_login: bool,
) -> Option<SimResponse> {
    if *method != Method::GET {
        return None;
    }
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let limit = |default: usize| {
        param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .map(|l| l.clamp(1, 100))
            .unwrap_or(default)
    };
    let offset = param("after")
        .and_then(|a| a.strip_prefix("QVFI").and_then(|n| n.parse::<usize>().ok()))
        .unwrap_or(0);
    match segments {
        [_version, node, "conversations"] => {
            let platform = param("platform").unwrap_or_else(|| "messenger".into());
            let owner = if instagram_login {
                if *node != "me" && *node != caller {
                    return Some(not_found(node));
                }
                caller.to_owned()
            } else {
                if *node != caller {
                    return Some(not_found(node));
                }
                match platform.as_str() {
                    "messenger" => caller.to_owned(),
                    "instagram" => {
                        match state.linked_instagram.lock().unwrap().get(caller).cloned() {
                            Some(account) => account,
                            None => {
                                return Some(graph_error(
                                    400,
                                    100,
                                    None,
                                    "(#100) The Page has no linked Instagram account",
                                ));
                            }
                        }
                    }
                    _ => {
                        return Some(graph_error(
                            400,
                            100,
                            None,
                            "(#100) platform must be one of messenger, instagram",
                        ));
                    }
                }
            };
            if let Some(failure) = scripted_failure(state) {
                return Some(failure);
            }
            let fields = param("fields").unwrap_or_default();
            let embedded = nested_limit(&fields);
            let mut conversations: Vec<Conversation> = state
                .inbox
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.owner == owner && c.platform == platform)
                .cloned()
                .collect();
            conversations.sort_by_key(|c| std::cmp::Reverse(c.updated_ms()));
            let limit = limit(25);
            let data: Vec<Value> = conversations
                .iter()
                .skip(offset)
                .take(limit)
                .map(|c| {
                    let mut entry = json!({"id": c.id, "updated_time": graph_time(c.updated_ms())});
                    if let Some(n) = embedded {
                        entry["messages"] = messages_page(c, n, 0);
                    }
                    entry
                })
                .collect();
            Some(json_response(
                200,
                page_of(data, offset, limit, conversations.len()),
            ))
        }
        [_version, id, "messages"] => {
            let conversation = state
                .inbox
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.id == *id)
                .cloned()?;
            let owner_ok = conversation.owner == caller
                || state.linked_instagram.lock().unwrap().get(caller) == Some(&conversation.owner);
            if !owner_ok {
                return Some(not_found(id));
            }
            if let Some(failure) = scripted_failure(state) {
                return Some(failure);
            }
            Some(json_response(
                200,
                messages_page(&conversation, limit(25), offset),
            ))
        }
        _ => None,
    }
}

fn scripted_failure(state: &State) -> Option<SimResponse> {
    let f = state.inbox_failures.lock().unwrap().pop_front()?;
    let mut response = json_response(f.status, f.body);
    for (k, v) in f.headers {
        response.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Some(response)
}

fn not_found(node: &str) -> SimResponse {
    graph_error(
        400,
        100,
        Some(33),
        &format!(
            "Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ),
    )
}

/// `n` of `messages.limit(n){…}` in a `fields` parameter (25 without a limit).
fn nested_limit(fields: &str) -> Option<usize> {
    let rest = fields.split(',').find_map(|f| f.strip_prefix("messages"))?;
    let n = rest
        .strip_prefix(".limit(")
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(25);
    Some(n.clamp(1, 100))
}

/// One page of a conversation's messages, newest first.
fn messages_page(c: &Conversation, limit: usize, offset: usize) -> Value {
    let newest_first: Vec<&InboxMessage> = c.messages.iter().rev().collect();
    let data: Vec<Value> = newest_first
        .iter()
        .enumerate()
        .skip(offset)
        .take(limit)
        .map(|(i, m)| {
            if c.platform == "instagram" && i >= INSTAGRAM_DETAILED {
                // Listed, but without details (Meta: "the message has been deleted").
                return json!({"id": m.mid, "created_time": graph_time(m.at_ms)});
            }
            let (from, to) = if m.from_customer {
                (&c.customer, &c.owner)
            } else {
                (&c.owner, &c.customer)
            };
            let person = |id: &String| match c.platform {
                "instagram" => json!({"username": format!("user{id}"), "id": id}),
                _ => json!({"name": format!("Person {id}"), "email": format!("{id}@facebook.com"), "id": id}),
            };
            let mut message = json!({
                "id": m.mid,
                "created_time": graph_time(m.at_ms),
                "from": person(from),
                "to": {"data": [person(to)]},
                "message": m.text.clone().unwrap_or_default(),
            });
            if let Some(url) = &m.image_url {
                message["attachments"] = json!({"data": [{
                    "id": format!("{}-a", m.mid),
                    "mime_type": "image/jpeg",
                    "name": "image.jpg",
                    "size": 1000,
                    "image_data": {"width": 100, "height": 100, "url": url, "preview_url": url}
                }]});
            }
            message
        })
        .collect();
    page_of(data, offset, limit, newest_first.len())
}

/// `{"data": …, "paging": …}` as Graph pages a list: cursors always, `next` only while
/// there is more.
fn page_of(data: Vec<Value>, offset: usize, limit: usize, total: usize) -> Value {
    let shown = data.len();
    let mut paging = json!({"cursors": {"before": format!("QVFI{offset}"), "after": format!("QVFI{}", offset + shown)}});
    if offset + limit < total {
        paging["next"] = json!(format!(
            "https://graph.facebook.com/v24.0/next?after=QVFI{}",
            offset + shown
        ));
    }
    json!({"data": data, "paging": paging})
}

/// Graph's time format: `2024-05-01T10:00:00+0000`.
fn graph_time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('Z', "+0000")
}
