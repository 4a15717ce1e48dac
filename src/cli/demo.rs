//! `fb-openchannel demo`: the whole loop on this machine, with nothing to set up.
//!
//! Starts a simulated Facebook and a simulated Motion on loopback, the real daemon
//! between them (throwaway certificate, temporary state database), and plays one
//! conversation, checking every step and printing a transcript. Exits 0 only if every
//! step happened as it should.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::config::Config;
use crate::daemon::Daemon;
use crate::model::{Direction, ItemKind, ItemState, MessagingKind};
use crate::sim::facebook::{SimGraph, WebhookSender, messenger_attachment, messenger_text};
use crate::sim::motion::{SimMotion, reply_body};
use crate::sim::tls;
use crate::time::now_ms;

const PAGE: &str = "1234567890";
const PSID: &str = "7700112233";
/// The customer whose message only the Conversations API shows.
const LOST_PSID: &str = "7700112299";
const APP_SECRET: &str = "demo-app-secret";
const PAGE_TOKEN: &str = "demo-page-token";
const REPLY_TOKEN: &str = "demo-reply-token";
const API_KEY: &str = "demo-motion-api-key";
/// The Page's Instagram account (Openchannel account 2 in the simulated Motion).
const INSTAGRAM: &str = "17841400000000042";
const IGSID: &str = "1254009876543210";
const INSTAGRAM_REPLY_TOKEN: &str = "demo-instagram-reply-token";
/// Longest wait for any one step; a healthy run takes milliseconds.
const STEP: Duration = Duration::from_secs(10);

