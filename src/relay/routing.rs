//! Which app Meta routes a Page's conversations to.
//!
//! Meta hands each Page's Messenger conversations to one app (Page settings → Advanced
//! messaging → conversation routing); the other apps get the same messages as `standby`
//! events. A site that left Motion Cloud may still have XCALLY's app as the routed one:
//! then every customer message reaches the daemon as standby only. Standby customer
//! messages are forwarded to Motion (per page `standby = "forward"`, the default:
//! better than losing them), but the daemon's replies may be refused — the app that
//! does not own a thread cannot always answer in it. So this is watched per Page: when
//! customers' messages arrive as standby and none through `messaging` for a while, it
//! is said once in the log, in `/readyz` and by `doctor`, with the fix.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::time::now_ms;

/// How long the signal looks back: a day without a single `messaging` customer event
/// while standby ones came means the Page's routing belongs to another app.
const WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Page {
    /// The last customer message that came as standby / through messaging (ms).
    last_standby: Option<i64>,
    last_messaging: Option<i64>,
    /// Standby customer messages since the last messaging one.
    standby_since_messaging: u64,
    /// Whether the log said it for this episode.
    logged: bool,
}

/// What `/readyz` says about a Page whose conversations are routed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    pub standby_messages: u64,
    pub last_standby_ms: i64,
}

#[derive(Debug, Default)]
pub struct Routing {
    pages: Mutex<HashMap<String, Page>>,
}

impl Routing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Page>> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A customer message came through `messaging`: the Page's conversations (some at
    /// least) are routed to us.
    pub fn messaging(&self, page: &str) {
        let mut pages = self.lock();
        let p = pages.entry(page.to_owned()).or_default();
        p.last_messaging = Some(now_ms());
        p.standby_since_messaging = 0;
        p.logged = false;
    }

    /// A customer message came as standby. Returns true when this starts an episode
    /// worth one log line.
    pub fn standby(&self, page: &str) -> bool {
        let now = now_ms();
        let mut pages = self.lock();
        let p = pages.entry(page.to_owned()).or_default();
        p.last_standby = Some(now);
        p.standby_since_messaging = p.standby_since_messaging.saturating_add(1);
        let recently_ours = p
            .last_messaging
            .is_some_and(|t| now.saturating_sub(t) < WINDOW_MS);
        if recently_ours || p.logged {
            return false;
        }
        p.logged = true;
        true
    }

    /// Whether the Page's conversations look routed to another app, now.
    pub fn elsewhere(&self, page: &str) -> Option<Elsewhere> {
        let now = now_ms();
        let pages = self.lock();
        let p = pages.get(page)?;
        let last_standby = p.last_standby?;
        let recent_standby = now.saturating_sub(last_standby) < WINDOW_MS;
        let recently_ours = p
            .last_messaging
            .is_some_and(|t| now.saturating_sub(t) < WINDOW_MS);
        (recent_standby && !recently_ours && p.standby_since_messaging > 0).then_some(Elsewhere {
            standby_messages: p.standby_since_messaging,
            last_standby_ms: last_standby,
        })
    }

    /// Every Page that looks routed elsewhere.
    pub fn all_elsewhere(&self) -> Vec<(String, Elsewhere)> {
        let pages: Vec<String> = self.lock().keys().cloned().collect();
        let mut all: Vec<_> = pages
            .into_iter()
            .filter_map(|p| self.elsewhere(&p).map(|e| (p, e)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// What an admin does about it, for the log, `/readyz` and `doctor`.
pub const FIX: &str = "another app (the old Motion Cloud app, or Page Inbox) is the one Meta routes this Page's conversations to, so its customers' messages reach fb-openchannel only as standby events. Standby messages are forwarded to Motion meanwhile, but replies may be refused. Fix: Meta Business Suite → Settings → Advanced messaging (or the Page's Settings → Advanced messaging → Conversation routing): make fb-openchannel's app the one conversations are routed to, or remove the other app (see `fb-openchannel doctor`)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_only_traffic_is_routing_elsewhere_until_a_messaging_event() {
        let r = Routing::default();
        assert!(r.elsewhere("1").is_none());
        assert!(r.standby("1"), "the first one is logged");
        assert!(!r.standby("1"), "once");
        assert_eq!(r.elsewhere("1").unwrap().standby_messages, 2);
        assert!(r.elsewhere("2").is_none(), "per page");
        r.messaging("1");
        assert!(r.elsewhere("1").is_none());
        assert!(!r.standby("1"), "mixed routing is not the problem");
        assert!(r.elsewhere("1").is_none());
    }
}
