//! The stored form of the trail and its integrity: the hash chain, digest records, and the
//! incremental [`Verifier`] that both sinks and `qiflow audit verify` use.
//!
//! Every stored line (a record, an encrypted record, or a digest) has a `seq` (0, 1, 2, …, with
//! no gaps across segments), the `prev_hash` of the line before it, and its own `hash`:
//! hex SHA-256 of the line's canonical JSON without the `hash` field (field order fixed, object
//! keys sorted, no whitespace). A digest line also carries a `signature`: hex HMAC-SHA256, keyed
//! by `[audit] signing_key`, over its canonical JSON without `signature` and `hash`; it names the
//! previous digest's signature, so digests form a second, keyed chain.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::event::{AuditEvent, Outcome, canonical_map};
use super::witness::Seal;

/// The `prev_hash` of the very first line of a trail.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored audit record, as written in the trail and returned by queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Position in the trail (0-based, contiguous across segments, digests included).
    pub seq: u64,
    /// The event id (UUID v7).
    pub id: String,
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Who acted.
    pub actor: String,
    /// What they did.
    pub action: String,
    /// What they did it to.
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The request it happened in.
    pub request_id: Option<String>,
    /// The W3C trace it happened in (32 lowercase hex digits). Absent from records without one,
    /// so records written before this field existed hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The instance that wrote it (`[service] instance`; the chain it belongs to in a trail
    /// shared by several instances). Absent from records written before instances had ids, so
    /// they hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Free-form details (sensitive keys redacted).
    pub metadata: Map<String, Value>,
    /// The hash of the line before this one ([`GENESIS`] for the first line of a trail).
    pub prev_hash: String,
    /// SHA-256 over this record's canonical form (which includes `prev_hash`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// A digest: seals every line since the previous digest, keyed by the signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DigestRecord {
    /// Position in the trail.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC, microseconds).
    pub timestamp: String,
    /// Why it was written: `count`, `interval`, `flush` (also at shutdown), `segment`,
    /// `recovery`, `continue` (the first line after a cut trail, continuing after its witness).
    pub reason: String,
    /// The first seq it seals (the line after the previous digest).
    pub first_seq: u64,
    /// How many records (not digests) it seals.
    pub records: u64,
    /// How many records all digests up to this one sealed, since the trail began (absent in
    /// digests written before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<u64>,
    /// The first seq still kept after retention deleted older segments (0 if none were).
    pub retained_from: u64,
    /// Whether `signature` is an HMAC with the signing key (false: a plain SHA-256, no key was
    /// configured).
    pub keyed: bool,
    /// The previous digest's signature (empty for the first digest).
    pub prev_signature: String,
    /// The hash of the line before this one.
    pub prev_hash: String,
    /// HMAC-SHA256 (or SHA-256 when not keyed) over the canonical digest without `signature`
    /// and `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// SHA-256 over the canonical digest including `signature`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// A record encrypted at rest: its JSON (without `seq`, `prev_hash`, `hash`) as an
/// `ENC:v1:…` value under the keyring. The chain covers the ciphertext, so the trail verifies
/// without the keyring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EncryptedRecord {
    /// Position in the trail.
    pub seq: u64,
    /// `ENC:v1:<key-id>:<data>`, associated data `audit.record`.
    pub enc: String,
    /// The hash of the line before this one.
    pub prev_hash: String,
    /// SHA-256 over the canonical form.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// One line of a trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Line {
    /// An audit record.
    Record(AuditRecord),
    /// An encrypted audit record.
    Encrypted(EncryptedRecord),
    /// A digest.
    Digest(DigestRecord),
}

/// The associated data of encrypted records.
pub(crate) const ENC_PATH: &str = "audit.record";

/// The plaintext of an encrypted record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sealed {
    pub(crate) id: String,
    pub(crate) timestamp: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) outcome: Outcome,
    pub(crate) request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    pub(crate) metadata: Map<String, Value>,
}

