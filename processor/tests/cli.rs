//! The `processor` binary: `--help`, configuration errors (exit 64), `healthcheck`, SIGTERM,
//! and SIGKILL in the middle of work (nothing is lost: another processor finishes it).

use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, free_port, RedisServer};
use std::process::Output;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_processor");
const EVENTS: &str = "{hookstream}:events";

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    hookstream_tests::run_bin(BIN, args, vars)
}

fn spawn(vars: &[(&str, &str)]) -> hookstream_tests::Spawned {
    hookstream_tests::spawn_bin(BIN, vars)
}

#[test]
fn help_lists_every_variable_with_its_default() {
    hookstream_tests::assert_help_lists_spec(BIN, "processor");
}

#[test]
fn invalid_values_exit_64_naming_the_variable() {
    for (var, value) in [
        ("CONCURRENCY", "lots"),
        ("RECORD_POLICY", "some"),
        ("BOT_CONFIG", "[]"),
        ("FORWARD_URL", "nowhere"),
        ("MEETING_BAAS_API_URL", "ftp://x"),
        ("METRICS_ADDR", "9090"),
        ("CLAIM_IDLE_MS", "100"),
    ] {
        let out = run(&[], &[(var, value)]);
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert_eq!(run(&["--bogus"], &[]).status.code(), Some(64));
}

#[tokio::test]
async fn healthcheck_sigterm_and_sigkill() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    // Slow enough that the killed processor is mid-work.
    target.route("POST", "/hook", |_, n| {
        if n < 3 {
            Reply::status(200).delayed(Duration::from_secs(30))
        } else {
            Reply::status(200)
        }
    });
    let metrics = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let forward = format!("{}/hook", target.url());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("METRICS_ADDR", metrics.as_str()),
        ("FORWARD_URL", forward.as_str()),
        ("CONSUMER_NAME", "doomed"),
        ("BLOCK_MS", "100"),
        ("SHUTDOWN_GRACE_MS", "1000"),
    ];
    assert_eq!(run(&["healthcheck"], &vars).status.code(), Some(1), "nothing listens yet");

    // SIGTERM: a clean exit 0.
    let mut child = spawn(&vars);
    eventually("healthcheck passes", || async { run(&["healthcheck"], &vars).status.success().then_some(()) }).await;
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0), "SIGTERM is a clean exit");

    // SIGINT (Ctrl-C): the same clean exit.
    let mut child = spawn(&vars);
    eventually("healthcheck passes", || async { run(&["healthcheck"], &vars).status.success().then_some(()) }).await;
    child.signal("INT");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0), "SIGINT is a clean exit");

    // SIGKILL in the middle of work.
    let mut child = spawn(&vars);
    for i in 0..3 {
        hookstream_tests::add_entry(&redis, "bot.completed", &format!("k{i}"), b"{}");
    }
    eventually("the doomed processor is working", || async { (target.calls().len() == 3).then_some(()) }).await;
    child.kill();

    // Another processor reclaims and finishes everything.
    let other = [
        ("REDIS_URL", url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("FORWARD_URL", forward.as_str()),
        ("CONSUMER_NAME", "survivor"),
        ("CLAIM_IDLE_MS", "400"),
        ("BLOCK_MS", "100"),
    ];
    let mut survivor = spawn(&other);
    eventually("all acked", || async {
        let info: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg(EVENTS).query(&mut redis.con()).ok()?;
        let g = info.groups.into_iter().next()?;
        (g.pending == 0 && g.lag == Some(0)).then_some(())
    })
    .await;
    survivor.kill();
    let finished =
        target.calls()[3..].iter().filter_map(|c| c.header("x-hookstream-id").map(String::from)).collect::<Vec<_>>();
    assert_eq!(finished.len(), 3, "each reclaimed entry handled again once: {finished:?}");
}

