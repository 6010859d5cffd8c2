//! `qiflow`: keys, encrypted configuration values, and configuration checks.
//!
//! ```text
//! qiflow keygen                               print a new base64 256-bit key
//! qiflow encrypt --name database.password     plaintext on stdin  -> ENC:v1:… on stdout
//! qiflow decrypt --name database.password     ENC:v1:… on stdin   -> plaintext on stdout
//! qiflow check qiflow.toml                    load, decrypt and validate; one line per problem
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
    /// Exits 0 when the file is valid (warnings are printed but do not fail unless --strict),
    /// 1 when it has problems. Secrets are never printed.
    Check {
        /// The configuration file, e.g. qiflow.toml.
        file: PathBuf,
        /// Fail on warnings too (plain values in secret keys, …).
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { id } => keygen(id.as_deref()),
        Command::Encrypt { name } => encrypt(&name),
        Command::Decrypt { name } => decrypt(&name),
        Command::Check { file, strict } => return check(file, strict),
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
    match Loader::new().file(file).load() {
        Ok(config) => {
            let warnings = config.warnings();
            for w in warnings {
                println!("warning: {shown}: {w}");
            }
            if strict && !warnings.is_empty() {
                println!(
                    "{shown}: {} warning(s), failing because of --strict",
                    warnings.len()
                );
                return ExitCode::FAILURE;
            }
            println!("ok: {shown} is valid ({} warning(s))", warnings.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in e.problems() {
                let level = if p.kind().is_warning() {
                    "warning"
                } else {
                    "error"
                };
                println!("{level}: {shown}: {p}");
            }
            ExitCode::FAILURE
        }
    }
}
