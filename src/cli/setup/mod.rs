//! `fb-openchannel setup`: connects a Facebook Page (and its linked Instagram account)
//! without hand-copied Page tokens.
//!
//! From a Facebook Login link (the browser comes back to the daemon's public listener,
//! see [`crate::server::login_callback`]) or a Facebook user's token for this app (the
//! Graph API Explorer's "Generate Access Token"), it checks what it can first (the app id and secret, the token's app, the
//! permissions), exchanges the token for a long-lived one — Page tokens obtained with a
//! long-lived user token do not expire — lists the Pages the user manages, and for the
//! one chosen: subscribes the app, writes its `[[page]]` table (and `[[instagram]]`) into
//! the config with a new reply token, keeping every comment and other setting (a backup
//! beside it, mode and owner kept, written whole and renamed), reloads the daemon under
//! systemd, and prints the Reply URL to paste into Motion. Run again for a Page already
//! configured, it replaces only that Page's token.
//!
//! Nothing is written when anything fails, and the result passes `check-config` (it is
//! checked with the same code before it is written). Tokens are never printed, only their
//! last 4 characters.

#[cfg(test)]
mod tests;

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use toml_edit::{DocumentMut, Item, Table, value};

use crate::config::{Config, Secret};
use crate::facebook::graph::GraphClient;
use crate::facebook::login::ManagedPage;

/// Permissions without which the daemon cannot work for a Page, and what each is for.
const REQUIRED: &[(&str, &str)] = &[
    ("pages_show_list", "to list the Pages you manage"),
    (
        "pages_manage_metadata",
        "to subscribe the app to the Page's webhooks",
    ),
    ("pages_messaging", "to answer customers on Messenger"),
];

/// Permissions for the rest of what the daemon does; missing ones are named, not fatal.
const USEFUL: &[(&str, &str)] = &[
    (
        "pages_read_engagement",
        "to read the Page's posts and comments",
    ),
    (
        "pages_manage_engagement",
        "to answer comments on the Page's wall",
    ),
    ("pages_read_user_content", "to read visitors' posts"),
    ("instagram_basic", "to see the linked Instagram account"),
    (
        "instagram_manage_messages",
        "to answer Instagram direct messages",
    ),
    ("instagram_manage_comments", "to answer Instagram comments"),
    (
        "business_management",
        "to see Pages that belong to a business portfolio (since Graph v17 the list of your Pages leaves them out without it)",
    ),
    (
        "ads_read",
        "to answer Instagram comments and mentions when your role on the Page comes through Business Manager",
    ),
];

/// What the command line says.
#[derive(Debug, Default)]
pub struct Options {
    pub user_token: Option<String>,
    pub page: Option<String>,
    pub receive_url: Option<String>,
    pub instagram_receive_url: Option<String>,
    pub yes: bool,
    /// Leave the app's webhook (callback URL, verify token) to the App Dashboard.
    pub no_webhook: bool,
}

pub fn main(path: &Path, options: Options) -> ExitCode {
    match super::command_runtime().block_on(setup(path, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("fb-openchannel setup: {why}\nNothing was written.");
            ExitCode::FAILURE
        }
    }
}

/// The last 4 characters of a token, the only part ever shown.
fn tail(token: &Secret) -> String {
    let t = token.expose();
    let start = t.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    format!("…{}", &t[start..])
}