impl Line {
    /// The line's seq.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Record(r) => r.seq,
            Self::Encrypted(r) => r.seq,
            Self::Digest(d) => d.seq,
        }
    }

    /// The line's `prev_hash`.
    pub fn prev_hash(&self) -> &str {
        match self {
            Self::Record(r) => &r.prev_hash,
            Self::Encrypted(r) => &r.prev_hash,
            Self::Digest(d) => &d.prev_hash,
        }
    }

    /// The line's stored `hash`.
    pub fn hash(&self) -> &str {
        match self {
            Self::Record(r) => &r.hash,
            Self::Encrypted(r) => &r.hash,
            Self::Digest(d) => &d.hash,
        }
    }

    fn set_hash(&mut self, hash: String) {
        match self {
            Self::Record(r) => r.hash = hash,
            Self::Encrypted(r) => r.hash = hash,
            Self::Digest(d) => d.hash = hash,
        }
    }

    /// Parses a stored line (keys of `metadata` put in canonical order).
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let mut line: Line = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if let Self::Record(r) = &mut line {
            r.metadata = canonical_map(std::mem::take(&mut r.metadata));
        }
        Ok(line)
    }

    /// The hash this line should carry: SHA-256 over its canonical form without `hash`.
    pub fn compute_hash(&self) -> String {
        let mut copy = self.clone();
        copy.set_hash(String::new());
        hex::encode(Sha256::digest(to_json(&copy)))
    }

    /// Sets `hash` and returns the line as stored (JSON, no trailing newline).
    pub(crate) fn seal(mut self) -> (Self, Vec<u8>) {
        self.set_hash(String::new());
        // `hash` is every line's last field: the stored line is the canonical form with
        // `,"hash":"…"` before its closing brace, so it is serialized once.
        let mut json = to_json(&self);
        let hash = hex::encode(Sha256::digest(&json));
        if json.pop() == Some(b'}') {
            json.extend_from_slice(b",\"hash\":\"");
            json.extend_from_slice(hash.as_bytes());
            json.extend_from_slice(b"\"}");
            self.set_hash(hash);
        } else {
            self.set_hash(hash);
            json = to_json(&self);
        }
        (self, json)
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structs and JSON values cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// RFC 3339, UTC, six fractional digits (what both sinks store).
pub(crate) fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// Parses an RFC 3339 timestamp.
pub(crate) fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The signature of a digest (its `signature` and `hash` empty).
pub(crate) fn sign_digest(digest: &DigestRecord, key: Option<&[u8]>) -> String {
    let mut copy = digest.clone();
    copy.signature.clear();
    copy.hash.clear();
    let body = to_json(&Line::Digest(copy));
    match key {
        Some(key) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                return String::new(); // HMAC takes keys of any length.
            };
            mac.update(&body);
            hex::encode(mac.finalize().into_bytes())
        }
        None => hex::encode(Sha256::digest(&body)),
    }
}

/// How the key of a trail's last digest differs from the signing key configured now; what a
/// sink notices when it opens a trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyChange {
    /// The trail was sealed without a key; a key is set now.
    Added,
    /// The last digest is keyed, but not with the key set now.
    Changed,
    /// The last digest is keyed; no key is set now.
    Removed,
}

impl KeyChange {
    /// The change from `last` (the trail's last digest) to `key`, if any.
    pub(crate) fn of(last: &DigestRecord, key: Option<&[u8]>) -> Option<Self> {
        match (last.keyed, key) {
            (false, Some(_)) => Some(Self::Added),
            (true, None) => Some(Self::Removed),
            (true, Some(key)) if !same(&sign_digest(last, Some(key)), &last.signature) => {
                Some(Self::Changed)
            }
            _ => None,
        }
    }

    /// The alarm raised for it: a key added is a warning, a key changed or removed an error.
    pub(crate) fn alarm_kind(self) -> super::AlarmKind {
        match self {
            Self::Added => super::AlarmKind::SigningKeyAdded,
            Self::Changed | Self::Removed => super::AlarmKind::SigningKeyChanged,
        }
    }

    /// What happened and what to do, for the trail named `trail` whose last digest is `last`.
    pub(crate) fn message(self, trail: &str, last: &DigestRecord) -> String {
        let (seq, at) = (last.seq, &last.timestamp);
        match self {
            Self::Added => format!(
                "audit trail {trail}: [audit] signing_key is set, but the trail was sealed without a key up to seq {seq} ({at}). It is sealed now with a keyed digest (reason \"key\"), and every digest from there on is keyed; `qiflow audit verify` with the key reports seq ..={seq} as sealed without a key: a change made to those records before now cannot be detected. For a trail keyed from its first record, move this one (and its witness) aside before starting with the key"
            ),
            Self::Changed => format!(
                "audit trail {trail}: its last digest (seq {seq}, {at}) is not signed with the configured [audit] signing_key: the key was changed (or the trail was rewritten). New digests are signed with the new key, so `qiflow audit verify` fails on this trail with either key alone. To change the key, start a new trail: move this one (and its witness) aside, and keep the old key to verify it"
            ),
            Self::Removed => format!(
                "audit trail {trail}: its digests are keyed (the last at seq {seq}, {at}), but no [audit] signing_key is set now: new digests are not keyed, and `qiflow audit verify` with the key fails at the first of them. Set the key again, or start a new trail (move this one and its witness aside)"
            ),
        }
    }
}

