//! Every built-in channel against an in-process receiver: the payload each receiver gets,
//! DingTalk's signature and the webhook HMAC checked as the receiver would, email through a
//! small SMTP server (several recipients, no header injection).
// The email and HTTP channels: qiflow-core's `email` and `http-channels` features.
#![cfg(all(feature = "email", feature = "http-channels"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use qiflow_core::Observer;
use qiflow_core::alert::{Alert, AlertLevel};
use sha2::Sha256;
use support::{Receiver, SmtpServer, config, wait_until};

const WAIT: Duration = Duration::from_secs(10);

fn observer(toml: &str) -> (Observer, qiflow_core::Guard) {
    Observer::builder(config(toml))
        .install_global(false)
        .build()
        .unwrap()
}

fn alert() -> Alert {
    Alert::new("checkout_errors", AlertLevel::Critical)
        .summary("5xx rate above 5%")
        .description("POST /orders fails")
        .label("route", "/orders")
        .source("baseline")
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn query(uri: &str) -> Vec<(String, String)> {
    uri.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn webhook_posts_every_field_signed_with_hmac_sha256() {
    let receiver = Receiver::start(vec![]);
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nsecret = \"s3cret\"\nheaders = {{ X-Team = \"payments\" }}\n",
        receiver.url("/hook")
    ));
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type").unwrap(), "application/json");
    assert_eq!(r.header("x-team").unwrap(), "payments");
    let expected = format!("sha256={}", hex(&hmac_sha256(b"s3cret", &r.body)));
    assert_eq!(r.header("x-qiflow-signature").unwrap(), expected);
    let body = r.json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["service"], "checkout");
    assert_eq!(
        body["instance"],
        observer.config().service.instance.as_str()
    );
    let a = &body["alerts"][0];
    assert_eq!(a["name"], "checkout_errors");
    assert_eq!(a["level"], "critical");
    assert_eq!(a["summary"], "5xx rate above 5%");
    assert_eq!(a["description"], "POST /orders fails");
    assert_eq!(a["labels"]["route"], "/orders");
    assert_eq!(a["source"], "baseline");
    assert_eq!(a["count"], 1);
    assert!(a["fingerprint"].as_str().unwrap().len() == 16);
    assert!(a["starts_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn slack_gets_a_block_kit_message() {
    let receiver = Receiver::start(vec![]);
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"slack\"\nurl = \"{}\"\n",
        receiver.url("/services/T0/B0/x")
    ));
    observer.alert(alert().label("who", "<!channel>"));
    assert!(observer.flush(WAIT));
    let body = receiver.received()[0].json();
    assert_eq!(
        body["text"],
        "[CRITICAL] checkout_errors firing: 5xx rate above 5%"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["type"], "section");
    let text = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(text.contains("*5xx rate above 5%*"), "{text}");
    assert!(
        text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
        "mrkdwn escaped: {text}"
    );
    assert_eq!(blocks[2]["type"], "context");
}

#[test]
fn dingtalk_signs_as_dingtalk_checks_and_sends_markdown() {
    let receiver = Receiver::start_on(
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        r#"{"errcode":0,"errmsg":"ok"}"#,
    );
    let secret = "SECa1b2c3";
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"dingtalk\"\nurl = \"{}\"\nsecret = \"{secret}\"\n",
        receiver.url("/robot/send?access_token=abc")
    ));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    let r = &receiver.received()[0];
    let q = query(&r.uri);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("access_token"), "abc");
    // What DingTalk does: the timestamp is milliseconds within an hour of now, and
    // sign == urlEncode(base64(HmacSHA256(key = secret, data = timestamp + "\n" + secret))).
    let ts: u128 = get("timestamp").parse().unwrap();
    assert!(ts >= before && ts - before < 60_000);
    let mac = hmac_sha256(secret.as_bytes(), format!("{ts}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(get("sign"), encoded);
    let body = r.json();
    assert_eq!(body["msgtype"], "markdown");
    assert!(
        body["markdown"]["title"]
            .as_str()
            .unwrap()
            .contains("checkout_errors")
    );
    assert!(
        body["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains("**5xx rate above 5%**")
    );
}

#[test]
fn dingtalk_errcode_is_a_failure_that_degrades_readiness() {
    let receiver = Receiver::start_on(
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        r#"{"errcode":310000,"errmsg":"sign not match"}"#,
    );
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"dingtalk\"\nname = \"ding\"\nurl = \"{}\"\n",
        receiver.url("/robot/send?access_token=abc")
    ));
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    assert_eq!(receiver.count(), 1, "a rejected message is not retried");
    let report = observer.runtime().block_on(observer.readiness());
    let check = &report.checks["alerts"];
    assert_eq!(check.status, qiflow_core::health::Status::Degraded);
    let detail = check.detail.as_deref().unwrap();
    assert!(
        detail.contains("ding") && detail.contains("310000"),
        "{detail}"
    );
}