async fn setup(path: &Path, options: Options) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The settings setup needs; the whole file is checked once the page is in it.
    let current: Config = toml::from_str(&text).map_err(|e| {
        format!(
            "{} does not parse ({}): fix it first (fb-openchannel check-config)",
            path.display(),
            e.message()
        )
    })?;
    let facebook = &current.facebook;
    let app_id = facebook
        .app_id
        .as_ref()
        .map(|a| a.get_ref().clone())
        .ok_or("set facebook.app_id in the config first (App Dashboard → App settings → Basic → App ID)")?;
    let app_secret = facebook.app_secret.get_ref();
    if app_secret.expose().starts_with("CHANGE-ME") {
        return Err("set facebook.app_secret in the config first (App Dashboard → App settings → Basic → App secret)".into());
    }
    let graph = GraphClient::new(
        facebook.graph_url.get_ref(),
        &facebook.graph_version,
        Duration::from_secs(20),
        current.media_hosts(),
        None,
    )?;
    let user_token = match options.user_token.as_deref() {
        Some(given) => Secret::new(user_token(given)?),
        None => login(&current, &app_id, app_secret, &graph).await?,
    };

    // 1. What Facebook says of the app and the token, before anything else.
    let facts = graph
        .debug_token(&app_id, app_secret, &user_token)
        .await
        .map_err(|e| match e.code {
            Some(1 | 101 | 190) | None if e.status != 0 => format!(
                "Facebook refused the app's own credentials ({}): check facebook.app_id ({app_id}) and facebook.app_secret against App Dashboard → App settings → Basic",
                e.message
            ),
            _ => format!("cannot ask Facebook about the token: {e}"),
        })?;
    if !facts.valid {
        return Err(format!(
            "the user token ({}) is not valid{}: generate a new one (Graph API Explorer → Generate Access Token) and run setup at once — it lives an hour",
            tail(&user_token),
            facts.error.map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    if facts.app_id != app_id {
        return Err(format!(
            "the user token was made for app {}, not this daemon's app {app_id} (facebook.app_id): in the Graph API Explorer choose your app under \"Meta App\" before Generate Access Token",
            facts.app_id
        ));
    }
    if facts.kind != "USER" {
        return Err(format!(
            "that is a {} token, not a user token: in the Graph API Explorer choose \"User Token\"",
            facts.kind
        ));
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(p, _)| !facts.scopes.iter().any(|s| s == p))
        .map(|(p, why)| format!("  {p} — {why}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the token lacks permissions the daemon needs:\n{}\nAdd them in the Graph API Explorer (Permissions) and generate the token again. People other than the app's admins, developers and testers can grant them only once the app has Advanced Access for them (App Dashboard → App Review → Permissions and Features) and is Live.",
            missing.join("\n")
        ));
    }
    let lacking: Vec<String> = USEFUL
        .iter()
        .filter(|(p, _)| !facts.scopes.iter().any(|s| s == p))
        .map(|(p, why)| format!("  {p} — {why}"))
        .collect();

    // 2. A long-lived user token, whose Page tokens do not expire.
    let long_lived = graph
        .long_lived_user_token(&app_id, app_secret, &user_token)
        .await
        .map_err(|e| format!("Facebook did not exchange the token for a long-lived one: {e}"))?;
    let pages = graph
        .managed_pages(&long_lived)
        .await
        .map_err(|e| format!("cannot list the Pages you manage: {e}"))?;
    let business = facts.scopes.iter().any(|s| s == "business_management");
    if pages.is_empty() {
        if !business {
            return Err("Facebook lists no Page for this user, and the token lacks business_management: since Graph v17 the list leaves out every Page that belongs to a business portfolio (Meta Business Suite) unless business_management is granted. Log in again allowing it (the login link asks for it; in the Graph API Explorer add the permission business_management), then run setup again".into());
        }
        return Err("this Facebook user manages no Page this app may use: in the login dialog (or the Graph API Explorer) choose the Page when asked, and check the user has full control of it (Page settings → Page access)".into());
    }
    let page = choose_page(&pages, &options).map_err(|e| {
        if business {
            e
        } else {
            format!("{e}\n(Without business_management, Pages of a business portfolio are not listed: grant it and run setup again if the Page is one.)")
        }
    })?;
    if !page.can_message {
        return Err(format!(
            "you cannot answer messages for Page {} ({}): give this user full control or the Messages task (Page settings → Page access)",
            page.name, page.id
        ));
    }
    let existing = current.page(&page.id).is_some();
    let receive_url = if existing {
        None
    } else {
        Some(ask(
            options.receive_url.clone(),
            &format!(
                "Receive URL of the Motion Openchannel account for Page {} (Motion → Openchannel → the account → Settings)",
                page.name
            ),
            options.yes,
            "--receive-url",
        )?)
    };
    let instagram = match (&page.instagram, &options.instagram_receive_url) {
        (Some((id, _)), Some(url)) if current.instagram(id).is_none() => {
            Some((id.clone(), url.clone()))
        }
        _ => None,
    };

    // 3. The new config, checked like check-config checks it.
    // The new text, its config, and the reply tokens made for it: (account, token).
    type Composed = (String, Config, Vec<(String, String)>);
    let compose = |text: &str| -> Result<Composed, String> {
        let mut reply_tokens = Vec::new();
        let mut doc: DocumentMut = text
            .parse()
            .map_err(|e| format!("{} does not parse: {e}", path.display()))?;
        write_page(&mut doc, page, receive_url.as_deref(), &mut reply_tokens)?;
        if let Some((id, url)) = &instagram {
            write_instagram(&mut doc, id, &page.id, url, &mut reply_tokens)?;
        }
        let new_text = doc.to_string();
        let config = Config::from_toml(path, &new_text).map_err(|errors| {
            format!(
                "the config would not be valid with Page {} in it; fix these first:\n{errors}",
                page.id
            )
        })?;
        Ok((new_text, config, reply_tokens))
    };
    let (_, config, _) = compose(&text)?;
    let page_config = config.page(&page.id).expect("the page was just written");

    // 4. Subscribed before anything is written (a failure leaves the file as it was).
    let fields = crate::relay::subscription::requested_fields(page_config);
    graph
        .subscribe(&page.token, &page_config.page_id(), &fields)
        .await
        .map_err(|e| format!("cannot subscribe the app to Page {}: {e}", page.id))?;

    // 5. Written: a backup, then the new file in its place — under a lock, from the
    // file as it is now: another setup may have added its page meanwhile (two at once
    // each printed a Reply URL, and one page was missing from the file).
    let _lock = ConfigLock::take(path)?;
    let now = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (new_text, config, reply_tokens) = compose(&now)?;
    let backup = backup_path(path);
    write_like(path, &backup, now.as_bytes())?;
    write_like(path, path, new_text.as_bytes())?;

    println!(
        "✓ page {} ({}): {} with a Page token that does not expire ({}); app subscribed to {}",
        page.id,
        page.name,
        if existing {
            "token replaced"
        } else {
            "added to the config"
        },
        tail(&page.token),
        fields.join(", ")
    );
    println!("  previous config kept as {}", backup.display());
    if !lacking.is_empty() {
        println!(
            "  note: the token lacks permissions some features need:\n{}",
            lacking.join("\n")
        );
    }
    println!("{}", reload());
    if config.storage.is_postgres() {
        println!(
            "  a shared queue: copy {} to every other node and reload it there (systemctl reload fb-openchannel) — a webhook or a Reply URL call goes to whichever node gets it; until then each node names the other's config as different (`fb-openchannel doctor`, /readyz)",
            path.display()
        );
    }
    if !options.no_webhook {
        println!(
            "{}",
            register_webhook(&graph, &config, &app_id, app_secret, &fields).await
        );
    }
    let local = config.local.listen;
    for (id, reply_token) in &reply_tokens {
        println!(
            "In Motion, the Openchannel account of {id}: Reply URL = {}",
            reply_url(local, id, reply_token)
        );
    }
    println!("{}", app_review_callbacks(&config));
    match (&page.instagram, &instagram) {
        (Some((id, username)), None) if config.instagram(id).is_none() => println!(
            "Page {} is linked to the Instagram account @{username} ({id}): to connect it, run setup again with --instagram-receive-url <its Motion account's Receive URL>",
            page.id
        ),
        _ => {}
    }
    Ok(())
}

/// The two callbacks App Review asks for, to paste into the App Dashboard (Meta does not
/// take them through the API).
pub fn app_review_callbacks(config: &Config) -> String {
    let url = |path: &str| match config.public_base() {
        Some(mut base) => {
            if let Ok(mut segments) = base.path_segments_mut() {
                segments
                    .pop_if_empty()
                    .extend(path.trim_start_matches('/').split('/'));
            }
            base.to_string()
        }
        None => format!("https://<public.name>{path}"),
    };
    format!(
        "For App Review, App Dashboard → Facebook Login → Settings:\n  Deauthorize callback URL = {}\n  Data Deletion Request URL = {}",
        url(crate::server::app_callbacks::DEAUTHORIZE_PATH),
        url(crate::server::app_callbacks::DATA_DELETION_PATH)
    )
}

/// The last step that used to be copied by hand: the app's webhook for Pages
/// (`POST /{app-id}/subscriptions`), at `https://<public.name>/webhook` with the
/// config's verify token. Meta checks it with the verification handshake, which the
/// running daemon answers. Instagram's object is set in the App Dashboard only (Meta:
/// "configuration via the App Subscriptions edge is not supported").
async fn register_webhook(
    graph: &GraphClient,
    config: &Config,
    app_id: &str,
    app_secret: &Secret,
    fields: &[&str],
) -> String {
    let Some(mut callback) = config.public_base() else {
        return "  webhook: set public.name (or public.url) to let setup register the Callback URL; meanwhile App Dashboard → Webhooks → Page → Callback URL https://<your host>/webhook, Verify token = facebook.verify_token".into();
    };
    if let Ok(mut path) = callback.path_segments_mut() {
        path.pop_if_empty().push("webhook");
    }
    match graph
        .register_webhook(
            app_id,
            app_secret,
            "page",
            callback.as_str(),
            config.facebook.verify_token.get_ref(),
            fields,
        )
        .await
    {
        Ok(()) => format!(
            "✓ webhook: Meta verified {callback} and sends the app's Page events there ({})",
            fields.join(", ")
        ),
        Err(e) => format!(
            "  webhook: Meta did not register {callback} ({e}): the daemon must be running with this config and reachable there with a valid certificate; or set it by hand: App Dashboard → Webhooks → Page → Callback URL, Verify token = facebook.verify_token (run setup again with --no-webhook to skip this step)"
        ),
    }
}

/// The token from `--user-token` / `$FB_OPENCHANNEL_USER_TOKEN`, or from stdin for `-`.
fn user_token(given: &str) -> Result<String, String> {
    let token = match given {
        "-" => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
            line
        }
        token => token.to_owned(),
    };
    let token = token.trim().to_owned();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the user token is empty or has spaces in it".into());
    }
    Ok(token)
}