pub fn main() -> std::process::ExitCode {
    // The transcript is the output; daemon logs only when asked for with RUST_LOG.
    if std::env::var_os("RUST_LOG").is_some() {
        crate::logging::init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("\n✗ demo failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn kb(n: usize) -> String {
    format!("{:.0} KB", n as f64 / 1024.0)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("fb-openchannel-demo")
        .tempdir()?;
    let certs = tls::generate(dir.path()).map_err(anyhow::Error::msg)?;
    let graph = SimGraph::start().await?;
    graph.add_page(PAGE, PAGE_TOKEN);
    graph.add_profile(PSID, "Ada", "Lovelace");
    graph.add_instagram_profile(IGSID, Some("Grace Hopper"), "grace.h");
    let motion = SimMotion::start(API_KEY).await?;
    let config = demo_config(dir.path(), &certs, &graph, &motion)?;
    let daemon = Daemon::start(config).await.context("starting the daemon")?;
    let webhook_url = format!("https://127.0.0.1:{}/webhook", daemon.public_addr.port());
    let reply_url = format!(
        "http://{}/reply/{PAGE}?token={REPLY_TOKEN}",
        daemon.local_addr
    );
    let facebook = WebhookSender::new(&webhook_url, APP_SECRET, Some(&certs.ca_pem));

    println!(
        "fb-openchannel demo: the real daemon between a simulated Facebook and a simulated Motion,"
    );
    println!("all on this machine (no network, no config, nothing installed).");
    println!("  simulated Facebook   {}", graph.url());
    println!("  simulated Motion     {}", motion.server.url());
    println!("  fb-openchannel       {webhook_url} (throwaway certificate)");
    println!(
        "                       Reply URL http://{}/reply/{PAGE}?token=…",
        daemon.local_addr
    );

    // 1. A customer writes.
    let text = "Hi! My order #1042 hasn't arrived yet.";
    println!("\n1. Ada writes to the Page on Messenger: \"{text}\"");
    let started = Instant::now();
    let (status, _) = facebook
        .send(messenger_text(PAGE, PSID, "mid.demo.1", now_ms(), text).as_bytes())
        .await?;
    ensure!(status == 200, "the webhook was answered {status}");
    println!(
        "   Facebook → fb-openchannel   signed webhook, stored on disk, answered 200 in {} ms",
        started.elapsed().as_millis()
    );
    let notes = motion
        .wait_for_notifies(1, STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let n = &notes[0].notify;
    ensure!(n.body == text && n.from == PSID, "Motion got {n:?}");
    println!(
        "   fb-openchannel → Motion     notify from={} firstName={} lastName={} body=\"{}\"",
        n.from,
        n.first_name.as_deref().unwrap_or(""),
        n.last_name.as_deref().unwrap_or(""),
        n.body
    );

    // 2. A photo.
    let photo: Vec<u8> = (0..48 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    let photo_url = graph.add_file("parcel-label.jpg", "image/jpeg", photo.clone());
    println!(
        "\n2. Ada sends a photo of the parcel label ({})",
        kb(photo.len())
    );
    let (status, _) = facebook
        .send(
            messenger_attachment(PAGE, PSID, "mid.demo.2", now_ms(), "image", &photo_url)
                .as_bytes(),
        )
        .await?;
    ensure!(status == 200, "the webhook was answered {status}");
    let notes = motion
        .wait_for_notifies(2, STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let uploads = motion.uploads();
    ensure!(
        uploads.len() == 1 && uploads[0].bytes.as_ref() == photo.as_slice(),
        "Motion did not get the photo's bytes"
    );
    let n = &notes[1].notify;
    ensure!(
        n.attachment_id.is_some(),
        "the notify has no AttachmentId: {n:?}"
    );
    println!(
        "   fb-openchannel → Motion     uploaded {} ({}, identical bytes) → AttachmentId {}; notify body=\"{}\"",
        uploads[0].name,
        kb(uploads[0].bytes.len()),
        n.attachment_id.map(|id| id.to_string()).unwrap_or_default(),
        n.body
    );

    // 3. The agent answers with text.
    let answer = "Sorry Ada! It ships today; the tracking details follow.";
    println!("\n3. The agent answers in Motion: \"{answer}\"");
    let (status, reply) = motion
        .agent_reply(&reply_url, &reply_body(501, PSID, answer, None))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(status == 200, "the Reply URL answered {status}: {reply}");
    let sent = graph.sent();
    ensure!(
        sent.len() == 1 && sent[0].text.as_deref() == Some(answer),
        "Facebook got {sent:?}"
    );
    println!(
        "   Motion → fb-openchannel     Reply URL answered 200: {} (message {})",
        reply["message"].as_str().unwrap_or(""),
        reply["message_id"].as_str().unwrap_or("")
    );
    println!(
        "   fb-openchannel → Facebook   Send API {} to {}: \"{}\"",
        sent[0].messaging_type,
        PSID,
        sent[0].text.as_deref().unwrap_or("")
    );

    // 4. The agent sends a file.
    let pdf: Vec<u8> = b"%PDF-1.7\n"
        .iter()
        .copied()
        .chain((0..12 * 1024u32).map(|i| (i % 200) as u8))
        .collect();
    let file_id = motion.add_file("tracking.pdf", "application/pdf", pdf.clone());
    println!("\n4. The agent attaches tracking.pdf ({})", kb(pdf.len()));
    let (status, reply) = motion
        .agent_reply(
            &reply_url,
            &reply_body(502, PSID, "tracking.pdf", Some(file_id)),
        )
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(status == 200, "the Reply URL answered {status}: {reply}");
    let sent = graph.sent();
    let Some((kind, name, mime, bytes)) = sent.get(1).and_then(|s| s.attachment.clone()) else {
        bail!("Facebook got no file: {sent:?}");
    };
    ensure!(
        bytes.as_ref() == pdf.as_slice(),
        "Facebook got different bytes"
    );
    println!(
        "   fb-openchannel → Facebook   Send API {kind} {name} ({mime}, {}, identical bytes), message {}",
        kb(bytes.len()),
        sent[1].message_id
    );

    // 5. Facebook echoes the Page's messages back; they must not look like Ada's.
    println!("\n5. Facebook echoes both sent messages back to the webhook");
    for message in &sent {
        let (status, _) = facebook
            .send(graph.echo_of(message, now_ms()).as_bytes())
            .await?;
        ensure!(status == 200, "the echo was answered {status}");
    }
    let items = daemon.shared.store.items().await?;
    let echoes = items
        .iter()
        .filter(|i| {
            i.kind == ItemKind::Messaging(MessagingKind::Echo) && i.state == ItemState::Skipped
        })
        .count();
    ensure!(
        echoes == 2,
        "expected 2 recognised echoes, store has {items:?}"
    );
    println!(
        "   fb-openchannel              recognised both as its own sends: not forwarded to Motion"
    );

    // 6. Motion goes down; nothing is lost.
    println!("\n6. Motion goes down; Ada writes twice meanwhile");
    motion.down().await;
    let down_at = Instant::now();
    for (i, text) in ["Thanks!", "Got the tracking number."].iter().enumerate() {
        let (status, _) = facebook
            .send(
                messenger_text(
                    PAGE,
                    PSID,
                    &format!("mid.demo.down.{i}"),
                    now_ms() + i as i64,
                    text,
                )
                .as_bytes(),
            )
            .await?;
        ensure!(status == 200, "the webhook was answered {status}");
    }
    println!("   Facebook → fb-openchannel   both webhooks answered 200: they are on disk");
    let store = daemon.shared.store.clone();
    let deadline = Instant::now() + STEP;
    loop {
        let items = store.items().await?;
        if items.iter().any(|i| {
            i.direction == Direction::Inbound && i.state == ItemState::Pending && i.attempts >= 1
        }) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon never tried to deliver while Motion was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("   fb-openchannel → Motion     connection refused; retrying with backoff");
    // A few seconds of outage, as a restart of Motion would be.
    tokio::time::sleep_until((down_at + Duration::from_secs(2)).into()).await;
    motion.up().await;
    let notes = motion
        .wait_for_notifies(4, STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let bodies: Vec<&str> = notes[2..].iter().map(|n| n.notify.body.as_str()).collect();
    ensure!(
        bodies == ["Thanks!", "Got the tracking number."],
        "Motion got {bodies:?}"
    );
    println!(
        "   Motion is back after {:.1} s → notify \"{}\", then \"{}\": in order, once each",
        down_at.elapsed().as_secs_f64(),
        bodies[0],
        bodies[1]
    );

    let all = motion.notifies().len();
    ensure!(all == 4, "Motion got {all} notifies instead of 4");

    // 7. Instagram: the Page's Instagram account is its own Openchannel account.
    instagram_step(&facebook, &graph, &motion, &daemon).await?;

    // 8. A message Meta never sent by webhook, found in the Page's inbox.
    reconcile_step(&graph, &motion, &daemon).await?;

    daemon.stop().await;
    println!(
        "\n✓ All 8 steps happened: 6 customer messages reached Motion (one Meta never sent), 3 agent replies reached"
    );
    println!("  the customers, echoes were recognised, and the outage lost nothing.");
    Ok(())
}

/// A story reply on Instagram reaches the Instagram account's own Openchannel account,
/// and the agent's answer goes out through the linked Page.
async fn instagram_step(
    facebook: &WebhookSender,
    graph: &SimGraph,
    motion: &SimMotion,
    daemon: &Daemon,
) -> anyhow::Result<()> {
    let text = "Is the blue one in this story still available?";
    println!("\n7. Grace answers the Page's Instagram story: \"{text}\"");
    let story = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=18000011122233345";
    let now = now_ms();
    let body = serde_json::json!({
        "object": "instagram",
        "entry": [{"id": INSTAGRAM, "time": now, "messaging": [{
            "sender": {"id": IGSID}, "recipient": {"id": INSTAGRAM}, "timestamp": now,
            "message": {"mid": "aWdfZAG1faXRlbTo-demo", "text": text,
                        "reply_to": {"story": {"url": story, "id": "18000011122233345"}}}
        }]}]
    });
    let (status, _) = facebook.send(body.to_string().as_bytes()).await?;
    ensure!(status == 200, "the webhook was answered {status}");
    let notes = motion
        .wait_for_notifies(5, STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let note = &notes[4];
    ensure!(
        note.account == "2" && note.notify.from == IGSID,
        "Motion got {note:?}"
    );
    println!(
        "   fb-openchannel → Motion     account 2 (Instagram): notify from={} firstName={} lastName={} body=\"{}\"",
        note.notify.from,
        note.notify.first_name.as_deref().unwrap_or(""),
        note.notify.last_name.as_deref().unwrap_or(""),
        note.notify.body.replace('\n', " ⏎ ")
    );
    let answer = "Yes! It's yours if you want it.";
    let reply_url = format!(
        "http://{}/reply/{INSTAGRAM}?token={INSTAGRAM_REPLY_TOKEN}",
        daemon.local_addr
    );
    let (status, reply) = motion
        .agent_reply(&reply_url, &reply_body(503, IGSID, answer, None))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(status == 200, "the Reply URL answered {status}: {reply}");
    let sent = graph.sent();
    let last = sent.last().context("Facebook got nothing")?;
    ensure!(
        last.recipient["id"] == IGSID && last.text.as_deref() == Some(answer),
        "Facebook got {last:?}"
    );
    println!(
        "   fb-openchannel → Instagram  Send API of page {} to {IGSID}: \"{answer}\"",
        last.page_id
    );
    Ok(())
}

/// A customer message that is in the Page's inbox but never came by webhook: the
/// comparison with the Conversations API (every 15 minutes in a running daemon) finds it
/// and it is delivered like the others.
async fn reconcile_step(
    graph: &SimGraph,
    motion: &SimMotion,
    daemon: &Daemon,
) -> anyhow::Result<()> {
    let text = "Hello? I wrote yesterday too.";
    println!("\n8. Meta never sends the webhook of Heidi's message: \"{text}\"");
    let at = now_ms() - 60_000;
    graph.add_inbox_message(
        PAGE,
        "messenger",
        LOST_PSID,
        crate::sim::facebook::InboxMessage {
            mid: "m_demo_never_sent".into(),
            from_customer: true,
            text: Some(text.into()),
            at_ms: at / 1000 * 1000,
            image_url: None,
        },
    );
    let report =
        crate::relay::reconcile::account(&daemon.shared, PAGE, now_ms() - 3_600_000, false)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        report.customer_missing() == 1 && report.stored == 1,
        "the comparison found {:?}",
        report.missing
    );
    println!(
        "   Conversations API → fb-openchannel   {} conversations compared: 1 message no webhook brought, stored",
        report.conversations
    );
    let notes = motion
        .wait_for_notifies(6, STEP)
        .await
        .map_err(anyhow::Error::msg)?;
    let note = &notes[5];
    ensure!(
        note.notify.from == LOST_PSID && note.notify.body == text,
        "Motion got {note:?}"
    );
    println!(
        "   fb-openchannel → Motion     notify from={} body=\"{}\": recovered, once",
        note.notify.from, note.notify.body
    );
    let again = crate::relay::reconcile::account(&daemon.shared, PAGE, now_ms() - 3_600_000, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        again.missing.is_empty(),
        "a second comparison found {:?}",
        again.missing
    );
    println!("   a second comparison finds nothing missing");
    Ok(())
}

fn demo_config(
    dir: &Path,
    certs: &tls::TestCerts,
    graph: &SimGraph,
    motion: &SimMotion,
) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[public]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
[local]
listen = "127.0.0.1:0"
[storage]
path = "{store}"
[facebook]
app_secret = "{APP_SECRET}"
verify_token = "demo-verify-token"
graph_url = "{graph}"
media_hosts = ["{media}"]
[motion]
api_key = "{API_KEY}"
[delivery]
retry_initial = "300ms"
retry_max = "1s"
[reconcile]
every = "0s"
pace = "10ms"
[[page]]
id = "{PAGE}"
access_token = "{PAGE_TOKEN}"
receive_url = "{receive}"
reply_token = "{REPLY_TOKEN}"
[[instagram]]
id = "{INSTAGRAM}"
page = "{PAGE}"
receive_url = "{instagram_receive}"
reply_token = "{INSTAGRAM_REPLY_TOKEN}"
"#,
        cert = certs.cert_path.display(),
        key = certs.key_path.display(),
        store = dir.join("state.db").display(),
        graph = graph.url(),
        media = graph.server.addr,
        receive = motion.receive_url(1),
        instagram_receive = motion.receive_url(2),
    );
    Config::from_toml(Path::new("(demo)"), &text).map_err(|e| anyhow::anyhow!("{e}"))
}
