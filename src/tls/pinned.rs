//! [`PinnedKey`]: a MySQL server's RSA public key, pinned in the config, for the
//! password exchange of `caching_sha2_password`'s full authentication (and
//! `sha256_password`) over a plaintext leg. The client encrypts the password with the
//! key it holds; a key the server sends is never asked for nor used, so a server
//! that cannot prove itself gets only ciphertext for a key it lacks.
//!
//! MySQL uses RSA-OAEP with SHA-1 (`RSA_PKCS1_OAEP_PADDING`). Only encryption is done
//! here, with a public key; the `rsa` crate's timing advisory concerns private-key
//! operations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPublicKey};

/// A public key read from a PEM file at load time; compares by path.
#[derive(Clone)]
pub struct PinnedKey {
    path: PathBuf,
    key: Arc<RsaPublicKey>,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PinnedKey").field(&self.path).finish()
    }
}

impl PartialEq for PinnedKey {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for PinnedKey {}

impl PinnedKey {
    /// Reads a `PUBLIC KEY` (what MySQL's `caching_sha2_password_public_key_path`
    /// holds) or `RSA PUBLIC KEY` PEM file.
    pub fn load(path: &Path) -> Result<PinnedKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::from_pem(&text).map(|key| PinnedKey {
            path: path.to_path_buf(),
            key: Arc::new(key),
        })
    }

    fn from_pem(text: &str) -> Result<RsaPublicKey, String> {
        let key = if text.contains("BEGIN RSA PUBLIC KEY") {
            RsaPublicKey::from_pkcs1_pem(text).map_err(|e| format!("not an RSA public key: {e}"))?
        } else {
            RsaPublicKey::from_public_key_pem(text).map_err(|e| format!("not a PEM public key: {e}"))?
        };
        if key.size() < 128 {
            return Err(format!(
                "an RSA key of {} bits is too short (at least 1024)",
                key.size() * 8
            ));
        }
        Ok(key)
    }

    /// The file the key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `message` encrypted with RSA-OAEP (SHA-1); fails when it is too long for the key.
    pub fn encrypt(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key
            .encrypt(&mut rsa::rand_core::OsRng, Oaep::new::<sha1::Sha1>(), message)
            .map_err(|e| format!("RSA encryption with {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::RsaPrivateKey;

    use super::*;

    #[test]
    fn a_pinned_key_encrypts_what_its_private_key_decrypts() {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let dir = std::env::temp_dir().join(format!("switchyard-pinned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, pem).unwrap();
        let key = PinnedKey::load(&path).unwrap();
        let sealed = key.encrypt(b"secret\0").unwrap();
        assert_eq!(
            private.decrypt(Oaep::new::<sha1::Sha1>(), &sealed).unwrap(),
            b"secret\0"
        );
        assert!(key.encrypt(&[0; 200]).is_err(), "too long for a 1024-bit key");
        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n").unwrap();
        assert!(PinnedKey::load(&path).is_err());
        assert!(PinnedKey::load(&dir.join("missing.pem")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