/// How long the login link waits for the browser to come back.
const LOGIN_WAIT: Duration = Duration::from_secs(600);

/// Facebook Login: prints the link, waits for the browser to come back to the daemon's
/// `/oauth/callback` (see [`crate::server::login_callback`]), and makes the code a user
/// token.
async fn login(
    config: &Config,
    app_id: &str,
    app_secret: &Secret,
    graph: &GraphClient,
) -> Result<Secret, String> {
    use crate::server::login_callback::{self, Callback, Waiting};
    let base = config.public_base().ok_or(
        "the Facebook Login link needs public.name (the Callback URL's host: Facebook sends the browser back to https://<public.name>/oauth/callback) — or give a user token from the Graph API Explorer in FB_OPENCHANNEL_USER_TOKEN (see the README, \"Connecting a Page\")",
    )?;
    let mut redirect = base.clone();
    redirect
        .path_segments_mut()
        .map_err(|()| "public.url cannot take a path".to_owned())?
        .pop_if_empty()
        .extend(["oauth", "callback"]);
    graph.check_app(app_id, app_secret).await.map_err(|e| {
        format!(
            "Facebook refused the app's own credentials ({}): check facebook.app_id ({app_id}) and facebook.app_secret against App Dashboard → App settings → Basic",
            e.message
        )
    })?;
    // The way back must work before the admin is sent off: the daemon answers there,
    // with a certificate a browser takes.
    let probe = crate::http_client::build(Duration::from_secs(10), None)?;
    probe.get(redirect.clone()).send().await.map_err(|e| {
        format!(
            "{redirect} cannot be reached with a valid certificate ({}): Facebook sends the browser back there. Is the daemon running, is the public listener reachable under public.name, and does its certificate cover it (fb-openchannel doctor)?",
            crate::http_client::describe(e)
        )
    })?;

    // Root meets the daemon in its state directory: by descriptor only (statedir).
    let dir = login_callback::handoff(&config.storage.path).map_err(|e| {
        format!("{e}. The login hand-off directory must be the daemon's own: remove what is there and run setup again")
    })?;
    dir.remove(login_callback::CALLBACK)
        .map_err(|e| format!("cannot clear {}: {e}", dir.path().display()))?;
    let state = crate::relay::public_files::random_token()?;
    let now = crate::time::now_ms() / 1000;
    let waiting = Waiting {
        state_sha256: login_callback::sha256_hex(&state),
        until: now + LOGIN_WAIT.as_secs() as i64,
    };
    dir.write(
        login_callback::WAITING,
        &serde_json::to_vec(&waiting).expect("serializes"),
    )
    .map_err(|e| e.to_string())?;

    let mut link = url::Url::parse(config.facebook.dialog_url.get_ref())
        .map_err(|e| format!("facebook.dialog_url: {e}"))?;
    link.path_segments_mut()
        .map_err(|()| "facebook.dialog_url cannot take a path".to_owned())?
        .pop_if_empty()
        .extend([config.facebook.graph_version.as_str(), "dialog", "oauth"]);
    let scope: Vec<&str> = REQUIRED.iter().chain(USEFUL).map(|(p, _)| *p).collect();
    {
        let mut query = link.query_pairs_mut();
        query
            .append_pair("client_id", app_id)
            .append_pair("redirect_uri", redirect.as_str())
            .append_pair("state", &state)
            .append_pair("response_type", "code");
        // Business apps (Messenger, Instagram) log in by a Facebook Login for Business
        // configuration, which lists the permissions itself; `scope` is for the others.
        match &config.facebook.login_config_id {
            Some(id) => query.append_pair("config_id", id),
            None => query.append_pair("scope", &scope.join(",")),
        };
    }
    println!(
        "Open this link in a browser logged in to Facebook as an admin of the Page, choose the Page and allow what it asks:\n\n  {link}\n\n(App Dashboard → Facebook Login → Settings → Valid OAuth Redirect URIs must list {redirect}.)\nWaiting up to {} minutes for Facebook to send the browser back…",
        LOGIN_WAIT.as_secs() / 60
    );
    let _ = std::io::stdout().flush();

    let deadline = tokio::time::Instant::now() + LOGIN_WAIT;
    let callback: Callback = loop {
        // A regular file of a few KiB, or nothing yet; anything else ends the wait.
        let handed = dir
            .read(login_callback::CALLBACK, login_callback::MAX_FILE)
            .map_err(|e| {
                let _ = dir.remove(login_callback::WAITING);
                format!("the login hand-off is not what the daemon writes ({e}); run setup again")
            })?;
        if let Some(bytes) = handed {
            let _ = dir.remove(login_callback::CALLBACK);
            break serde_json::from_slice(&bytes)
                .map_err(|e| format!("the login handed over by the daemon does not read: {e}"))?;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = dir.remove(login_callback::WAITING);
            return Err(format!(
                "no login came back within {} minutes: run setup again and open the new link (the old one no longer works)",
                LOGIN_WAIT.as_secs() / 60
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let code = match (callback.code, callback.error) {
        (Some(code), _) => Secret::new(code),
        (None, why) => {
            return Err(format!(
                "Facebook did not log in ({}): open the link again and allow what it asks",
                why.unwrap_or_else(|| "no reason given".into())
            ));
        }
    };
    graph
        .user_token_from_code(app_id, app_secret, redirect.as_str(), &code)
        .await
        .map_err(|e| match e.subcode {
            Some(36007) => "the login's code expired before setup could use it: run setup again and finish the login within a few minutes".to_owned(),
            Some(36009) => "the login's code was used already: run setup again".to_owned(),
            _ => format!("Facebook did not take the login's code: {e}"),
        })
}

/// The Page named by `--page`, the only one, or the one picked at the prompt.
fn choose_page<'a>(pages: &'a [ManagedPage], options: &Options) -> Result<&'a ManagedPage, String> {
    let listing = || {
        pages
            .iter()
            .map(|p| format!("  {}  {}", p.id, p.name))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(id) = &options.page {
        return pages.iter().find(|p| &p.id == id).ok_or_else(|| {
            format!(
                "this user does not manage Page {id} (or did not grant it to the app); the Pages they do:\n{}",
                listing()
            )
        });
    }
    if pages.len() == 1 {
        return Ok(&pages[0]);
    }
    if options.yes || !std::io::stdin().is_terminal() {
        return Err(format!(
            "this user manages several Pages; name one with --page:\n{}",
            listing()
        ));
    }
    println!("The Pages you manage:");
    for (n, p) in pages.iter().enumerate() {
        println!("  {}) {}  {}", n + 1, p.id, p.name);
    }
    let answer = prompt("Which one (number)?")?;
    answer
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| pages.get(n.wrapping_sub(1)))
        .ok_or_else(|| format!("{answer:?} is not one of the numbers"))
}

/// `given`, else asked at the terminal (not with `--yes`, nor without a terminal).
fn ask(given: Option<String>, question: &str, yes: bool, flag: &str) -> Result<String, String> {
    if let Some(v) = given {
        return Ok(v);
    }
    if yes || !std::io::stdin().is_terminal() {
        return Err(format!("{question}: give it with {flag}"));
    }
    let answer = prompt(&format!("{question}:"))?;
    Ok(answer.trim().to_owned())
}

fn prompt(question: &str) -> Result<String, String> {
    print!("{question} ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

/// Puts `page` in the config: its token into the table that has its id; else into the
/// example's placeholder table; else into a new `[[page]]` at the end. New tables get a
/// new reply token, pushed onto `reply_tokens`.
fn write_page(
    doc: &mut DocumentMut,
    page: &ManagedPage,
    receive_url: Option<&str>,
    reply_tokens: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let tables = tables(doc, "page")?;
    let same = tables
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(page.id.as_str()));
    if let Some(i) = same {
        set(
            tables.get_mut(i).expect("found above"),
            "access_token",
            page.token.expose(),
        );
        return Ok(());
    }
    let receive_url = receive_url.ok_or("a Receive URL is needed for a new page")?;
    let reply_token = crate::relay::public_files::random_token()?;
    let table = fillable(tables);
    set(table, "id", page.id.as_str());
    set(table, "access_token", page.token.expose());
    set(table, "receive_url", receive_url);
    set(table, "reply_token", reply_token.as_str());
    reply_tokens.push((page.id.clone(), reply_token));
    Ok(())
}

/// Adds an `[[instagram]]` table for account `id`, linked to `page` (the example's
/// placeholder one if there is one).
fn write_instagram(
    doc: &mut DocumentMut,
    id: &str,
    page: &str,
    receive_url: &str,
    reply_tokens: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let reply_token = crate::relay::public_files::random_token()?;
    let tables = tables(doc, "instagram")?;
    let table = fillable(tables);
    set(table, "id", id);
    set(table, "page", page);
    set(table, "receive_url", receive_url);
    set(table, "reply_token", reply_token.as_str());
    reply_tokens.push((id.to_owned(), reply_token));
    Ok(())
}

/// Sets `key` in `table`, keeping the comments around an existing one.
fn set(table: &mut Table, key: &str, new: &str) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *old = toml_edit::Value::from(new);
            *old.decor_mut() = decor;
        }
        None => {
            table.insert(key, value(new));
        }
    }
}

