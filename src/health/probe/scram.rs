//! SCRAM-SHA-256 (RFC 5802 / RFC 7677), the client side, as MongoDB uses it: pure
//! message building and checking, so the exchange in the probe stays straight-line
//! and the crypto is tested against the RFC's own example.
//!
//! Only ASCII user names and passwords are accepted (config validation enforces it):
//! for those, SASLprep is the identity.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};

/// The most PBKDF2 iterations accepted from a server.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// The client's state between its first and final message.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    /// The client-first message to send: `n,,n=user,r=nonce`.
    pub message: String,
    bare: String,
    nonce: String,
}

/// `n,,n=user,r=nonce`.
pub fn client_first(user: &str, nonce: &str) -> ClientFirst {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    let bare = format!("n={user},r={nonce}");
    ClientFirst {
        message: format!("n,,{bare}"),
        bare,
        nonce: nonce.to_string(),
    }
}

/// What the client must remember to check the server's final message.
#[derive(Debug, Clone)]
pub struct ClientFinal {
    /// The client-final message to send: `c=biws,r=nonce,p=proof`.
    pub message: String,
    server_signature: Vec<u8>,
}

fn attribute(message: &str, key: char) -> Option<&str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

/// Builds the client-final message from the server-first one; fails if the server's
/// message is malformed, its nonce does not extend ours, or its iteration count is
/// too low to be a real server (a downgrade).
pub fn client_final(first: &ClientFirst, server_first: &str, password: &str) -> Result<ClientFinal, String> {
    let nonce = attribute(server_first, 'r').ok_or("server-first without a nonce")?;
    if !nonce.starts_with(&first.nonce) || nonce.len() <= first.nonce.len() {
        return Err("server nonce does not extend the client nonce".into());
    }
    let salt = BASE64
        .decode(attribute(server_first, 's').ok_or("server-first without a salt")?)
        .map_err(|_| "bad salt")?;
    let iterations: u32 = attribute(server_first, 'i')
        .and_then(|i| i.parse().ok())
        .ok_or("bad iteration count")?;
    if iterations < 4096 {
        return Err(format!("iteration count {iterations} below the minimum 4096"));
    }
    // A hostile or broken server must not make a health check burn a core for minutes
    // (MongoDB's default is 15000).
    if iterations > MAX_ITERATIONS {
        return Err(format!(
            "iteration count {iterations} above the maximum {MAX_ITERATIONS}"
        ));
    }
    let mut salted = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations).ok_or("zero iterations")?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{},{server_first},{without_proof}", first.bare);
    let client_signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
        auth_message.as_bytes(),
    );
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(client_signature.as_ref())
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = hmac::sign(&salted, b"Server Key");
    let server_signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
        auth_message.as_bytes(),
    );
    Ok(ClientFinal {
        message: format!("{without_proof},p={}", BASE64.encode(proof)),
        server_signature: server_signature.as_ref().to_vec(),
    })
}

/// Checks the server-final message: the server proved it knows the password too.
pub fn verify_server_final(last: &ClientFinal, server_final: &str) -> Result<(), String> {
    if let Some(error) = attribute(server_final, 'e') {
        return Err(format!("server refused: {}", crate::logs::peer(error)));
    }
    let signature = BASE64
        .decode(attribute(server_final, 'v').ok_or("server-final without a signature")?)
        .map_err(|_| "bad server signature encoding")?;
    if signature == last.server_signature {
        Ok(())
    } else {
        Err("the server's signature does not match: it does not know the password".into())
    }
}

/// A fresh client nonce (24 random bytes, base64).
pub fn nonce() -> String {
    let mut bytes = [0u8; 24];
    let rng = ring::rand::SystemRandom::new();
    ring::rand::SecureRandom::fill(&rng, &mut bytes).expect("the system RNG works");
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3.
    #[test]
    fn rfc_7677_example() {
        let first = client_first("user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first.message, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = client_final(&first, server_first, "pencil").unwrap();
        assert_eq!(
            last.message,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        verify_server_final(&last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(verify_server_final(&last, "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_err());
        assert!(verify_server_final(&last, "e=invalid-proof")
            .unwrap_err()
            .contains("invalid-proof"));
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let first = client_first("user", "abc");
        for bad in [
            "r=xyz,s=AAAA,i=4096",
            "r=abc,s=AAAA,i=4096",
            "r=abcd,s=!!!,i=4096",
            "r=abcd,s=AAAA,i=1",
            "s=AAAA,i=4096",
        ] {
            assert!(client_final(&first, bad, "pw").is_err(), "{bad}");
        }
    }

    #[test]
    fn user_names_are_escaped() {
        assert_eq!(client_first("a=b,c", "n").message, "n,,n=a=3Db=2Cc,r=n");
    }
}
