//! `qiflow`: keys, encrypted configuration values, and configuration checks.
//!
//! ```text
//! qiflow keygen                               print a new base64 256-bit key
//! qiflow encrypt --name database.password     plaintext on stdin  -> ENC:v1:… on stdout
//! qiflow decrypt --name database.password     ENC:v1:… on stdin   -> plaintext on stdout
//! qiflow check qiflow.toml                    load, decrypt and validate; one line per problem
//! qiflow check --strict qiflow.toml           also file modes; fails on what is unsafe
//! qiflow audit verify data/audit --config qiflow.toml [--witness FILE] [--allow-open-tail]
//! qiflow audit verify --postgres --config qiflow.toml   URL from [audit] postgres_url
//! QIFLOW__AUDIT__POSTGRES_URL=… qiflow audit verify --postgres
//! ```
//!
//! The key comes from `QIFLOW_MASTER_KEY` (base64) or `QIFLOW_MASTER_KEY_FILE`, read from the
//! environment or a `.env` file in the working directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qiflow_core::config::Loader;
use qiflow_core::secret::{KeyId, Keyring};
use zeroize::Zeroizing;

/// qiflow: keys, encrypted configuration values, and configuration checks.
#[derive(Debug, Parser)]
#[command(name = "qiflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random 256-bit key, base64-encoded, for QIFLOW_MASTER_KEY.
    Keygen {
        /// Prefix the key with an explicit key id (`id:base64`), e.g. a date, for rotation.
        #[arg(long)]
        id: Option<String>,
    },
    /// Encrypt the plaintext read from stdin for one configuration key; print the ENC: value.
    Encrypt {
        /// The configuration key path the value is for, e.g. `audit.postgres_url`
        /// (channel secrets: `alerts.channels.<name>.<key>`). The value only decrypts there.
        #[arg(long)]
        name: String,
    },
    /// Decrypt the ENC: value read from stdin for one configuration key; print the plaintext.
    Decrypt {
        /// The configuration key path the value was encrypted for.
        #[arg(long)]
        name: String,
    },
    /// Load, decrypt and validate a configuration file; print one line per problem.
    ///
    /// Lines start with `error:` (the file cannot be used), `warning:` (unsafe for this
    /// configuration: fails --strict) or `advice:` (never fails). Exits 0 when the file is
    /// valid, 1 when it has errors (or, with --strict, warnings). Secrets are never printed.
    Check {
        /// The configuration file, e.g. qiflow.toml.
        file: PathBuf,
        /// Also check that existing log files, state files, audit segments and the token file
        /// are no wider than their mode (run it in the service's working directory), and fail
        /// on every warning: what is unsafe for this configuration (plain values in secret
        /// keys, plain credential-like headers, wide files, mail in plain text to a remote
        /// relay, no audit signing key in production, …). Advice never fails.
        #[arg(long)]
        strict: bool,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an audit trail: every hash, the chain, the digests and their signatures, and
    /// the witness (where the trail was last sealed, kept outside it).
    ///
    /// Exits 0 and prints the record count when the trail is intact; exits 1 naming the first
    /// broken record (file:line, seq) and why. A trail that ends before its witness (cut back
    /// to an earlier digest) exits 1 naming the missing records. A trail whose last line is not
    /// a digest (an open tail: a live trail, a crash, or a cut) exits 1 unless
    /// --allow-open-tail. Exits 2 on a usage error.
    Verify {
        /// The trail directory (`[audit] dir`). Defaults to the one in --config.
        dir: Option<PathBuf>,
        /// The configuration whose `[audit] signing_key` (ENC: allowed) checks the digests; its
        /// `[audit] witness` (or `<dir>.witness.json`) must be there when the trail is sealed,
        /// and its `[audit] postgres_url` is the database of --postgres.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The witness file to check the trail against. Defaults to the one of --config, else
        /// to `<dir>.witness.json` when it exists.
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
        /// Verify the `qiflow_audit` table (and its witness row) instead of a directory. The
        /// URL comes from `[audit] postgres_url` of --config, else from the environment
        /// (`QIFLOW__AUDIT__POSTGRES_URL`), never from the command line, where `ps` shows it.
        #[arg(long)]
        postgres: bool,
        /// Accept records after the last digest (a live trail, or one cut by a crash).
        #[arg(long)]
        allow_open_tail: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { id } => keygen(id.as_deref()),
        Command::Encrypt { name } => encrypt(&name),
        Command::Decrypt { name } => decrypt(&name),
        Command::Check { file, strict } => return check(file, strict),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    dir,
                    config,
                    witness,
                    postgres,
                    allow_open_tail,
                },
        } => {
            return audit_verify(Verify {
                dir,
                config,
                witness,
                postgres,
                allow_open_tail,
            });
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qiflow: {message}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(id: Option<&str>) -> Result<(), String> {
    let key = Zeroizing::new(Keyring::generate_key());
    match id {
        Some(id) => {
            let id = KeyId::new(id).map_err(|e| e.to_string())?;
            println!("{id}:{}", key.as_str());
        }
        None => println!("{}", key.as_str()),
    }
    Ok(())
}

/// Variables from `./.env`, beneath the process environment (never modifying it).
fn lookup_env() -> impl Fn(&str) -> Option<String> {
    let mut dotenv = BTreeMap::new();
    if let Ok(iter) = dotenvy::from_path_iter(".env") {
        dotenv.extend(iter.flatten());
    }
    move |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| dotenv.get(name).cloned())
    }
}