/// The `[[name]]` tables, made when there are none.
fn tables<'a>(
    doc: &'a mut DocumentMut,
    name: &str,
) -> Result<&'a mut toml_edit::ArrayOfTables, String> {
    if !doc.contains_key(name) {
        doc.insert(name, Item::ArrayOfTables(Default::default()));
    }
    doc[name]
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("`{name}` in the config is not a list of [[{name}]] tables"))
}

/// The shipped example's placeholder table, else a new one at the end.
fn fillable(tables: &mut toml_edit::ArrayOfTables) -> &mut Table {
    let placeholder = tables.iter().position(is_placeholder);
    match placeholder {
        Some(i) => tables.get_mut(i).expect("found above"),
        None => {
            tables.push(Table::new());
            let last = tables.len() - 1;
            tables.get_mut(last).expect("just pushed")
        }
    }
}

/// The shipped example's table: a value still starting with `CHANGE-ME`.
fn is_placeholder(table: &Table) -> bool {
    ["access_token", "reply_token"].iter().any(|key| {
        table
            .get(key)
            .and_then(Item::as_str)
            .is_some_and(|v| v.starts_with("CHANGE-ME"))
    })
}

/// An exclusive lock on the config while `setup` writes it: `flock` on a lock file
/// beside it (the config itself is replaced by a rename, so its own inode cannot hold the
/// lock), released when dropped. A second `setup` waits here, then reads the file the
/// first one wrote.
struct ConfigLock {
    /// Holds the `flock` until dropped.
    _file: std::fs::File,
}