/// The first 12 characters of a hash, for messages.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Compares two hashes or signatures in constant time (their length is not secret).
fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The writer's side of the chain: where the trail stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    /// The seq of the next line.
    pub(crate) next_seq: u64,
    /// The hash of the last line.
    pub(crate) last_hash: String,
    /// The last digest's signature.
    pub(crate) last_signature: String,
    /// The first seq after the last digest.
    pub(crate) unsealed_from: u64,
    /// Records since the last digest.
    pub(crate) unsealed_records: u64,
    /// The first seq kept after retention.
    pub(crate) retained_from: u64,
    /// Records sealed by all digests so far.
    pub(crate) sealed_records: u64,
    /// The last digest, as published.
    pub(crate) last_seal: Option<Seal>,
    /// The instance stamped on each new record (`None`: no `instance` field).
    pub(crate) instance: Option<String>,
}

impl Default for ChainState {
    fn default() -> Self {
        Self {
            next_seq: 0,
            last_hash: GENESIS.to_owned(),
            last_signature: String::new(),
            unsealed_from: 0,
            unsealed_records: 0,
            retained_from: 0,
            sealed_records: 0,
            last_seal: None,
            instance: None,
        }
    }
}

impl ChainState {
    /// Advances over an existing line (when resuming a trail).
    pub(crate) fn absorb(&mut self, line: &Line) {
        self.next_seq = line.seq() + 1;
        self.last_hash = line.hash().to_owned();
        match line {
            Line::Digest(d) => {
                self.last_signature = d.signature.clone();
                self.unsealed_from = d.seq + 1;
                self.unsealed_records = 0;
                self.retained_from = self.retained_from.max(d.retained_from);
                self.sealed_records = d.sealed.unwrap_or(self.sealed_records + d.records);
                self.last_seal = Some(Seal::of(d, self.sealed_records));
            }
            _ => self.unsealed_records += 1,
        }
    }

    /// Continues after `seal` (a witness ahead of the trail): the next line gets the seq after
    /// it and chains onto its hash and signature, so the lost lines' seqs are never reused and
    /// the trail verifies whole again if they are restored.
    pub(crate) fn continue_after(&mut self, seal: &Seal) {
        self.next_seq = seal.seq + 1;
        self.last_hash = seal.hash.clone();
        self.last_signature = seal.signature.clone();
        self.unsealed_from = seal.seq + 1;
        self.unsealed_records = 0;
        self.sealed_records = seal.sealed_records;
        self.last_seal = Some(seal.clone());
    }

    /// The seq of the last line, if any.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// The next record line for `event`, as stored; advances the state.
    pub(crate) fn record(
        &mut self,
        event: &AuditEvent,
        keyring: Option<&crate::secret::Keyring>,
    ) -> Result<(Line, Vec<u8>), String> {
        let mut record = record_of(event, self.next_seq, &self.last_hash);
        record.instance.clone_from(&self.instance);
        let line = match keyring {
            None => Line::Record(record),
            Some(keyring) => {
                let sealed = Sealed {
                    id: record.id,
                    timestamp: record.timestamp,
                    actor: record.actor,
                    action: record.action,
                    resource: record.resource,
                    outcome: record.outcome,
                    request_id: record.request_id,
                    trace_id: record.trace_id,
                    instance: record.instance,
                    metadata: record.metadata,
                };
                let plain = String::from_utf8(to_json(&sealed)).unwrap_or_default();
                let enc = keyring
                    .encrypt(ENC_PATH, &plain)
                    .map_err(|e| format!("cannot encrypt an audit record: {e}"))?;
                Line::Encrypted(EncryptedRecord {
                    seq: record.seq,
                    enc,
                    prev_hash: record.prev_hash,
                    hash: String::new(),
                })
            }
        };
        let (line, json) = line.seal();
        self.absorb(&line);
        Ok((line, json))
    }

