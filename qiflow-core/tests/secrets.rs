//! Encrypted values: round trips, nonce uniqueness, tampering, rotation, and bad input.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use qiflow_core::secret::{Keyring, SecretErrorKind};

fn keyring() -> Keyring {
    Keyring::parse(&Keyring::generate_key()).unwrap()
}

fn blob(value: &str) -> Vec<u8> {
    let data = value.rsplit(':').next().unwrap();
    URL_SAFE_NO_PAD.decode(data).unwrap()
}

fn with_blob(value: &str, blob: &[u8]) -> String {
    let (head, _) = value.rsplit_once(':').unwrap();
    format!("{head}:{}", URL_SAFE_NO_PAD.encode(blob))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(plaintext in ".{0,256}", path in "[a-z_]{1,12}(\\.[a-z0-9_-]{1,12}){0,3}") {
        let keys = keyring();
        let enc = keys.encrypt(&path, &plaintext).unwrap();
        let prefix = format!("ENC:v1:{}:", keys.active_key_id());
        prop_assert!(enc.starts_with(&prefix));
        let plain = keys.decrypt(&path, &enc).unwrap();
        prop_assert_eq!(plain.expose(), plaintext.as_str());
    }

    #[test]
    fn arbitrary_input_never_panics(value in "ENC:.{0,80}", path in "[a-z.]{0,20}") {
        let keys = keyring();
        let _ = keys.decrypt(&path, &value);
    }
}

#[test]
fn one_hundred_thousand_encryptions_use_distinct_nonces() {
    let keys = keyring();
    let mut nonces = HashSet::with_capacity(100_000);
    for _ in 0..100_000 {
        let enc = keys.encrypt("database.password", "same plaintext").unwrap();
        let nonce: [u8; 12] = blob(&enc)[..12].try_into().unwrap();
        nonces.insert(nonce);
    }
    assert_eq!(nonces.len(), 100_000);
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let keys = keyring();
    let secret = "0123456789abcdef0123456789abcdef"; // 32 bytes
    let enc = keys.encrypt("audit.signing_key", secret).unwrap();
    let original = blob(&enc);
    assert_eq!(original.len(), 12 + 32 + 16);
    let mut rejected = 0;
    for bit in 0..original.len() * 8 {
        let mut tampered = original.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let err = keys
            .decrypt("audit.signing_key", &with_blob(&enc, &tampered))
            .unwrap_err();
        assert_eq!(err.kind(), SecretErrorKind::Decrypt);
        assert!(!err.to_string().contains(secret));
        rejected += 1;
    }
    assert_eq!(rejected, 480);
    // Truncation too.
    for cut in 1..=16 {
        let short = &original[..original.len() - cut];
        assert!(
            keys.decrypt("audit.signing_key", &with_blob(&enc, short))
                .is_err()
        );
    }
}

#[test]
fn a_value_moved_to_another_key_path_fails_and_names_the_path() {
    let keys = keyring();
    let enc = keys
        .encrypt("alerts.channels.ops.password", "pw-123")
        .unwrap();
    let err = keys.decrypt("errors.sentry_dsn", &enc).unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::Decrypt);
    assert_eq!(err.path(), Some("errors.sentry_dsn"));
    let text = err.to_string();
    assert!(text.starts_with("errors.sentry_dsn: "), "{text}");
    assert!(
        text.contains("qiflow encrypt --name errors.sentry_dsn"),
        "{text}"
    );
    assert!(!text.contains("pw-123"));
}

#[test]
fn the_wrong_key_fails() {
    let enc = keyring().encrypt("health.token", "t0ken").unwrap();
    // Same key id text, different key: rewrite the id to the other keyring's.
    let other = keyring();
    let rewritten = enc.replacen(
        enc.split(':').nth(2).unwrap(),
        other.active_key_id().as_str(),
        1,
    );
    let err = other.decrypt("health.token", &rewritten).unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::Decrypt);
    // With its own id left in place, the other keyring does not know the key.
    let err = other.decrypt("health.token", &enc).unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::UnknownKeyId);
    assert!(err.to_string().contains("QIFLOW_MASTER_KEY"));
}