#[test]
fn sms_fills_the_request_template_per_recipient_and_caps_the_text() {
    let receiver = Receiver::start(vec![]);
    let (observer, _guard) = observer(&format!(
        r#"[alerts]
group_wait = "0s"
[[alerts.channels]]
kind = "sms"
url = "{}"
token = "tok-1"
to = ["+8613800000001", "+8613800000002"]
max_length = 40
headers = {{ Authorization = "Bearer {{{{token}}}}" }}
body = '{{"phone":"{{{{to|json}}}}","text":"{{{{message|json}}}}","sev":"{{{{level}}}}"}}'
"#,
        receiver.url("/sms/send?to={{to|url}}")
    ));
    observer.alert(alert().summary("line one\nline \"two\" and a rather long tail"));
    assert!(observer.flush(WAIT));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    for (r, phone) in got.iter().zip(["+8613800000001", "+8613800000002"]) {
        assert_eq!(r.uri, format!("/sms/send?to=%2B{}", &phone[1..]));
        assert_eq!(r.header("authorization").unwrap(), "Bearer tok-1");
        let body = r.json();
        assert_eq!(body["phone"], phone);
        assert_eq!(body["sev"], "critical");
        let text = body["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), 40, "{text}");
        assert!(text.ends_with('…') && !text.contains('\n'), "{text}");
        assert!(text.starts_with("[CRITICAL] checkout_errors firing: line"));
    }
}

#[test]
fn alertmanager_gets_labels_and_annotations_and_the_resolve() {
    let receiver = Receiver::start(vec![]);
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"alertmanager\"\nurl = \"{}\"\n",
        receiver.url("")
    ));
    let a = alert().label("pod.name", "web-1");
    let fp = a.fingerprint_value();
    observer.alert(a);
    assert!(observer.flush(WAIT));
    observer.alert(Alert::resolve(&fp));
    assert!(observer.flush(WAIT));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].uri, "/api/v2/alerts");
    let firing = &got[0].json()[0];
    assert_eq!(firing["labels"]["alertname"], "checkout_errors");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["labels"]["route"], "/orders");
    assert_eq!(firing["labels"]["pod_name"], "web-1");
    assert_eq!(firing["labels"]["service"], "checkout");
    // Which instance sent it (generated here: no `[service] instance`); a label of its own, so
    // the same alert from two instances is two alerts that one `group_by` gathers.
    let instance = &observer.config().service.instance;
    assert!(!instance.is_empty());
    assert_eq!(firing["labels"]["instance"], instance.as_str());
    assert_eq!(firing["annotations"]["summary"], "5xx rate above 5%");
    assert!(firing["startsAt"].is_string());
    assert!(firing.get("endsAt").is_none());
    let resolved = &got[1].json()[0];
    assert_eq!(resolved["labels"], firing["labels"]);
    assert!(resolved["endsAt"].is_string());
}

/// A cluster of Alertmanagers (`url` and `urls`): each notification goes to every one; one that
/// refuses does not fail the send while another accepted it; when all refuse, the send fails
/// (retried, then counted as failed).
#[test]
fn alertmanager_sends_to_every_member_of_a_cluster() {
    let up = Receiver::start(vec![]);
    let also_up = Receiver::start(vec![]);
    let down = Receiver::start(vec![support::Reply::Status(503, "down"); 20]);
    let (observer, _guard) = observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"alertmanager\"\nname = \"am\"\nurl = \"{}\"\nurls = [\"{}\", \"{}\"]\n",
        up.url(""),
        down.url(""),
        also_up.url("/api/v2/alerts")
    ));
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    for receiver in [&up, &also_up, &down] {
        let got = receiver.received();
        assert_eq!(got.len(), 1, "every Alertmanager gets the alert once");
        assert_eq!(got[0].uri, "/api/v2/alerts");
        assert_eq!(got[0].json()[0]["labels"]["alertname"], "checkout_errors");
    }
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(r#"qiflow_alerts_sent_total{channel="am",outcome="sent"} 1"#),
        "{metrics}"
    );

    // Every member refusing: the send fails.
    let (observer, _guard) = self::observer(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"alertmanager\"\nname = \"am\"\nurls = [\"{}\"]\n",
        down.url("")
    ));
    observer.alert(alert().label("second", "yes"));
    // The first attempt and a retry: a failed send, retried with backoff.
    assert!(wait_until(WAIT, || down.count() >= 3));
    let metrics = observer.render_metrics();
    assert!(
        !metrics.contains(r#"qiflow_alerts_sent_total{channel="am",outcome="sent"} 1"#),
        "{metrics}"
    );
}

#[test]
fn several_urls_are_for_alertmanager_only_and_each_is_checked() {
    let error = qiflow_core::config::Loader::new()
        .toml_str(
            "[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://a.example\"\nurls = [\"http://b.example\"]\n\
             [[alerts.channels]]\nkind = \"alertmanager\"\nname = \"am\"\nurls = [\"ftp://c.example\"]\n",
        )
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err()
        .to_string();
    assert!(error.contains("alerts.channels.hook.urls"), "{error}");
    assert!(error.contains("alerts.channels.am.urls.0"), "{error}");
    assert!(!error.contains("alerts.channels.am.url:"), "{error}");
}

