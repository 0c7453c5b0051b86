//! The answers MySQL auth plugins compute from the server's nonce and the password
//! (pure): the scrambles of `mysql_native_password` and `caching_sha2_password`, and
//! the XOR that precedes RSA encryption in full authentication.

use ring::digest;

/// mysql_native_password: `SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`; empty for an
/// empty password.
pub fn scramble_native(nonce: &[u8], password: &[u8]) -> Vec<u8> {
    scramble(&digest::SHA1_FOR_LEGACY_USE_ONLY, nonce, password, true)
}

/// caching_sha2_password: `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)`; empty
/// for an empty password.
pub fn scramble_sha256(nonce: &[u8], password: &[u8]) -> Vec<u8> {
    scramble(&digest::SHA256, nonce, password, false)
}

fn scramble(algorithm: &'static digest::Algorithm, nonce: &[u8], password: &[u8], nonce_first: bool) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let hash = |parts: &[&[u8]]| {
        let mut context = digest::Context::new(algorithm);
        parts.iter().for_each(|p| context.update(p));
        context.finish()
    };
    let once = hash(&[password]);
    let twice = hash(&[once.as_ref()]);
    let salted = if nonce_first {
        hash(&[nonce, twice.as_ref()])
    } else {
        hash(&[twice.as_ref(), nonce])
    };
    once.as_ref().iter().zip(salted.as_ref()).map(|(a, b)| a ^ b).collect()
}

/// The password with a NUL, XORed with the nonce: what caching_sha2 and sha256
/// encrypt with the server's RSA key.
pub fn xor_with_nonce(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut out = password.to_vec();
    out.push(0);
    if !nonce.is_empty() {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte ^= nonce[i % nonce.len()];
        }
    }
    out
}