fn keyring() -> Result<Keyring, String> {
    Keyring::from_lookup(lookup_env()).map_err(|e| e.to_string())
}

fn read_stdin(what: &str) -> Result<Zeroizing<String>, String> {
    let mut input = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read {what} from stdin: {e}"))?;
    // Drop one trailing line break (from `echo` or a terminal), nothing else.
    if input.ends_with('\n') {
        input.pop();
        if input.ends_with('\r') {
            input.pop();
        }
    }
    Ok(input)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name {name:?} is not a key path; write it like `audit.postgres_url` or `alerts.channels.ops.password`"
        ))
    }
}

fn encrypt(name: &str) -> Result<(), String> {
    check_name(name)?;
    let keyring = keyring()?;
    let plaintext = read_stdin("the plaintext")?;
    if plaintext.is_empty() {
        return Err("stdin is empty: pipe the plaintext in, e.g. `printf %s \"$PASSWORD\" | qiflow encrypt --name …`".into());
    }
    let value = keyring
        .encrypt(name, &plaintext)
        .map_err(|e| e.to_string())?;
    println!("{value}");
    Ok(())
}

fn decrypt(name: &str) -> Result<(), String> {
    check_name(name)?;
    let keyring = keyring()?;
    let value = read_stdin("the ENC: value")?;
    let plain = keyring
        .decrypt(name, value.trim())
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", plain.expose()).map_err(|e| format!("cannot write to stdout: {e}"))?;
    Ok(())
}