    /// The next digest line, sealing everything since the last one; advances the state.
    pub(crate) fn digest(
        &mut self,
        reason: &str,
        at: OffsetDateTime,
        key: Option<&[u8]>,
    ) -> (Line, Vec<u8>) {
        let mut digest = DigestRecord {
            seq: self.next_seq,
            timestamp: format_timestamp(at),
            reason: reason.to_owned(),
            first_seq: self.unsealed_from,
            records: self.unsealed_records,
            sealed: Some(self.sealed_records + self.unsealed_records),
            retained_from: self.retained_from,
            keyed: key.is_some(),
            prev_signature: self.last_signature.clone(),
            prev_hash: self.last_hash.clone(),
            signature: String::new(),
            hash: String::new(),
        };
        digest.signature = sign_digest(&digest, key);
        let (line, json) = Line::Digest(digest).seal();
        self.absorb(&line);
        (line, json)
    }
}

/// The unencrypted record for `event` at `seq`.
pub(crate) fn record_of(event: &AuditEvent, seq: u64, prev_hash: &str) -> AuditRecord {
    AuditRecord {
        seq,
        id: event.id.to_string(),
        timestamp: format_timestamp(event.timestamp),
        actor: event.actor.clone(),
        action: event.action.clone(),
        resource: event.resource.clone(),
        outcome: event.outcome,
        request_id: event.request_id.clone(),
        trace_id: event.trace_id.map(|id| id.to_string()),
        instance: None,
        metadata: event.metadata.clone(),
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    }
}

/// Decrypts an encrypted record into the plain one.
pub(crate) fn decrypt(
    r: &EncryptedRecord,
    keyring: &crate::secret::Keyring,
) -> Result<AuditRecord, String> {
    let plain = keyring
        .decrypt(ENC_PATH, &r.enc)
        .map_err(|e| format!("cannot decrypt record seq {}: {e}", r.seq))?;
    let s: Sealed = serde_json::from_str(plain.expose())
        .map_err(|e| format!("record seq {} decrypts to invalid JSON: {e}", r.seq))?;
    Ok(AuditRecord {
        seq: r.seq,
        id: s.id,
        timestamp: s.timestamp,
        actor: s.actor,
        action: s.action,
        resource: s.resource,
        outcome: s.outcome,
        request_id: s.request_id,
        trace_id: s.trace_id,
        instance: s.instance,
        metadata: canonical_map(s.metadata),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    })
}

/// Where a line is: a file and line number, or a database row.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Location {
    /// The segment file (or table) name.
    pub source: String,
    /// The 1-based line number in it (0 for database rows).
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.source)
        } else {
            write!(f, "{}:{}", self.source, self.line)
        }
    }
}

/// The first problem found in a trail: which line, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{location}: record seq {seq}: {reason}")]
pub struct Broken {
    /// The seq of the broken line (as expected there when the line cannot be read).
    pub seq: u64,
    /// Where it is.
    pub location: Location,
    /// What is wrong and what it means.
    pub reason: String,
}

/// Checks lines one by one; see [`Verifier::push`] and [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    key: Option<Vec<u8>>,
    state: Option<ChainState>,
    first_seq: Option<u64>,
    records: u64,
    digests: u64,
    unchecked_signatures: u64,
    last_location: Option<Location>,
    last_digest: Option<DigestRecord>,
    /// Records sealed in all, when known (from seq 0, or from a digest that says).
    sealed_records: Option<u64>,
    witness: Option<Seal>,
    witness_seen: bool,
    /// The first and the last digest without a key (seq, where), while a key was given.
    unkeyed: Option<(u64, Location, u64)>,
    /// The last unkeyed digest's seq.
    unkeyed_until: Option<u64>,
    /// The first keyed digest (seq, timestamp).
    first_keyed: Option<(u64, String)>,
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Records checked (digests not counted).
    pub records: u64,
    /// Digests checked.
    pub digests: u64,
    /// The first seq of the trail (non-zero after retention).
    pub first_seq: u64,
    /// The seq of the last line.
    pub last_seq: Option<u64>,
    /// Records after the last digest (an open tail: a live trail, a crash, or a cut).
    pub unsealed: u64,
    /// Digests whose keyed signature could not be checked because no signing key was given.
    pub unchecked_signatures: u64,
    /// The last digest (seq, signature): compare it with a copy kept elsewhere to detect a trail
    /// cut back to an earlier digest.
    pub last_digest: Option<(u64, String)>,
    /// The last line was cut mid-write (a crash); it was ignored. Part of an open tail.
    pub torn_tail: bool,
    /// The last digest as a [`Seal`] (what the witness should hold), with the records sealed in
    /// all when the digests say.
    pub last_seal: Option<Seal>,
    /// The witness the trail was checked against (see [`Verifier::expect_witness`]); `None`
    /// when none was given.
    pub witness: Option<Seal>,
    /// The seq of the last digest written without a signing key, when the trail has such
    /// digests: the lines up to it were sealed without a key (the trail was started before
    /// `[audit] signing_key` was set). With a key given, verification accepts them only when a
    /// keyed digest follows ([`Verified::first_keyed`]), which covers them from then on.
    pub unkeyed_until: Option<u64>,
    /// The first digest signed with a key (seq, timestamp), when there is one.
    pub first_keyed: Option<(u64, String)>,
}