#[test]
fn email_goes_to_every_recipient_and_no_field_can_add_a_header() {
    let smtp = SmtpServer::start();
    let (observer, _guard) = observer(&format!(
        r#"[alerts]
group_wait = "0s"
[[alerts.channels]]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "qiflow <alerts@example.com>"
to = ["oncall@example.com", "lead@example.com"]
"#,
        smtp.addr.port()
    ));
    observer.alert(
        alert()
            .summary("boom\r\nBcc: victim@example.net\r\nX-Evil: 1")
            .label("x", "a\nSubject: forged"),
    );
    assert!(observer.flush(WAIT));
    assert!(wait_until(WAIT, || smtp.mails().len() == 1));
    let mail = &smtp.mails()[0];
    assert_eq!(mail.from, "<alerts@example.com>");
    assert_eq!(mail.to, vec!["<oncall@example.com>", "<lead@example.com>"]);
    let (head, body) = mail.data.split_once("\r\n\r\n").unwrap();
    // Unfold continuation lines (RFC 5322 folding), then every line is one header.
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let headers: Vec<&str> = head.split("\r\n").collect();
    assert!(
        headers
            .iter()
            .all(|h| !h.starts_with("Bcc:") && !h.starts_with("X-Evil:")),
        "{head}"
    );
    assert_eq!(
        headers.iter().filter(|h| h.starts_with("Subject:")).count(),
        1,
        "{head}"
    );
    let subject = headers.iter().find(|h| h.starts_with("Subject:")).unwrap();
    assert!(
        subject.contains("boom  Bcc: victim@example.net") && subject.contains("X-Evil: 1"),
        "{subject}"
    );
    assert!(
        head.contains("To: oncall@example.com, lead@example.com"),
        "{head}"
    );
    assert!(body.contains("checkout_errors"), "{body}");
}

#[test]
fn channel_matchers_and_min_level_pick_the_channels() {
    let pager = Receiver::start(vec![]);
    let orders = Receiver::start(vec![]);
    let (observer, _guard) = observer(&format!(
        r#"[alerts]
group_wait = "0s"
min_level = "info"
[[alerts.channels]]
kind = "webhook"
name = "pager"
min_level = "critical"
url = "{}"
[[alerts.channels]]
kind = "webhook"
name = "orders"
url = "{}"
matchers = {{ route = "/orders*" }}
"#,
        pager.url("/"),
        orders.url("/")
    ));
    observer.alert(Alert::new("a", AlertLevel::Warning).label("route", "/orders/1"));
    observer.alert(Alert::new("b", AlertLevel::Critical).label("route", "/users"));
    observer.alert(Alert::new("c", AlertLevel::Info).label("route", "/users"));
    assert!(observer.flush(WAIT));
    let names = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .flat_map(|x| {
                x.json()["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["name"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(names(&pager), vec!["b"]);
    assert_eq!(names(&orders), vec!["a"]);
}

#[test]
fn templates_with_unknown_fields_fail_the_config_check_naming_the_key() {
    let err = qiflow_core::config::Loader::new()
        .toml_str(
            "[[alerts.channels]]\nkind = \"slack\"\nname = \"ops\"\nurl = \"http://127.0.0.1:9/x\"\nsubject = \"{{nope}}\"\n",
        )
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("alerts.channels.ops.subject") && text.contains("unknown field"),
        "{text}"
    );
}

#[test]
fn email_with_starttls_never_falls_back_to_plain_text() {
    // The test server offers no STARTTLS: the mail must not go out in the clear.
    let smtp = SmtpServer::start();
    let (observer, _guard) = observer(&format!(
        r#"[alerts]
group_wait = "0s"
retry_deadline = "1ms"
[[alerts.channels]]
kind = "email"
name = "mail"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "starttls"
username = "alerts"
password = "pw-never-sent"
from = "alerts@example.com"
to = ["oncall@example.com"]
"#,
        smtp.addr.port()
    ));
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    assert!(smtp.mails().is_empty());
    let recent = &observer.alerts().view().recent[0];
    assert_eq!(recent.outcome, "failed");
    let error = recent.error.as_deref().unwrap();
    assert!(
        error.contains("email: 127.0.0.1:") && !error.contains("pw-never-sent"),
        "{error}"
    );
}

#[test]
fn plain_text_smtp_to_a_remote_host_is_warned_about() {
    let load = |host: &str| {
        qiflow_core::config::Loader::new()
            .toml_str(format!(
                "[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"{host}\"\ntls = \"none\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
            ))
            .env(Vec::<(String, String)>::new())
            .load()
            .unwrap()
    };
    let remote = load("smtp.example.com");
    let warning = remote
        .warnings()
        .iter()
        .find(|w| w.path() == "alerts.channels.mail.tls")
        .expect("a warning");
    assert!(
        warning.message().contains("plain text"),
        "{}",
        warning.message()
    );
    assert!(
        load("127.0.0.1")
            .warnings()
            .iter()
            .all(|w| w.path() != "alerts.channels.mail.tls")
    );
}
