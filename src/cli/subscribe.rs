//! `fb-openchannel subscribe`: subscribes every page to this app's webhooks with the
//! fields it needs, and shows the result.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::output::Style;
use crate::facebook::graph::GraphClient;
use crate::ids::InstagramId;
use crate::relay::subscription;

#[derive(Serialize)]
struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    page_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instagram_id: Option<String>,
    ok: bool,
    fields: Vec<String>,
    detail: String,
}

pub fn main(path: &std::path::Path, json: bool) -> ExitCode {
    let config = match super::config_for_command(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = super::command_runtime();
    let outcomes = runtime.block_on(async {
        let graph = match GraphClient::new(
            config.facebook.graph_url.get_ref(),
            &config.facebook.graph_version,
            Duration::from_secs(15),
            config.media_hosts(),
            None,
        ) {
            Ok(g) => g,
            Err(e) => {
                return vec![Outcome {
                    page_id: None,
                    instagram_id: None,
                    ok: false,
                    fields: Vec::new(),
                    detail: e,
                }];
            }
        };
        let mut outcomes = Vec::new();
        for page in &config.pages {
            let fields = subscription::requested_fields(page);
            let id = page.page_id();
            let result = graph
                .subscribe(page.access_token.get_ref(), &id, &fields)
                .await;
            // What Facebook kept, for our app: its own entry among the Page's apps.
            let verified = match result {
                Ok(()) => match subscription::our_app(&graph, &config, page).await {
                    Ok(app) => graph
                        .installed_apps(page.access_token.get_ref(), &id)
                        .await
                        .map(|apps| subscription::Installed::split(apps, &app.id))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            outcomes.push(match verified {
                Ok(installed) => {
                    let have = installed.our_fields().to_vec();
                    let gone = subscription::missing(&subscription::required_fields(page), &have);
                    let competing: Vec<String> = installed
                        .competitors()
                        .iter()
                        .map(|a| format!("{} ({})", a.name, a.id))
                        .collect();
                    Outcome {
                        page_id: Some(id.to_string()),
                        instagram_id: None,
                        ok: gone.is_empty(),
                        fields: have,
                        detail: if !gone.is_empty() {
                            format!(
                                "Facebook did not keep {}: check the app's permissions",
                                gone.join(", ")
                            )
                        } else if !competing.is_empty() {
                            format!(
                                "subscribed; note: {} also receive(s) this Page's messages — see `fb-openchannel doctor`",
                                competing.join(", ")
                            )
                        } else {
                            "subscribed".into()
                        },
                    }
                }
                Err(e) => Outcome {
                    page_id: Some(id.to_string()),
                    instagram_id: None,
                    ok: false,
                    fields: Vec::new(),
                    detail: format!("not subscribed: {e}"),
                },
            });
        }
        outcomes.extend(subscribe_instagram_logins(&config).await);
        outcomes
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).expect("serialises")
        );
    } else {
        let style = Style::detect();
        for o in &outcomes {
            let mark = if o.ok {
                style.good("✓")
            } else {
                style.bad("✗")
            };
            let who = match (&o.page_id, &o.instagram_id) {
                (Some(page), _) => format!("page {page}"),
                (None, Some(account)) => format!("instagram {account}"),
                (None, None) => "daemon".to_owned(),
            };
            println!("{mark} {who}: {} ({})", o.detail, o.fields.join(", "));
        }
    }
    if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Instagram Login accounts subscribe themselves, on graph.instagram.com, with their
/// newest token (the daemon's refreshed one when there is one).
async fn subscribe_instagram_logins(config: &crate::config::Config) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let graph = GraphClient::new(
        config.facebook.instagram_graph_url.get_ref(),
        &config.facebook.graph_version,
        Duration::from_secs(15),
        config.media_hosts(),
        None,
    );
    for account in &config.instagram {
        let crate::config::InstagramLogin::Instagram { token: seed } =
            config.instagram_login(account)
        else {
            continue;
        };
        let id = account.id.get_ref();
        let stored = crate::store::queue::with_storage(&config.storage, |c| {
            crate::store::tokens::read(c, id, seed).ok().flatten()
        })
        .ok()
        .flatten();
        let token = stored.as_ref().map_or(seed, |s| &s.token);
        let fields = subscription::instagram_fields(account);
        let result = match (&graph, InstagramId::parse(id)) {
            (Ok(graph), Ok(account_id)) => graph
                .subscribe(token, &account_id, &fields)
                .await
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e.to_string()),
        };
        outcomes.push(Outcome {
            page_id: None,
            instagram_id: Some(id.clone()),
            ok: result.is_ok(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            detail: match result {
                Ok(()) => "subscribed (Instagram Login)".into(),
                Err(e) => format!("not subscribed: {e}"),
            },
        });
    }
    outcomes
}
