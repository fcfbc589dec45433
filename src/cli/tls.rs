//! `--tls-cert/--tls-key/--tls-ca` (on every command) and `oxray tls gen`.
//!
//! The flags only set `OXRAY_USE_TLS` and `OXRAY_TLS_*` (Ray's `RAY_USE_TLS`
//! and `RAY_TLS_*` under oxray's prefix) before anything starts, so the
//! processes a command starts (daemons, workers, drivers) inherit mutual TLS
//! without any message carrying key material; `oxray-core`'s `tls` module
//! reads them. `oxray tls gen` makes a CA and node certificates for a quick
//! start; an operator with a PKI of their own signs certificates that name
//! the DNS name `oxray` instead.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oxray_core::daemon;
use oxray_core::tls::{TlsFiles, SERVER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Mutual TLS for every connection this command and the processes it starts
/// make or accept (all three together, or none).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// This node's certificate (PEM), signed by the cluster CA; with
    /// --tls-key and --tls-ca turns on mutual TLS (as OXRAY_USE_TLS=1 and
    /// OXRAY_TLS_SERVER_CERT do).
    #[arg(long, global = true, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, mode 0600) [OXRAY_TLS_SERVER_KEY].
    #[arg(long, global = true, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers are trusted only if it
    /// signed theirs [OXRAY_TLS_CA_CERT].
    #[arg(long, global = true, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Exports the flags to the environment and checks the configuration
    /// (flags or environment), so a bad certificate fails here, clearly,
    /// rather than in a daemon's log.
    pub fn apply(&self) -> anyhow::Result<()> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => {}
            (Some(cert), Some(key), Some(ca)) => {
                let absolute = |path: &Path| {
                    std::path::absolute(path)
                        .with_context(|| format!("cannot resolve {}", path.display()))
                };
                TlsFiles {
                    cert: absolute(cert)?,
                    key: absolute(key)?,
                    ca: absolute(ca)?,
                }
                .export_to_env();
            }
            _ => bail!("--tls-cert, --tls-key and --tls-ca go together: pass all three or none"),
        }
        oxray_core::tls::cluster_tls()?;
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a cluster CA (DIR/ca.pem, DIR/ca.key) and one certificate and
    /// key per --node (DIR/NAME.pem, DIR/NAME.key), for a quick start.
    Gen(GenArgs),
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Directory to write into; created 0700, and files already there are
    /// never overwritten.
    dir: PathBuf,
    /// Name of a node certificate to make (repeat for one per machine).
    #[arg(long = "node", value_name = "NAME", default_values_t = ["node".to_string()])]
    nodes: Vec<String>,
    /// An IP address every node certificate also names (repeat), for
    /// clients other than oxray's that check the address they dialled.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<std::net::IpAddr>,
    /// Days the certificates stay valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Gen(args) => generate(&args),
    }
}

fn generate(args: &GenArgs) -> anyhow::Result<()> {
    for name in &args.nodes {
        let valid = !name.is_empty()
            && name != "ca"
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            bail!("--node {name:?}: a node name is letters, digits, '-' and '_' (and not \"ca\")");
        }
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let now = SystemTime::now();
    let until = now + Duration::from_secs(u64::from(args.days) * 86_400);
    daemon::ensure_private_dir(&args.dir)?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "oxray cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now.into();
    ca_params.not_after = until.into();
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write_new(&args.dir.join("ca.pem"), &ca.pem())?;
    write_new(&args.dir.join("ca.key"), &ca_key_pem)?;

    for name in &args.nodes {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .subject_alt_names
            .extend(args.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("oxray node {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now.into();
        params.not_after = until.into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        write_new(&args.dir.join(format!("{name}.pem")), &cert.pem())?;
        write_new(&args.dir.join(format!("{name}.key")), &key.serialize_pem())?;
    }

    let dir = std::path::absolute(&args.dir)?;
    let first = &args.nodes[0];
    println!(
        "wrote {}/ca.pem and {}/ca.key (the CA's key: keep it off the cluster) and {} node certificate(s)",
        dir.display(),
        dir.display(),
        args.nodes.len()
    );
    println!("on each node, with its own NAME.pem and NAME.key:");
    println!(
        "  export OXRAY_USE_TLS=1 OXRAY_TLS_CA_CERT={0}/ca.pem OXRAY_TLS_SERVER_CERT={0}/{first}.pem OXRAY_TLS_SERVER_KEY={0}/{first}.key",
        dir.display()
    );
    Ok(())
}

/// Writes a new 0600 file; an existing file (or a link) at `path` is an
/// error, never overwritten.
fn write_new(path: &Path, contents: &str) -> anyhow::Result<()> {
    daemon::create_private_file(path)?
        .write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
