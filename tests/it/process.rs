//! The daemon as a real process: crash safety (SIGKILL), clean stop (SIGTERM), and
//! what its log says — and never says.

use fb_openchannel::sim::facebook::{WebhookSender, messenger_text};

use crate::harness::*;

fn sender(peers: &Peers, process: &Process) -> WebhookSender {
    WebhookSender::new(
        &format!("https://127.0.0.1:{}/webhook", process.public_port),
        APP_SECRET,
        Some(&peers.certs.ca_pem),
    )
}

#[tokio::test]
async fn killed_right_after_acknowledging_then_restarted_delivers_the_message() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    // Motion is down, so the message can only be in the store when the process dies.
    peers.motion.down().await;

    let mut daemon = Process::start(&config);
    let body = messenger_text(
        PAGE_A,
        PSID,
        "mid.crash",
        1_700_000_000_000,
        "survives SIGKILL",
    );
    let (status, _) = sender(&peers, &daemon).send(body.as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    daemon.kill();

    peers.motion.up().await;
    let daemon = Process::start(&config);
    let notes = peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].notify.body, "survives SIGKILL");
    // Delivered exactly once: a second message goes through alone after it.
    let (status, _) = sender(&peers, &daemon)
        .send(messenger_text(PAGE_A, PSID, "mid.next", 1_700_000_000_001, "next").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let notes = peers.motion.wait_for_notifies(2, WAIT).await.unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[1].notify.body, "next");
}

#[tokio::test]
async fn sigterm_stops_cleanly_with_exit_0() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    let mut daemon = Process::start(&config);
    let (status, _) = sender(&peers, &daemon)
        .send(messenger_text(PAGE_A, PSID, "m.t", 1, "before stop").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}\n{}", daemon.log_text());
    assert!(
        daemon.log_text().contains("stopped cleanly"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test]
async fn the_log_names_page_conversation_and_outcome_and_never_a_secret() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    peers.motion.fail_next(1, 500);
    peers.graph.refuse_profiles(true);
    let daemon = Process::start(&config);
    let s = sender(&peers, &daemon);
    // A bad signature, a delivery that is retried, one that fails for good, one that works.
    assert_eq!(
        s.send_with_signature(b"{}", Some("sha256=00"))
            .await
            .unwrap()
            .0,
        403
    );
    s.send(messenger_text(PAGE_A, PSID, "m.1", 1, "retried").as_bytes())
        .await
        .unwrap();
    peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    peers.motion.fail_next(1, 401);
    s.send(messenger_text(PAGE_A, PSID, "m.2", 2, "refused").as_bytes())
        .await
        .unwrap();
    s.send(messenger_text(PAGE_A, PSID, "m.3", 3, "works").as_bytes())
        .await
        .unwrap();
    // Motion records refused attempts too: wait for the lines themselves (m.1 delivered
    // after its retry, m.2 refused for good, m.3 delivered).
    crate::wait_until("the log tells all three outcomes", WAIT, || async {
        let log = daemon.log_text();
        log.contains("failed for good") && log.matches("delivered to Motion").count() >= 2
    })
    .await;

    let log = daemon.log_text();
    println!("{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "secret {secret} in the log:\n{log}");
    }
    let delivered = log
        .lines()
        .find(|l| l.contains("delivered to Motion"))
        .expect(&log);
    assert!(
        delivered.contains(&format!("page_id={PAGE_A}")),
        "{delivered}"
    );
    assert!(
        delivered.contains(&format!("conversation=psid:{PSID}")),
        "{delivered}"
    );
    assert!(delivered.contains("outcome=\"delivered\""), "{delivered}");
    let retry = log.lines().find(|l| l.contains("retrying in")).expect(&log);
    assert!(retry.contains("Motion answered 500"), "{retry}");
    let failed = log
        .lines()
        .find(|l| l.contains("failed for good"))
        .expect(&log);
    assert!(
        failed.contains("Motion answered 401") && failed.contains("outcome=\"failed\""),
        "{failed}"
    );
    assert!(log.contains("webhook refused with 403"), "{log}");
}

#[tokio::test]
async fn under_the_journal_lines_carry_no_timestamp_of_their_own() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    let mut daemon = Process::start_with_env(
        &config,
        &[
            ("JOURNAL_STREAM", "8:12345"),
            ("FB_OPENCHANNEL_LOG_STDERR", "1"),
        ],
    );
    assert!(daemon.terminate().success());
    let log = daemon.log_text();
    for line in log.lines() {
        let line = line.trim_start();
        assert!(
            line.starts_with("INFO ") || line.starts_with("WARN ") || line.starts_with("ERROR "),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "no colours: {line:?}");
    }
    // Outside the journal, lines start with a timestamp.
    let mut daemon = Process::start(&config);
    assert!(daemon.terminate().success());
    assert!(daemon.log_text().starts_with("20"), "{}", daemon.log_text());
}