fn check(file: PathBuf, strict: bool) -> ExitCode {
    let shown = file.display().to_string();
    let report = qiflow_core::check::run(Loader::new().file(file), &shown, strict);
    for line in &report.lines {
        println!("{line}");
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The arguments of `qiflow audit verify`.
struct Verify {
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    witness: Option<PathBuf>,
    postgres: bool,
    allow_open_tail: bool,
}

/// A usage error of `qiflow audit verify`: printed, exit 2.
fn usage(message: &str) -> ExitCode {
    eprintln!("qiflow: {message}");
    ExitCode::from(2)
}

fn load_config(loader: Loader, shown: &str) -> Result<qiflow_core::config::Config, ExitCode> {
    loader.load().map_err(|e| {
        for p in e.problems() {
            eprintln!("qiflow: {shown}: {p}");
        }
        ExitCode::from(2)
    })
}

fn audit_verify(args: Verify) -> ExitCode {
    let config = match &args.config {
        Some(file) => match load_config(
            Loader::new().file(file.clone()),
            &file.display().to_string(),
        ) {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
        // --postgres without a file: the URL (and key) from the environment alone.
        None if args.postgres => match load_config(Loader::new().toml_str(""), "the environment") {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
        None => None,
    };
    let key = config
        .as_ref()
        .and_then(|c| c.audit.signing_key.as_ref())
        .map(|k| k.expose().as_bytes().to_vec());
    let mut notes = Vec::new();
    let (what, result) = if args.postgres {
        if let Some(dir) = &args.dir {
            let text = dir.display().to_string();
            return usage(
                &if text.contains("://") || text.contains('@') || text.contains('=') {
                    "--postgres takes no URL on the command line (`ps` would show its password): set [audit] postgres_url in --config FILE, or QIFLOW__AUDIT__POSTGRES_URL".to_owned()
                } else {
                    format!(
                        "--postgres verifies the qiflow_audit table, not a directory: drop {text:?}"
                    )
                },
            );
        }
        if args.witness.is_some() {
            return usage(
                "--witness is for a trail directory; the PostgreSQL witness is the qiflow_audit_witness table, checked with the trail",
            );
        }
        let Some(url) = config.as_ref().and_then(|c| c.audit.postgres_url.as_ref()) else {
            return usage(
                "--postgres needs the database URL: set [audit] postgres_url in --config FILE (ENC: allowed), or QIFLOW__AUDIT__POSTGRES_URL in the environment; it is never taken from the command line",
            );
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("qiflow: cannot start a runtime: {e}");
                return ExitCode::from(2);
            }
        };
        // Without the password, and without the query (it may hold `password=`).
        let shown = url::Url::parse(url.expose())
            .map(|mut u| {
                let _ = u.set_password(None);
                u.set_query(None);
                u.to_string()
            })
            .unwrap_or_else(|_| "the database".into());
        (
            shown,
            runtime
                .block_on(qiflow_core::audit::verify_postgres(
                    url.expose(),
                    key.as_deref(),
                ))
                .map(|chains| {
                    chains
                        .into_iter()
                        .map(|c| {
                            let name = if c.instance.is_empty() {
                                "the chain written before instance ids".to_owned()
                            } else {
                                format!("instance {}", c.instance)
                            };
                            (Some(name), c.verified)
                        })
                        .collect::<Vec<_>>()
                }),
        )
    } else {
        let Some(dir) = args
            .dir
            .clone()
            .or_else(|| config.as_ref().map(|c| c.audit.dir.clone()))
        else {
            return usage(
                "name the trail directory, or pass --config (its [audit] dir), or --postgres with --config",
            );
        };
        // The witness: named, or the config's (expected there), or the default beside the
        // directory when it exists.
        let witness = match (&args.witness, &config) {
            (Some(w), _) => Some(w.clone()),
            (None, Some(c)) => Some(
                c.audit
                    .witness
                    .clone()
                    .unwrap_or_else(|| qiflow_core::audit::default_witness_path(&dir)),
            ),
            (None, None) => {
                Some(qiflow_core::audit::default_witness_path(&dir)).filter(|w| w.exists())
            }
        };
        let result = match &witness {
            Some(w) => qiflow_core::audit::verify_dir_with_witness(&dir, key.as_deref(), w),
            None => {
                notes.push(format!(
                    "note: no witness checked (none given, none at {}): a trail cut back to an earlier digest cannot be detected; pass --witness FILE or --config FILE",
                    qiflow_core::audit::default_witness_path(&dir).display()
                ));
                qiflow_core::audit::verify_dir(&dir, key.as_deref())
            }
        };
        (dir.display().to_string(), result.map(|v| vec![(None, v)]))
    };
    match result {
        Err(broken) => {
            println!("broken: {broken}");
            ExitCode::FAILURE
        }
        Ok(chains) => {
            let mut failed = false;
            let (mut records, mut digests) = (0, 0);
            for (chain, v) in &chains {
                // Each line of a chain's report names it, when the trail holds several.
                let at = chain.as_ref().map(|c| format!("{c}: ")).unwrap_or_default();
                records += v.records;
                digests += v.digests;
                if !report_chain(&at, &what, v, key.is_some(), &notes, args.allow_open_tail) {
                    failed = true;
                }
            }
            if failed {
                return ExitCode::FAILURE;
            }
            if chains.len() > 1 {
                println!(
                    "ok: {what}: {} chains, {records} records, {digests} digests",
                    chains.len()
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// Prints what the verification of one chain found (`prefix` starts each of its lines); false
/// when its open tail fails the check.
fn report_chain(
    prefix: &str,
    what: &str,
    v: &qiflow_core::audit::Verified,
    keyed: bool,
    notes: &[String],
    allow_open_tail: bool,
) -> bool {
    if !keyed && v.unchecked_signatures > 0 {
        println!(
            "{prefix}warning: {} digest signature(s) not checked: no signing key (pass --config with [audit] signing_key)",
            v.unchecked_signatures
        );
    }
    match (v.unkeyed_until, &v.first_keyed) {
        (Some(until), Some((first, since))) => println!(
            "{prefix}keyed: digests from seq {first} ({since}) on are signed with the signing key; seq {}..={until} were sealed without a key (written before it was set): the keyed digest covers them from {since} on, but a change made to them before then cannot be detected",
            v.first_seq
        ),
        (Some(until), None) => println!(
            "{prefix}unkeyed: no digest is keyed (seq {}..={until}): a trail rewritten with a recomputed chain cannot be told from the original; set [audit] signing_key",
            v.first_seq
        ),
        _ => {}
    }
    if let Some((seq, signature)) = &v.last_digest {
        println!("{prefix}last digest: seq {seq}, signature {signature}");
    }
    if let Some(seal) = &v.last_seal {
        println!(
            "{prefix}sealed: {} records up to seq {} at {}",
            seal.sealed_records, seal.seq, seal.timestamp
        );
    }
    match &v.witness {
        Some(w) => println!(
            "{prefix}witness: sealed seq {} at {}: the trail holds it",
            w.seq, w.timestamp
        ),
        None => notes.iter().for_each(|n| println!("{prefix}{n}")),
    }
    let range = match v.last_seq {
        Some(last) => format!("seq {}..={last}", v.first_seq),
        None => "empty".into(),
    };
    if v.open_tail() {
        let torn = if v.torn_tail {
            " and a torn last line (cut mid-write)"
        } else {
            ""
        };
        let msg = format!(
            "open tail: {} record(s) after the last digest{torn} are not sealed (a live trail, a crash, or a cut tail)",
            v.unsealed
        );
        if !allow_open_tail {
            println!("broken: {what}: {prefix}{msg}; pass --allow-open-tail for a live trail");
            return false;
        }
        println!("{prefix}warning: {msg}");
    }
    println!(
        "ok: {what}: {prefix}{} records, {} digests ({range})",
        v.records, v.digests
    );
    true
}
