//! What the daemon knows of each Page's ability to send, one value per page: a problem
//! only an admin can fix (an invalid token, a policy block: shown by `/readyz` until a
//! send succeeds or the token changes), and Facebook's request to slow down (no Graph
//! call for the page before a time). Throttles of one feature are [`super::pauses`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::store::SharedPause;

/// One page's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageHealth {
    /// Why the page cannot send until an admin acts.
    pub problem: Option<String>,
    /// Facebook rate-limited the page: no Graph call before this time (ms).
    pub slowed_until: Option<i64>,
}

/// Every page's health, by page id.
#[derive(Debug, Default)]
pub struct Health {
    pages: Mutex<BTreeMap<String, PageHealth>>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, PageHealth>) -> R) -> R {
        f(&mut self.pages.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The page cannot send until an admin acts, for this reason.
    pub fn problem(&self, page: &str, why: String) {
        self.with(|pages| pages.entry(page.to_owned()).or_default().problem = Some(why));
    }

    /// A send of the page worked: whatever was wrong is not any more.
    pub fn sent(&self, page: &str) {
        self.with(|pages| {
            if let Some(h) = pages.get_mut(page) {
                h.problem = None;
            }
        });
    }

    /// Facebook asked the page to slow down: nothing before `until` (ms).
    pub fn slow_down(&self, page: &str, until: i64) {
        self.with(|pages| pages.entry(page.to_owned()).or_default().slowed_until = Some(until));
    }

    /// Until when (ms) the page must wait, if it must at `now`.
    pub fn slowed_until(&self, page: &str, now: i64) -> Option<i64> {
        self.with(|pages| pages.get(page).and_then(|h| h.slowed_until))
            .filter(|&until| until > now)
    }

    /// Takes in the slow-downs the nodes of a shared queue met (`rows` named `name`):
    /// one that lasts longer than this node's holds here too. Returns the pages slowed
    /// here by them and until when.
    pub fn merge_slow_downs(
        &self,
        rows: &[SharedPause],
        name: &str,
        now: i64,
    ) -> Vec<(String, i64)> {
        let mut slowed = Vec::new();
        self.with(|pages| {
            for row in rows.iter().filter(|r| r.feature == name && r.until > now) {
                let health = pages.entry(row.page_id.clone()).or_default();
                let known = health.slowed_until.filter(|&until| until > now);
                if known.is_none_or(|until| until < row.until) {
                    health.slowed_until = Some(row.until);
                    if known.is_none() {
                        slowed.push((row.page_id.clone(), row.until));
                    }
                }
            }
        });
        slowed
    }

    /// Pages asked to slow down at `now`, and until when (ms), by page id.
    pub fn slowed(&self, now: i64) -> Vec<(String, i64)> {
        self.with(|pages| {
            pages
                .iter()
                .filter_map(|(page, h)| Some((page.clone(), h.slowed_until.filter(|&u| u > now)?)))
                .collect()
        })
    }

    /// Pages with a problem and why, by page id.
    pub fn problems(&self) -> Vec<(String, String)> {
        self.with(|pages| {
            pages
                .iter()
                .filter_map(|(page, h)| Some((page.clone(), h.problem.clone()?)))
                .collect()
        })
    }

    /// Forgets the problems of pages for which `keep` is false (a rotated token, a
    /// removed page: a fresh start).
    pub fn keep_problems(&self, keep: impl Fn(&str) -> bool) {
        self.with(|pages| {
            for (page, h) in pages.iter_mut() {
                if !keep(page) {
                    h.problem = None;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_s_problem_and_its_slow_down_are_one_value() {
        let health = Health::default();
        health.problem("1", "token invalid".into());
        health.slow_down("1", 500);
        assert_eq!(
            health.problems(),
            [("1".to_owned(), "token invalid".to_owned())]
        );
        assert_eq!(health.slowed_until("1", 100), Some(500));
        assert_eq!(health.slowed_until("1", 500), None, "over at its time");
        health.sent("1");
        assert!(health.problems().is_empty());
        health.problem("2", "blocked".into());
        health.keep_problems(|page| page != "2");
        assert!(health.problems().is_empty());
    }

    /// On a shared queue: another node's slow-down holds here when it lasts longer.
    #[test]
    fn another_nodes_slow_down_holds_here() {
        let health = Health::default();
        let row = |page: &str, what: &str, until| SharedPause {
            page_id: page.into(),
            feature: what.into(),
            since: 0,
            until,
            length_ms: until,
            reason: "rate-limited".into(),
        };
        let rows = [
            row("1", "slow", 9_000),
            row("2", "comments", 9_000),
            row("3", "slow", 500),
        ];
        assert_eq!(
            health.merge_slow_downs(&rows, "slow", 1_000),
            [("1".to_owned(), 9_000)]
        );
        assert_eq!(health.slowed_until("1", 1_000), Some(9_000));
        assert_eq!(health.slowed(1_000), [("1".to_owned(), 9_000)]);
        assert_eq!(
            health.slowed_until("2", 1_000),
            None,
            "a feature's pause is not the page's"
        );
        assert_eq!(health.slowed_until("3", 1_000), None, "over already");
        // Known, then longer elsewhere: longer here, not said again; shorter: kept.
        assert!(
            health
                .merge_slow_downs(&[row("1", "slow", 20_000)], "slow", 2_000)
                .is_empty()
        );
        assert_eq!(health.slowed_until("1", 2_000), Some(20_000));
        health.merge_slow_downs(&[row("1", "slow", 5_000)], "slow", 3_000);
        assert_eq!(health.slowed_until("1", 3_000), Some(20_000));
    }
}
