//! Facebook throttling one feature of a Page, and the daemon's own pace for comments.
//!
//! Code 368 ("temporarily blocked from using this feature") usually throttles one
//! feature — most often comments — for hours, and 10/1893063 ("Page temporarily
//! restricted from sending") does the same for messages. Before, either stopped every
//! send of the Page, Messenger included, until a restart. Now the feature that was
//! refused pauses alone ([`Pauses::block`]): its items stay queued, the next try is
//! after the pause (15 min by default, doubling while it lasts, at most 16 times that),
//! and the first success resumes it. The other features of the Page go on.
//!
//! Comments are also paced per Page ([`Pauses::comment_slot`]): an agent answering a
//! dozen comments in a minute must not look like the bursts that trigger the throttle.
//!
//! On a shared queue (two hosts) both are shared by the nodes, through the database: a
//! pause one node meets holds on the other ([`Pauses::merge`]), and the comments keep one
//! pace (`Store::comment_slot`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::SharedPause;
use crate::time::duration_ms;

/// A feature of a Page that Facebook may throttle on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// Send API messages to a customer.
    Messages,
    /// Comments on the Page's posts.
    Comments,
    /// Private replies to comments and posts.
    PrivateReplies,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Messages => "messages",
            Feature::Comments => "comments",
            Feature::PrivateReplies => "private_replies",
        }
    }

    /// For sentences: "comments", "private replies".
    pub fn words(self) -> &'static str {
        match self {
            Feature::Messages => "messages",
            Feature::Comments => "comments",
            Feature::PrivateReplies => "private replies",
        }
    }

    /// The permission its Graph calls need.
    pub fn permission(self) -> &'static str {
        match self {
            Feature::Messages | Feature::PrivateReplies => "pages_messaging",
            Feature::Comments => "pages_manage_engagement",
        }
    }

    pub const ALL: [Feature; 3] = [
        Feature::Messages,
        Feature::Comments,
        Feature::PrivateReplies,
    ];

    /// The feature named by [`Feature::as_str`].
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// One paused feature of one Page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// When it started (ms), and no call of the feature before `until` (ms).
    pub since: i64,
    pub until: i64,
    /// The length of this pause: the next doubles it.
    pub length: Duration,
    /// Facebook's words.
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Pauses {
    paused: Mutex<HashMap<(String, Feature), Pause>>,
    /// Page → the time (ms) its next comment may go out.
    next_comment: Mutex<HashMap<String, i64>>,
}

