//! Where a wall post or comment becomes notify calls to Motion, and where an agent's
//! answer finds the object to comment on.
//!
//! Pure decisions, tested against the fixtures:
//! - [`intake_state`]: visitor posts and comments (add, edited, remove, hide) are
//!   delivered; anything by the Page itself (admin posts, our own comment replies coming
//!   back), reactions, likes and kinds without customer text are recorded only;
//! - [`plan`]: the notify envelope (`threadId` = the post, so each post is one
//!   interaction in Motion; `externalUrl`; the author's id and name) and its steps;
//! - [`reply_target`]: which object an agent's answer in a thread comments on.

use crate::config::PageConfig;
use crate::facebook::feed::{FeedChange, FeedKind};
use crate::ids::ObjectId;
use crate::relay::messenger::Step;
use crate::store::NewState;

/// Who a notify is from and which Motion interaction it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub thread_id: Option<String>,
    pub external_url: Option<String>,
}

/// Whether a feed change on `page` is delivered to Motion, and if not, why.
pub fn intake_state(
    field: &str,
    change: &Result<FeedChange, String>,
    page: &PageConfig,
) -> NewState {
    let skip = |why: &str| NewState::Skipped(why.to_owned());
    if !page.wall_posts {
        return skip("wall_posts = false for this page");
    }
    if field != "feed" {
        return NewState::Skipped(format!("page field {field:?} is not forwarded"));
    }
    let change = match change {
        Ok(c) => c,
        Err(e) => return NewState::Failed(e.clone()),
    };
    let Some(author) = change.author_id() else {
        return skip("no author in the change");
    };
    if author == page.id.get_ref() {
        return skip("by the Page itself (admin activity or one of our own replies)");
    }
    if change.post_id().is_none() {
        return skip("no post id in the change");
    }
    match (change.kind(), change.verb.as_str()) {
        (FeedKind::Reaction, "add" | "remove" | "edit") if page.wall_reactions => NewState::Pending,
        (FeedKind::Reaction, _) => {
            skip("reaction or like: not forwarded (wall_reactions = false for this page)")
        }
        (FeedKind::Other, _) => NewState::Skipped(format!(
            "feed item {:?} carries no customer text",
            change.item
        )),
        (FeedKind::Comment, _) if change.comment_id().is_none() => {
            skip("comment without a comment id")
        }
        (FeedKind::Post | FeedKind::Comment, "add") => {
            if has_text(change) || !media(change).is_empty() || change.item == "share" {
                NewState::Pending
            } else {
                skip("no text, photo, video or link")
            }
        }
        (FeedKind::Post | FeedKind::Comment, "edited" | "remove" | "hide") => NewState::Pending,
        (_, verb) => NewState::Skipped(format!("verb {verb:?} is not forwarded")),
    }
}

fn has_text(change: &FeedChange) -> bool {
    change
        .message
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty())
}

/// Photos and videos carried by a change, as URLs to fetch.
fn media(change: &FeedChange) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    urls.extend(change.photo.iter().cloned());
    urls.extend(change.photos.iter().cloned());
    urls.extend(change.video.iter().cloned());
    if matches!(change.item.as_str(), "photo" | "video") {
        urls.extend(change.link.iter().cloned());
    }
    urls
}

/// A link to the post or comment in the form Facebook itself links to:
/// `https://www.facebook.com/{page}/posts/{post}` for post `{page}_{post}`, and
/// `…?comment_id={comment}` for comment `{post}_{comment}`. Built by segments from
/// parsed ids; a post id not of the `{page}_{post}` form is linked as it is.
pub fn external_url(change: &FeedChange) -> Option<String> {
    let post = ObjectId::parse(change.post_id()?).ok()?;
    let mut url = url::Url::parse("https://www.facebook.com").expect("a static URL");
    {
        let mut path = url.path_segments_mut().expect("https has a path");
        match post.as_str().split_once('_') {
            Some((page, post)) => path.extend([page, "posts", post]),
            None => path.extend([post.as_str()]),
        };
    }
    if let (FeedKind::Comment, Some(comment)) = (change.kind(), change.comment_id())
        && let Ok(comment) = ObjectId::parse(comment)
    {
        let own = comment
            .as_str()
            .rsplit('_')
            .next()
            .unwrap_or(comment.as_str());
        url.query_pairs_mut().append_pair("comment_id", own);
    }
    Some(url.to_string())
}

/// The envelope and steps of a delivered feed change.
pub fn plan(change: &FeedChange) -> (Envelope, Vec<Step>) {
    let (first_name, last_name) = split_name(change.author_name());
    let envelope = Envelope {
        from: change.author_id().unwrap_or_default().to_owned(),
        first_name,
        last_name,
        thread_id: change.post_id().map(str::to_owned),
        external_url: external_url(change),
    };
    let what = if change.kind() == FeedKind::Comment {
        "comment"
    } else {
        "post"
    };
    let text =
        crate::relay::messenger::customer_text(change.message.as_deref().unwrap_or("").trim())
            .into_owned();
    let mut steps = Vec::new();
    if change.kind() == FeedKind::Reaction {
        let reaction = change
            .reaction_type
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or("like");
        // On a comment the change names it; else the post itself.
        let on = if change.comment_id.is_some() {
            "a comment on this post"
        } else {
            "this post"
        };
        steps.push(Step::Text(match change.verb.as_str() {
            "remove" => format!("[removed the reaction {reaction} from {on}]"),
            _ => format!("[reacted {reaction} to {on}]"),
        }));
        return (envelope, steps);
    }
    match change.verb.as_str() {
        "remove" => steps.push(Step::Text(format!("[the customer deleted this {what}]"))),
        "hide" => steps.push(Step::Text(format!("[this {what} was hidden on the Page]"))),
        "edited" => steps.push(Step::Text(format!("[edited] {text}"))),
        _ => {
            if !text.is_empty() {
                steps.push(Step::Text(text));
            }
            if change.item == "share"
                && let Some(link) = &change.link
            {
                steps.push(Step::Text(format!("[link] {link}")));
            }
            for url in media(change) {
                let label = if url.contains(".mp4")
                    || change.item == "video"
                    || change.video.as_deref() == Some(&url)
                {
                    "video"
                } else {
                    "photo"
                };
                steps.push(Step::File {
                    fallback: format!("[{label}] {url}"),
                    url,
                    label: None,
                });
            }
        }
    }
    (envelope, steps)
}

