//! Test certificates: a throw-away CA and the server and client certificates it
//! issues, written as PEM files into a directory (rcgen, ring).
//!
//! Server certificates carry the names they are issued for as DNS names, and
//! `127.0.0.1` / `::1` as IP addresses too, so clients that verify the host they dialled
//! (curl, the `mariadb` client, mysql_async) accept them on loopback.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// An issued certificate and its key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A calendar date: (year, month, day).
pub type Date = (i32, u8, u8);

/// Where [`Issued::write`] put a certificate and its key.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(common_name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// A server certificate for `names` (and the loopback addresses), valid for years.
    pub fn server(&self, names: &[&str]) -> Result<Issued> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, None)
    }

    /// A server certificate valid only between the two dates `(year, month, day)`.
    pub fn server_valid(&self, names: &[&str], from: Date, until: Date) -> Result<Issued> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, Some((from, until)))
    }

    /// A client certificate for mTLS.
    pub fn client(&self, common_name: &str) -> Result<Issued> {
        self.issue(&[common_name], ExtendedKeyUsagePurpose::ClientAuth, None)
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, validity: Option<(Date, Date)>) -> Result<Issued> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if usage == ExtendedKeyUsagePurpose::ServerAuth {
            for ip in ["127.0.0.1", "::1"] {
                params.subject_alt_names.push(SanType::IpAddress(ip.parse::<IpAddr>()?));
            }
        }
        params.extended_key_usages = vec![usage];
        if let Some(((y0, m0, d0), (y1, m1, d1))) = validity {
            params.not_before = date_time_ymd(y0, m0, d0);
            params.not_after = date_time_ymd(y1, m1, d1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes `dir/name.pem` and `dir/name.key`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<Files> {
        let files = Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, &self.cert_pem).with_context(|| format!("writing {}", files.cert.display()))?;
        std::fs::write(&files.key, &self.key_pem).with_context(|| format!("writing {}", files.key.display()))?;
        Ok(files)
    }
}