impl Verified {
    /// Whether the trail ends with records no digest seals yet (or a torn line).
    pub fn open_tail(&self) -> bool {
        self.unsealed > 0 || self.torn_tail
    }
}

impl Verifier {
    /// A verifier; `key` is the signing key (`None`: keyed signatures cannot be checked).
    pub fn new(key: Option<&[u8]>) -> Self {
        Self {
            key: key.map(<[u8]>::to_vec),
            state: None,
            first_seq: None,
            records: 0,
            digests: 0,
            unchecked_signatures: 0,
            last_location: None,
            last_digest: None,
            sealed_records: None,
            witness: None,
            witness_seen: false,
            unkeyed: None,
            unkeyed_until: None,
            first_keyed: None,
        }
    }

    /// Checks the trail against its witness too: the line at the witness's seq must be the
    /// digest it sealed, and the trail must not end before it (a cut tail: the newest segment
    /// deleted, or the trail truncated right after an earlier digest).
    pub fn expect_witness(&mut self, witness: Seal) {
        self.witness = Some(witness);
    }

    fn broken(&self, seq: u64, location: &Location, reason: String) -> Broken {
        Broken {
            seq,
            location: location.clone(),
            reason,
        }
    }

    /// The seq expected next.
    pub fn expected_seq(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.next_seq)
    }

    /// Checks one stored line.
    pub fn push(&mut self, text: &[u8], location: Location) -> Result<(), Broken> {
        let expected = self.expected_seq();
        let line = Line::parse(text).map_err(|e| {
            self.broken(
                expected,
                &location,
                format!("not a valid audit line ({e}): the line was edited or corrupted"),
            )
        })?;
        let seq = line.seq();
        let prev_where = self
            .last_location
            .as_ref()
            .map_or_else(String::new, |l| format!(" ({l})"));
        match &self.state {
            None => {
                // The first line kept: the anchor (after retention it need not be seq 0).
                if seq == 0 && line.prev_hash() != GENESIS {
                    return Err(self.broken(
                        seq,
                        &location,
                        "the first record's prev_hash is not the genesis value: the record was edited"
                            .into(),
                    ));
                }
                let mut state = ChainState {
                    next_seq: seq,
                    last_hash: line.prev_hash().to_owned(),
                    unsealed_from: seq,
                    retained_from: seq,
                    ..ChainState::default()
                };
                state.next_seq = seq;
                self.state = Some(state);
                self.first_seq = Some(seq);
                // From seq 0 the count is known; after retention, from the first digest on.
                self.sealed_records = (seq == 0).then_some(0);
            }
            Some(state) => {
                if seq > state.next_seq {
                    let missing = if seq - state.next_seq == 1 {
                        format!("record seq {} is missing", state.next_seq)
                    } else {
                        format!("records seq {}..={} are missing", state.next_seq, seq - 1)
                    };
                    return Err(self.broken(
                        seq,
                        &location,
                        format!(
                            "expected seq {}, found {seq}: {missing} after the previous line{prev_where} (deleted records or a deleted segment)",
                            state.next_seq
                        ),
                    ));
                }
                if seq < state.next_seq {
                    return Err(self.broken(
                        seq,
                        &location,
                        format!(
                            "expected seq {}, found {seq}: a record inserted, duplicated or out of order after the previous line{prev_where}",
                            state.next_seq
                        ),
                    ));
                }
                if !same(line.prev_hash(), &state.last_hash) {
                    return Err(self.broken(
                        seq,
                        &location,
                        format!(
                            "prev_hash does not match the previous line's hash{prev_where}: the previous line was inserted or changed"
                        ),
                    ));
                }
            }
        }
        let computed = line.compute_hash();
        if !same(&computed, line.hash()) {
            return Err(self.broken(
                seq,
                &location,
                "hash does not match the record's content: the record was changed".into(),
            ));
        }
        let state = self.state.as_mut().unwrap_or_else(|| unreachable!());
        if let Line::Digest(d) = &line {
            let why = |reason: String| Broken {
                seq,
                location: location.clone(),
                reason,
            };
            if d.first_seq != state.unsealed_from && self.digests > 0 {
                return Err(why(format!(
                    "digest seals seq {}.. but the previous digest ended before seq {}",
                    d.first_seq, state.unsealed_from
                )));
            }
            if d.records != state.unsealed_records
                && (self.digests > 0 || d.first_seq == state.unsealed_from)
            {
                return Err(why(format!(
                    "digest seals {} records but {} were found since the previous digest: records were deleted or inserted",
                    d.records, state.unsealed_records
                )));
            }
            if self.digests > 0 && !same(&d.prev_signature, &state.last_signature) {
                return Err(why(
                    "digest does not name the previous digest's signature: a digest was changed or removed".into(),
                ));
            }
            match (&self.key, d.keyed) {
                (Some(key), true) => {
                    if !same(&sign_digest(d, Some(key)), &d.signature) {
                        let hint = match self.unkeyed_until {
                            Some(until) if self.first_keyed.is_none() => format!(
                                " (digests up to seq {until} are not keyed: if the key was set then, it is the key this digest needs)"
                            ),
                            _ => String::new(),
                        };
                        return Err(why(format!(
                            "digest signature does not match the signing key: the records it seals were rewritten without the key (or the key is wrong, or was changed on this trail){hint}"
                        )));
                    }
                }
                (Some(_), false) => {
                    if let Some((keyed, at)) = &self.first_keyed {
                        return Err(why(format!(
                            "digest is not keyed, but the digests before it are (from seq {keyed}, {at}): the signing key was removed from the configuration, or the trail was rewritten from here by someone without the key"
                        )));
                    }
                    if !same(&sign_digest(d, None), &d.signature) {
                        return Err(why("digest checksum does not match its content".into()));
                    }
                    // Written before the key was set: accepted only if a keyed digest follows
                    // (it covers everything before it); see `finish`.
                    match &mut self.unkeyed {
                        Some((_, _, last)) => *last = seq,
                        None => self.unkeyed = Some((seq, location.clone(), seq)),
                    }
                }
                (None, true) => self.unchecked_signatures += 1,
                (None, false) => {
                    if !same(&sign_digest(d, None), &d.signature) {
                        return Err(why("digest checksum does not match its content".into()));
                    }
                }
            }
            if d.keyed {
                if self.first_keyed.is_none() {
                    self.first_keyed = Some((seq, d.timestamp.clone()));
                }
            } else {
                self.unkeyed_until = Some(seq);
            }
            match (d.sealed, self.sealed_records) {
                (Some(claimed), Some(before)) if claimed != before + d.records => {
                    return Err(why(format!(
                        "digest says {claimed} records were sealed in all, but the digests before it sealed {before} and it seals {}: records were deleted or inserted before it",
                        d.records
                    )));
                }
                (Some(claimed), _) => self.sealed_records = Some(claimed),
                (None, known) => self.sealed_records = known.map(|n| n + d.records),
            }
            self.digests += 1;
            self.last_digest = Some(d.clone());
        } else {
            self.records += 1;
        }
        if let Some(w) = &self.witness
            && w.seq == seq
        {
            if !matches!(line, Line::Digest(_)) || !same(&w.hash, line.hash()) {
                return Err(Broken {
                    seq,
                    location,
                    reason: format!(
                        "the witness sealed seq {seq} at {} with hash {}, but the trail's line there is another one (hash {}): the trail was rewritten from here, or the witness belongs to another trail",
                        w.timestamp,
                        short(&w.hash),
                        short(line.hash())
                    ),
                });
            }
            self.witness_seen = true;
        }
        state.absorb(&line);
        self.last_location = Some(location);
        Ok(())
    }

    /// Ends the verification: checks that the first line kept is where retention says the
    /// trail starts and, with a witness, that the trail does not end before the seq it sealed;
    /// then reports what was found. An open tail is not an error here; see
    /// [`Verified::unsealed`].
    pub fn finish(self) -> Result<Verified, Broken> {
        if let Some((first, location, last)) = &self.unkeyed
            && self.first_keyed.is_none()
        {
            let range = if first == last {
                format!("the digest at seq {first} is")
            } else {
                format!("the digests from seq {first} to {last} are")
            };
            return Err(Broken {
                seq: *first,
                location: location.clone(),
                reason: format!(
                    "digest is not keyed, but a signing key was given, and no keyed digest follows: {range} unkeyed. Either the trail was written before [audit] signing_key was set (start the service once with the key: it seals the trail with a keyed digest at start), or it was rewritten by someone without the key"
                ),
            });
        }
        let first_seq = self.first_seq.unwrap_or(0);
        if let Some(d) = &self.last_digest
            && first_seq > d.retained_from
        {
            return Err(Broken {
                seq: first_seq,
                location: self.last_location.clone().unwrap_or(Location {
                    source: String::new(),
                    line: 0,
                }),
                reason: format!(
                    "the trail starts at seq {first_seq}, but the last digest (seq {}) says retention kept everything from seq {}: older segments were deleted",
                    d.seq, d.retained_from
                ),
            });
        }
        let state = self.state.unwrap_or_default();
        let last_seq = state
            .next_seq
            .checked_sub(1)
            .filter(|_| self.first_seq.is_some());
        if let Some(w) = &self.witness
            && !self.witness_seen
            && (self.first_seq.is_none() || first_seq <= w.seq)
        {
            let (ends, from) = match last_seq {
                Some(last) => (format!("ends at seq {last}"), last + 1),
                None => ("is empty".to_owned(), 0),
            };
            let missing = if from == w.seq {
                format!("record seq {from} is missing")
            } else {
                format!("records seq {from}..={} are missing", w.seq)
            };
            return Err(Broken {
                seq: from,
                location: self.last_location.clone().unwrap_or(Location {
                    source: String::new(),
                    line: 0,
                }),
                reason: format!(
                    "the trail {ends} but the witness sealed seq {} at {}: {missing} (the newest segment was deleted, or the trail was cut back to an earlier digest)",
                    w.seq, w.timestamp
                ),
            });
        }
        let last_seal = self
            .last_digest
            .as_ref()
            .map(|d| Seal::of(d, self.sealed_records.unwrap_or(0)));
        Ok(Verified {
            records: self.records,
            digests: self.digests,
            first_seq,
            last_seq,
            unsealed: state.unsealed_records,
            unchecked_signatures: self.unchecked_signatures,
            last_digest: self.last_digest.map(|d| (d.seq, d.signature)),
            torn_tail: false,
            last_seal,
            witness: self.witness,
            unkeyed_until: self.unkeyed_until,
            first_keyed: self.first_keyed,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_compare_equal_only_when_identical() {
        let hash = hex::encode(Sha256::digest(b"x"));
        assert!(same(&hash, &hash.clone()));
        assert!(same("", ""));
        let mut other = hash.clone().into_bytes();
        other[63] = if other[63] == b'0' { b'1' } else { b'0' };
        assert!(!same(&hash, std::str::from_utf8(&other).unwrap()));
        assert!(!same(&hash, &hash[..63]), "a prefix is not the hash");
        assert!(!same(&hash[..63], &hash));
        assert!(!same(&hash, ""));
    }

    #[test]
    fn a_sealed_line_is_its_own_serialization_and_verifies() {
        let mut state = ChainState::default();
        let event = AuditEvent::builder("a\"b\n", "x")
            .metadata("z", 1.5)
            .metadata("a", serde_json::json!({"k": [1, null]}))
            .build();
        for _ in 0..3 {
            let (line, json) = state.record(&event, None).unwrap();
            assert_eq!(json, to_json(&line));
            assert_eq!(Line::parse(&json).unwrap(), line);
            assert_eq!(line.compute_hash(), line.hash());
        }
        let (line, json) = state.digest("flush", OffsetDateTime::now_utc(), Some(b"k"));
        assert_eq!(json, to_json(&line));
        assert_eq!(line.compute_hash(), line.hash());
    }
}