/// "Ada Lovelace" → ("Ada", "Lovelace"); a one-word name is a first name.
fn split_name(name: Option<&str>) -> (Option<String>, Option<String>) {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => (None, None),
        Some(n) => match n.split_once(' ') {
            Some((first, last)) => (Some(first.to_owned()), Some(last.trim().to_owned())),
            None => (Some(n.to_owned()), None),
        },
    }
}

/// Where an agent's answer in a wall thread goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    /// The object to comment on: a top-level comment, or the post.
    pub comment_on: ObjectId,
    /// The customer's object a private reply answers (their comment, or their post).
    pub private_to: PrivateTo,
    /// Facebook time (s) of the customer's object, for the 7-day private-reply limit.
    pub created_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateTo {
    Comment(ObjectId),
    Post(ObjectId),
}

/// Picks the object to answer: under the customer's most recent comment in the thread
/// (on its parent when it is itself a reply, since Facebook nests one level), else on
/// the post. `customer_comments` are the customer's `add` comments, newest first; one
/// whose ids are not Facebook ids is passed over.
pub fn reply_target(
    post_id: &ObjectId,
    customer_comments: &[FeedChange],
    post_created: Option<i64>,
) -> ReplyTarget {
    let usable = customer_comments.iter().find_map(|c| {
        let comment = ObjectId::parse(c.comment_id()?).ok()?;
        let comment_on = if c.is_reply() {
            ObjectId::parse(c.parent_id()?).ok()?
        } else {
            comment.clone()
        };
        Some((c, comment, comment_on))
    });
    match usable {
        Some((c, comment, comment_on)) => ReplyTarget {
            comment_on,
            private_to: PrivateTo::Comment(comment),
            created_time: c.created_time(),
        },
        None => ReplyTarget {
            comment_on: post_id.clone(),
            private_to: PrivateTo::Post(post_id.clone()),
            created_time: post_created,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(json: serde_json::Value) -> FeedChange {
        FeedChange::parse(&json).unwrap()
    }

    #[test]
    fn reply_target_follows_facebooks_one_level_nesting() {
        let top = change(
            serde_json::json!({"item":"comment","verb":"add","post_id":"1_2","comment_id":"2_10","parent_id":"1_2","from":{"id":"7"},"created_time":100}),
        );
        let reply = change(
            serde_json::json!({"item":"comment","verb":"add","post_id":"1_2","comment_id":"2_11","parent_id":"2_10","from":{"id":"7"},"created_time":200}),
        );
        let id = |s: &str| ObjectId::parse(s).unwrap();
        let post = id("1_2");
        let t = reply_target(&post, std::slice::from_ref(&top), None);
        assert_eq!(t.comment_on, id("2_10"));
        assert_eq!(t.private_to, PrivateTo::Comment(id("2_10")));
        let t = reply_target(&post, &[reply, top.clone()], None);
        assert_eq!(
            t.comment_on,
            id("2_10"),
            "a reply is answered under its parent"
        );
        assert_eq!(t.private_to, PrivateTo::Comment(id("2_11")));
        assert_eq!(t.created_time, Some(200));
        let t = reply_target(&post, &[], Some(50));
        assert_eq!(t.comment_on, post);
        assert_eq!(t.private_to, PrivateTo::Post(post.clone()));
        // A stored comment whose id is not an id is passed over, never commented on.
        let forged = change(
            serde_json::json!({"item":"comment","verb":"add","post_id":"1_2","comment_id":"1/feed","parent_id":"1_2","from":{"id":"7"},"created_time":300}),
        );
        let t = reply_target(&post, &[forged, top], None);
        assert_eq!(t.comment_on, id("2_10"));
    }

    #[test]
    fn links_are_the_form_facebook_links_to() {
        let post = change(
            serde_json::json!({"item":"status","verb":"add","post_id":"1234567890321_98735342324352","from":{"id":"7"}}),
        );
        assert_eq!(
            external_url(&post).as_deref(),
            Some("https://www.facebook.com/1234567890321/posts/98735342324352")
        );
        let comment = change(
            serde_json::json!({"item":"comment","verb":"add","post_id":"1234567890321_98735342324352","comment_id":"98735342324352_1264545546974600","from":{"id":"7"}}),
        );
        assert_eq!(
            external_url(&comment).as_deref(),
            Some(
                "https://www.facebook.com/1234567890321/posts/98735342324352?comment_id=1264545546974600"
            )
        );
        let forged = change(
            serde_json::json!({"item":"status","verb":"add","post_id":"1/../evil","from":{"id":"7"}}),
        );
        assert_eq!(external_url(&forged), None);
    }

    #[test]
    fn names_split_on_the_first_space() {
        assert_eq!(
            split_name(Some("John Doe")),
            (Some("John".into()), Some("Doe".into()))
        );
        assert_eq!(
            split_name(Some("Ada King Lovelace")),
            (Some("Ada".into()), Some("King Lovelace".into()))
        );
        assert_eq!(split_name(Some("Cher")), (Some("Cher".into()), None));
        assert_eq!(split_name(None), (None, None));
    }
}