/// A number of runtime threads the environment asks for (`systemctl edit`, as the
/// README says) is read; one that is not a number of threads is said in the log, and
/// the daemon starts with its default.
#[tokio::test]
async fn runtime_threads_from_the_environment_and_a_wrong_number_said() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    let said = "TOKIO_WORKER_THREADS is not a number of threads from 1 to 512";
    let mut daemon = Process::start_with_env(&config, &[("TOKIO_WORKER_THREADS", "3")]);
    assert!(daemon.terminate().success());
    assert!(!daemon.log_text().contains(said), "{}", daemon.log_text());
    let mut daemon = Process::start_with_env(&config, &[("TOKIO_WORKER_THREADS", "all")]);
    assert!(daemon.terminate().success());
    let log = daemon.log_text();
    assert_eq!(log.matches(said).count(), 1, "{log}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = format!("using {} runtime thread(s)", cores.saturating_sub(1).max(1));
    assert!(log.contains(&default), "{default}: {log}");
}

#[tokio::test]
async fn plain_http_behind_a_proxy_with_tls_false() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    let text = peers.config_toml("").replace(
        "request_timeout = \"2s\"",
        "request_timeout = \"2s\"\ntls = false",
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Process::start(&config);
    assert!(
        daemon.log_text().contains("webhooks on http://127.0.0.1:"),
        "{}",
        daemon.log_text()
    );
    let s = WebhookSender::new(
        &format!("http://127.0.0.1:{}/webhook", daemon.public_port),
        APP_SECRET,
        None,
    );
    let (status, _) = s
        .send(messenger_text(PAGE_A, PSID, "m.plain", 1, "via nginx").as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let notes = peers.motion.wait_for_notifies(1, WAIT).await.unwrap();
    assert_eq!(notes[0].notify.body, "via nginx");
}

/// A Page whose customers' names Facebook refuses (the app lacks Business Asset User
/// Profile Access): after ten new customers refused in a row, names are not asked for a
/// while and one line says why; every customer still reaches Motion, with a stand-in name.
#[tokio::test]
async fn names_refused_for_ten_customers_in_a_row_are_not_asked_for_a_while() {
    let peers = Peers::start().await;
    let config = peers.dir.path().join("config.toml");
    std::fs::write(&config, peers.config_toml("")).unwrap();
    peers.graph.refuse_profiles(true);
    let daemon = Process::start(&config);
    let s = sender(&peers, &daemon);
    let customers: Vec<String> = (0..14).map(|n| format!("5550003{n:02}")).collect();
    // One at a time, so that each lookup's answer is in before the next customer's.
    for (n, psid) in customers.iter().enumerate() {
        let (status, _) = s
            .send(messenger_text(PAGE_A, psid, &format!("m.{n}"), n as i64 + 1, "hi").as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 200);
        peers.motion.wait_for_notifies(n + 1, WAIT).await.unwrap();
    }
    let notes = peers.motion.wait_for_notifies(14, WAIT).await.unwrap();
    for (note, psid) in notes.iter().zip(&customers) {
        assert_eq!(note.notify.from, *psid);
        assert_eq!(note.notify.first_name.as_deref(), Some("Facebook"));
        assert_eq!(
            note.notify.last_name.as_deref(),
            Some(format!("user {}", &psid[psid.len() - 4..]).as_str())
        );
    }
    let requests = peers.graph.requests();
    let asked = |psid: &String| {
        requests
            .iter()
            .filter(|r| r.path.ends_with(psid.as_str()))
            .count()
    };
    for psid in &customers[..10] {
        assert_eq!(asked(psid), 2, "first and last names, then `name`: {psid}");
    }
    for psid in &customers[10..] {
        assert_eq!(asked(psid), 0, "paused: {psid} is not asked");
    }
    let log = daemon.log_text();
    assert_eq!(
        log.matches("refused the names of 10 new customers in a row")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("Business Asset User Profile Access"), "{log}");
    assert_eq!(
        log.matches("refused the customer name lookup").count(),
        9,
        "one line per customer until the pause, then none: {log}"
    );
    let metrics = get_text(format!("http://127.0.0.1:{}/metrics", daemon.local_port)).await;
    assert!(
        metrics.contains(&format!(
            "fb_openchannel_customer_names_paused{{page_id=\"{PAGE_A}\"}} 1"
        )),
        "{metrics}"
    );
}