#[test]
fn operator_commands_exit_codes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let vars = [("REDIS_URL", url.as_str())];
    // An empty listing is not a failure: exit 0 (set -e scripts go on), the note on stderr.
    for args in [&["dead", "list"][..], &["retry", "list"][..]] {
        let out = run(args, &vars);
        assert_eq!(out.status.code(), Some(0), "{args:?}: an empty list");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no "), "{args:?}");
    }
    // Naming an entry that is not there is: exit 1.
    assert_eq!(run(&["dead", "show", "1-0"], &vars).status.code(), Some(1), "nothing matched");
    assert_eq!(run(&["dead", "replay"], &vars).status.code(), Some(64));
    assert_eq!(run(&["dead", "replay", "1-0", "--all"], &vars).status.code(), Some(64));
    assert_eq!(run(&["dead", "purge", "--older-than", "a week"], &vars).status.code(), Some(64));
    assert_eq!(run(&["dead", "show", "yesterday"], &vars).status.code(), Some(64));
    let out = run(&["status"], &vars);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("{hookstream}:events"));
    // Redis unreachable.
    let down = [("REDIS_URL", "redis://127.0.0.1:1")];
    assert_eq!(run(&["dead", "list"], &down).status.code(), Some(69));
}

#[tokio::test]
async fn a_bot_is_logged_as_scheduled_only_when_the_api_scheduled_it() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let upcoming = hookstream_tests::fixture("meeting-baas/api/v1_calendar_event_upcoming.json");
    let scheduled = hookstream_tests::fixture("meeting-baas/api/v1_schedule_response.json");
    for uuid in ["gone-1", "kept-1"] {
        api.always("GET", &format!("/calendar_events/{uuid}"), Reply::json(200, upcoming.clone()));
    }
    // The event vanished between the read and the write: the POST answers 404.
    api.always("POST", "/calendar_events/gone-1/bot", Reply::status(404));
    api.always("POST", "/calendar_events/kept-1/bot", Reply::json(200, scheduled));
    let (url, api_url) = (redis.url(), api.url());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("MEETING_BAAS_API_URL", api_url.as_str()),
        ("MEETING_BAAS_API_KEY", "k"),
        ("BLOCK_MS", "100"),
        ("LOG_FORMAT", "json"),
    ];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    let body = br#"{"event":"calendar.sync_events","data":{"affected_event_uuids":["gone-1","kept-1"]}}"#;
    let _: String = redis::cmd("XADD")
        .arg(EVENTS)
        .arg("*")
        .arg("event")
        .arg("calendar.sync_events")
        .arg("payload")
        .arg(&body[..])
        .arg("request_id")
        .arg("req-follow-1")
        .query(&mut redis.con())
        .unwrap();
    eventually("both POSTs sent", || async {
        (api.calls().iter().filter(|c| c.method == "POST").count() == 2).then_some(())
    })
    .await;
    eventually("both meetings logged", || async {
        let text = std::fs::read_to_string(&log).unwrap();
        (text.matches("\"uuid\":\"gone-1\"").count() >= 1 && text.contains("bot scheduled")).then_some(())
    })
    .await;
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    let about = |uuid: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["uuid"] == uuid)
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(!about("gone-1").iter().any(|m| m == "bot scheduled"), "{:?}", about("gone-1"));
    assert!(about("gone-1").iter().any(|m| m.contains("gone")), "{:?}", about("gone-1"));
    assert!(about("kept-1").iter().any(|m| m == "bot scheduled"), "{:?}", about("kept-1"));
    // Every line about the entry names it — the handler's own "bot scheduled" included — by the
    // delivery's span: its stream id, the webhook's request id, the event (SPEC §6; followed
    // with grep or jq, docs/observability.md).
    let scheduled = lines.iter().find(|l| l["message"] == "bot scheduled").expect("a bot scheduled line");
    let span = &scheduled["span"];
    assert_eq!(span["request_id"], "req-follow-1", "{scheduled}");
    assert_eq!(span["event"], "calendar.sync_events", "{scheduled}");
    let stream_id = span["stream_id"].as_str().unwrap_or_default();
    let entries: Vec<String> = redis::cmd("XRANGE")
        .arg(EVENTS)
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut redis.con())
        .unwrap()
        .ids
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(entries.contains(&stream_id.to_string()), "{stream_id} is not an entry: {entries:?}");
}