impl ConfigLock {
    fn take(path: &Path) -> Result<ConfigLock, String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or_default());
        name.push(".lock");
        let lock_path = path.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        // SAFETY: a valid descriptor, held by `file` for as long as the lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(ConfigLock { _file: file })
    }
}

/// `config.toml.bak` beside `config.toml`.
fn backup_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Writes `bytes` to `to` with the mode and owner of `like`: a new file beside it,
/// synced, renamed over it, and the directory synced.
fn write_like(like: &Path, to: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta =
        std::fs::metadata(like).map_err(|e| format!("cannot read {}: {e}", like.display()))?;
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", to.display());
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    std::fs::set_permissions(
        file.path(),
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    )
    .map_err(fail)?;
    // Keeping root:fb-openchannel needs root; as the owner itself, this is a no-op.
    if let Err(e) = std::os::unix::fs::fchown(file.as_file(), Some(meta.uid()), Some(meta.gid()))
        && e.kind() != std::io::ErrorKind::PermissionDenied
    {
        return Err(fail(e));
    }
    file.as_file().sync_all().map_err(fail)?;
    file.persist(to).map_err(|e| fail(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// Reloads the daemon under systemd; else says how to put the change in force.
fn reload() -> String {
    let active = std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", "fb-openchannel"])
        .status()
        .is_ok_and(|s| s.success());
    if !active {
        return "  the daemon is not running under systemd here: start it (systemctl enable --now fb-openchannel), or reload the one running (kill -HUP) to put the page in force".into();
    }
    match std::process::Command::new("systemctl")
        .args(["reload", "fb-openchannel"])
        .status()
    {
        Ok(s) if s.success() => "  daemon reloaded: the page is in force".into(),
        _ => "  systemctl reload fb-openchannel failed: see journalctl -u fb-openchannel".into(),
    }
}

/// `http://{local.listen}/reply/{id}?token=…`, on loopback when it listens everywhere.
fn reply_url(local: std::net::SocketAddr, id: &str, token: &str) -> String {
    let ip = if local.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    let mut url = url::Url::parse("http://127.0.0.1/").expect("static URL");
    let _ = url.set_ip_host(ip);
    let _ = url.set_port(Some(local.port()));
    url.path_segments_mut()
        .expect("http URLs take segments")
        .clear()
        .extend(["reply", id]);
    url.query_pairs_mut().append_pair("token", token);
    url.to_string()
}