impl Pauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Feature), Pause>> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pause of a feature, if it is paused at `now`.
    pub fn active(&self, page: &str, feature: Feature, now: i64) -> Option<Pause> {
        self.lock()
            .get(&(page.to_owned(), feature))
            .filter(|p| p.until > now)
            .cloned()
    }

    /// Facebook refused the feature: pauses it for `first` (a fresh pause), or twice
    /// the last pause when it was paused already, at most 16 × `first`. Returns the
    /// pause, and whether it is a fresh one (to log once).
    pub fn block(
        &self,
        page: &str,
        feature: Feature,
        now: i64,
        first: Duration,
        reason: String,
    ) -> (Pause, bool) {
        let mut paused = self.lock();
        let key = (page.to_owned(), feature);
        let (length, since, fresh) = match paused.get(&key) {
            // Another item met the same pause before it was over: no longer pause.
            Some(p) if p.until > now => return (p.clone(), false),
            Some(p) => ((p.length * 2).min(first * 16), p.since, false),
            None => (first, now, true),
        };
        let pause = Pause {
            since,
            until: now.saturating_add(duration_ms(length)),
            length,
            reason,
        };
        paused.insert(key, pause.clone());
        (pause, fresh)
    }

    /// The feature worked: its pause, if any, is over. Returns the pause that ended.
    pub fn clear(&self, page: &str, feature: Feature) -> Option<Pause> {
        self.lock().remove(&(page.to_owned(), feature))
    }

    /// Every pause, for `/readyz` and metrics: `(page, feature, pause)`.
    pub fn all(&self) -> Vec<(String, Feature, Pause)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|((page, feature), p)| (page.clone(), *feature, p.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Takes in the pauses the nodes of a shared queue met (`rows`): a pause this node
    /// does not know yet, or knows shorter, holds here too; one it knows that another
    /// node's call has ended since (`until` past, begun no later than this node's) ends
    /// here. Returns what changed: `(page, feature, pause, started)`.
    pub fn merge(&self, rows: &[SharedPause], now: i64) -> Vec<(String, Feature, Pause, bool)> {
        let mut paused = self.lock();
        let mut changed = Vec::new();
        for row in rows {
            let Some(feature) = Feature::parse(&row.feature) else {
                continue;
            };
            let key = (row.page_id.clone(), feature);
            let known = paused.get(&key).filter(|p| p.until > now);
            let pause = Pause {
                since: row.since,
                until: row.until,
                length: Duration::from_millis(u64::try_from(row.length_ms).unwrap_or(0)),
                reason: row.reason.clone(),
            };
            match known {
                None if row.until > now => {
                    paused.insert(key, pause.clone());
                    changed.push((row.page_id.clone(), feature, pause, true));
                }
                Some(p) if row.until > p.until => {
                    paused.insert(key, pause);
                }
                Some(p) if row.until <= now && p.since <= row.since => {
                    let ended = paused.remove(&key).expect("known");
                    changed.push((row.page_id.clone(), feature, ended, false));
                }
                _ => {}
            }
        }
        changed
    }

    /// The time (ms) at which the next comment of `page` may go out, at least
    /// `interval` after the one before; reserves it.
    pub fn comment_slot(&self, page: &str, interval: Duration, now: i64) -> i64 {
        let mut next = self.next_comment.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.get(page).copied().unwrap_or(now).max(now);
        next.insert(page.to_owned(), slot.saturating_add(duration_ms(interval)));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_pause_is_per_feature_and_grows_while_it_lasts() {
        let p = Pauses::default();
        let (first, fresh) = p.block("1", Feature::Comments, 0, 15 * MIN, "368".into());
        assert!(fresh);
        assert_eq!(first.until, 15 * 60_000);
        assert!(p.active("1", Feature::Comments, 1).is_some());
        assert!(
            p.active("1", Feature::Messages, 1).is_none(),
            "messages go on"
        );
        assert!(
            p.active("2", Feature::Comments, 1).is_none(),
            "other pages go on"
        );
        // Met again during the pause: the same pause.
        let (same, fresh) = p.block("1", Feature::Comments, 10, 15 * MIN, "368".into());
        assert!(!fresh);
        assert_eq!(same, first);
        // Refused again after it: twice as long, up to 16 times the first.
        let mut now = first.until;
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let (pause, _) = p.block("1", Feature::Comments, now, 15 * MIN, "368".into());
            lengths.push(pause.length.as_secs() / 60);
            now = pause.until;
        }
        assert_eq!(lengths, [30, 60, 120, 240, 240, 240]);
        assert!(p.clear("1", Feature::Comments).is_some());
        assert!(p.active("1", Feature::Comments, now).is_none());
    }

    /// On a shared queue: a pause another node met holds here; one this node knows
    /// ends when another node's call went through, unless it began here after that.
    #[test]
    fn another_nodes_pauses_start_and_end_here() {
        let p = Pauses::default();
        let row = |page: &str, since, until| SharedPause {
            page_id: page.into(),
            feature: "comments".into(),
            since,
            until,
            length_ms: 15 * 60_000,
            reason: "(#368) blocked".into(),
        };
        let odd = SharedPause {
            feature: "pokes".into(),
            ..row("9", 0, 99_000)
        };
        let changed = p.merge(&[row("1", 1_000, 901_000), odd, row("2", 0, 500)], 2_000);
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(
            (changed[0].0.as_str(), changed[0].1, changed[0].3),
            ("1", Feature::Comments, true)
        );
        assert_eq!(
            p.active("1", Feature::Comments, 2_000).unwrap().until,
            901_000
        );
        assert!(
            p.active("2", Feature::Comments, 2_000).is_none(),
            "over already"
        );
        assert!(
            p.merge(&[row("1", 1_000, 901_000)], 3_000).is_empty(),
            "known"
        );

        // Another node's call went through at 5,000: the pause ends here too.
        let ended = p.merge(&[row("1", 1_000, 5_000)], 6_000);
        assert_eq!((ended.len(), ended[0].3), (1, false));
        assert!(p.active("1", Feature::Comments, 6_000).is_none());

        // A pause that began here after that call stays.
        p.block("1", Feature::Comments, 7_000, MIN, "368".into());
        assert!(p.merge(&[row("1", 1_000, 5_000)], 8_000).is_empty());
        assert!(p.active("1", Feature::Comments, 8_000).is_some());
    }

    #[test]
    fn comments_of_a_page_are_paced() {
        let p = Pauses::default();
        let gap = Duration::from_secs(3);
        assert_eq!(p.comment_slot("1", gap, 1000), 1000);
        assert_eq!(p.comment_slot("1", gap, 1000), 4000);
        assert_eq!(p.comment_slot("1", gap, 2000), 7000);
        assert_eq!(p.comment_slot("2", gap, 2000), 2000, "per page");
        assert_eq!(
            p.comment_slot("1", gap, 60_000),
            60_000,
            "no debt after a quiet spell"
        );
    }
}