#[tokio::test]
async fn every_failed_attempt_logs_one_warn_line() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.sequence("POST", "/hook", vec![Reply::status(503), Reply::status(502), Reply::status(200)]);
    let url = redis.url();
    let forward = format!("{}/hook", target.url());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("FORWARD_URL", forward.as_str()),
        ("BLOCK_MS", "100"),
        ("RETRY_INITIAL_MS", "10"),
        ("LOG_FORMAT", "json"),
    ];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    let id = hookstream_tests::add_entry(&redis, "bot.completed", "w", b"{}");
    eventually("forwarded after two failures", || async { (target.calls().len() == 3).then_some(()) }).await;
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let failed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "attempt failed")
        .collect();
    assert_eq!(failed.len(), 2, "one line per failed attempt:\n{text}");
    for (n, line) in failed.iter().enumerate() {
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["stream_id"], id.as_str(), "{line}");
        assert_eq!(line["event"], "bot.completed", "{line}");
        assert_eq!(line["attempt"], n as u64 + 1, "{line}");
        assert_eq!(line["class"], "transient", "{line}");
        assert!(line["error"].as_str().unwrap().contains(["503", "502"][n]), "{line}");
        assert!(line["next_wait"].as_str().unwrap().ends_with(" ms"), "{line}");
    }
}