#[test]
fn malformed_values_are_named() {
    let keys = keyring();
    let enc = keys.encrypt("a.b", "x").unwrap();
    let kid = keys.active_key_id().to_string();
    let cases = [
        ("plain text", SecretErrorKind::Malformed),
        ("ENC:v1", SecretErrorKind::Malformed),
        ("ENC:v2:k:abc", SecretErrorKind::UnknownVersion),
        ("ENC:v1:nope:abc", SecretErrorKind::UnknownKeyId),
        (
            &*format!("ENC:v1:{kid}:!!!not base64!!!"),
            SecretErrorKind::Malformed,
        ),
        (&*format!("ENC:v1:{kid}:AAAA"), SecretErrorKind::Malformed),
        (
            &*enc.replace("ENC:v1:", "ENC:v9:"),
            SecretErrorKind::UnknownVersion,
        ),
    ];
    for (value, kind) in cases {
        let err = keys.decrypt("a.b", value).unwrap_err();
        assert_eq!(err.kind(), kind, "{value}: {err}");
        assert!(err.to_string().starts_with("a.b: "), "{err}");
        assert!(
            err.to_string().contains("qiflow encrypt --name a.b"),
            "{err}"
        );
    }
}

#[test]
fn bad_keys_are_rejected_clearly() {
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let err = Keyring::parse(&short).unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::InvalidKey);
    assert!(err.to_string().contains("32 bytes"), "{err}");
    assert!(err.to_string().contains("qiflow keygen"), "{err}");

    let err = Keyring::parse("not base64 at all!").unwrap_err();
    assert!(err.to_string().contains("not valid base64"), "{err}");

    let err = Keyring::parse("").unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::InvalidKey);

    let err = Keyring::parse(&format!("bad id!:{}", Keyring::generate_key())).unwrap_err();
    assert!(err.to_string().contains("invalid key id"), "{err}");

    let key = Keyring::generate_key();
    let err = Keyring::parse(&format!("{key},{key}")).unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");

    let err = Keyring::from_lookup(|_| None).unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::NoKey);
    assert!(err.to_string().contains("QIFLOW_MASTER_KEY"), "{err}");
    assert!(err.to_string().contains("QIFLOW_MASTER_KEY_FILE"), "{err}");

    let err = Keyring::from_lookup(|name| {
        (name == "QIFLOW_MASTER_KEY_FILE").then(|| "/nonexistent/qiflow.key".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.kind(), SecretErrorKind::KeyFile);
    assert!(err.to_string().contains("/nonexistent/qiflow.key"), "{err}");
}

#[test]
fn keys_rotate_by_id() {
    let old = Keyring::generate_key();
    let new = Keyring::generate_key();
    let before = Keyring::parse(&old).unwrap();
    let enc_old = before
        .encrypt("audit.postgres_url", "postgres://u:p@h/db")
        .unwrap();

    let rotated = Keyring::parse(&format!("2026-11:{new}\n{old}")).unwrap();
    assert_eq!(rotated.active_key_id().as_str(), "2026-11");
    assert_eq!(
        rotated
            .decrypt("audit.postgres_url", &enc_old)
            .unwrap()
            .expose(),
        "postgres://u:p@h/db"
    );
    let enc_new = rotated
        .encrypt("audit.postgres_url", "postgres://u:p@h/db")
        .unwrap();
    assert!(enc_new.starts_with("ENC:v1:2026-11:"));
    // The old keyring alone cannot read the new value.
    assert_eq!(
        before
            .decrypt("audit.postgres_url", &enc_new)
            .unwrap_err()
            .kind(),
        SecretErrorKind::UnknownKeyId
    );
}

#[test]
fn debug_never_shows_secrets_or_keys() {
    let key = Keyring::generate_key();
    let keys = Keyring::parse(&key).unwrap();
    let secret = keys
        .decrypt("x.y", &keys.encrypt("x.y", "hunter2").unwrap())
        .unwrap();
    assert_eq!(format!("{secret:?}"), "[REDACTED]");
    assert_eq!(format!("{secret}"), "[REDACTED]");
    let debug = format!("{keys:?}");
    assert!(!debug.contains(&key), "{debug}");
    assert!(debug.contains(keys.active_key_id().as_str()));
}

#[test]
fn key_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let key = Keyring::generate_key();
    std::fs::write(&path, format!("# qiflow master keys\nprimary:{key}\n")).unwrap();
    let keys = Keyring::from_lookup(|name| {
        (name == "QIFLOW_MASTER_KEY_FILE").then(|| path.display().to_string())
    })
    .unwrap();
    assert_eq!(keys.active_key_id().as_str(), "primary");
}