#[test]
fn a_partition_count_other_than_the_namespace_s_exits_64() {
    let redis = RedisServer::start();
    let url = redis.url();
    let () = redis::cmd("SET").arg("{hookstream}:partitions").arg(8).query(&mut redis.con()).unwrap();
    let out = run(&[], &[("REDIS_URL", url.as_str()), ("METRICS_ADDR", "127.0.0.1:0"), ("PARTITIONS", "2")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("PARTITIONS=2") && stderr.contains("created with 8"), "{stderr}");
    // The one-line form of every configuration error, not a timestamped log line.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("processor: invalid configuration: "), "{stderr}");
}

/// A password that must never be printed.
const PASSWORD: &str = "pa55-w0rd-in-the-url";

#[tokio::test]
async fn no_output_ever_prints_the_redis_password() {
    let url = format!("rediss://default:{PASSWORD}@127.0.0.1:6380");
    let out = run(&["status"], &[("REDIS_URL", &url)]);
    assert_eq!(out.status.code(), Some(69), "nothing listens there: {out:?}");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains(PASSWORD), "{printed}");
    // TLS settings that cannot work: exit 64, one line naming the variable, no password.
    let plain = url.replace("rediss://", "redis://");
    for (url, var, value, names) in [
        (url.as_str(), "REDIS_TLS_CA_FILE", "/no/such/ca.pem", "REDIS_TLS_CA_FILE"),
        (url.as_str(), "REDIS_TLS_KEY_FILE", "/etc/hostname", "REDIS_TLS_CERT_FILE"),
        (plain.as_str(), "REDIS_TLS_CA_FILE", "/etc/hostname", "default:***@127.0.0.1:6380"),
    ] {
        for args in [&[][..], &["status"][..]] {
            let out = run(args, &[("REDIS_URL", url), (var, value)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?} {var}={value}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains(names) && !stderr.contains(PASSWORD), "{stderr}");
        }
    }

    // A wrong password for an ACL user: the processor runs, and its log says which Redis
    // refused, without the password; so do `status` and `--help`.
    let redis = RedisServer::start_args(&["--user", "hookstream", "on", ">the-right-one", "~*", "&*", "+@all"]);
    let url = format!("redis://hookstream:{PASSWORD}@127.0.0.1:{}", redis.port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let vars = [("REDIS_URL", url.as_str()), ("METRICS_ADDR", "127.0.0.1:0"), ("LOG_FORMAT", "json")];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    let shown = format!("hookstream:***@127.0.0.1:{}", redis.port());
    eventually("the processor reports the Redis that refused", || async {
        std::fs::read_to_string(&log).unwrap().contains(&shown).then_some(())
    })
    .await;
    let status = run(&["status"], &vars);
    assert_eq!(status.status.code(), Some(69), "{status:?}");
    let help = run(&["--help"], &vars);
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    // The start-up line itself names REDIS_URL and says what failed (SPEC §7).
    let start = text
        .lines()
        .find(|l| l.contains("at start"))
        .unwrap_or_else(|| panic!("no start-up line about Redis:\n{text}"));
    assert!(start.contains("REDIS_URL") && start.contains(&shown), "{start}");
    assert!(start.contains("authentication failed"), "{start}");
    for out in [&status, &help] {
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
    assert!(!text.contains(PASSWORD), "the password was logged:\n{text}");
}

#[tokio::test]
async fn with_an_otlp_endpoint_a_delivery_continues_the_trace_its_entry_carries() {
    let redis = RedisServer::start();
    let collector = hookstream_tests::collector::start().await;
    let (url, endpoint) = (redis.url(), collector.url());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("BLOCK_MS", "100"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Nothing is exported before the exit: what the collector gets is the exit's flush.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let mut child = hookstream_tests::spawn_bin(BIN, &vars);
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let id: String = redis::cmd("XADD")
        .arg(EVENTS)
        .arg("*")
        .arg("event")
        .arg("bot.completed")
        .arg("payload")
        .arg(r#"{"event":"bot.completed"}"#)
        .arg("traceparent")
        .arg(format!("00-{trace}-{parent}-01"))
        .query(&mut redis.con())
        .unwrap();
    eventually("the entry delivered and acked", || async {
        let groups: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg(EVENTS).query(&mut redis.con()).ok()?;
        groups.groups.first().filter(|g| g.last_delivered_id == id && g.pending == 0).map(|_| ())
    })
    .await;
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0));
    let spans = hookstream_tests::collector::spans(&collector);
    let consumer = spans.iter().find(|s| s.kind == "CONSUMER").unwrap_or_else(|| panic!("a delivery span: {spans:#?}"));
    assert_eq!(consumer.service, "hookstream-processor", "OTEL_SERVICE_NAME's default");
    assert_eq!((consumer.trace_id.as_str(), consumer.parent_span_id.as_str()), (trace, parent));
    assert_eq!(consumer.attr("messaging.message.id"), Some(id.as_str()));
    assert_eq!(consumer.attr("hookstream.outcome"), Some("acked"));
}

#[tokio::test]
async fn a_tls_failure_at_start_is_one_line_naming_redis_url() {
    let pki = hookstream_tests::TestPki::generate();
    let redis = RedisServer::start_tls(&pki, false);
    let other = hookstream_tests::TestPki::path(&pki.other_ca);
    let url = redis.tls_url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_TLS_CA_FILE", other.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("LOG_FORMAT", "json"),
    ];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    let line = eventually("the start-up line", || async {
        std::fs::read_to_string(&log).unwrap().lines().find(|l| l.contains("at start")).map(str::to_string)
    })
    .await;
    child.signal("TERM");
    assert_eq!(child.exited(Duration::from_secs(15)).await.code(), Some(0));
    assert!(line.contains("REDIS_URL") && line.contains(&url), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
}

/// A `METRICS_ADDR` another process holds is a setting to change: exit 64, one line naming it.
#[test]
fn a_metrics_addr_in_use_exits_64_with_one_line() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let url = redis.url();
    let out = run(&[], &[("REDIS_URL", url.as_str()), ("METRICS_ADDR", addr.as_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("METRICS_ADDR") && stderr.contains(&addr), "{stderr}");
}

#[test]
fn version_is_printed() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("processor {}", env!("CARGO_PKG_VERSION")));
}
