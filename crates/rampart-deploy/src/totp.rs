//! RFC 6238 TOTP (HMAC-SHA1, 30-second steps, 6 digits) over RFC 4226 HOTP, and the RFC 4648 base32 that
//! authenticator apps read. Verification accepts the current step and one either side, and only a step later
//! than the last one used, so a code can never be replayed.

use hmac::{Hmac, Mac};

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a generated secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// RFC 4226 HOTP: the `digits`-digit code for `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash.last().copied().unwrap_or(0) & 0x0f);
    let mut word = [0u8; 4];
    for (i, b) in word.iter_mut().enumerate() {
        *b = hash.get(offset + i).copied().unwrap_or(0);
    }
    let value = u32::from_be_bytes(word) & 0x7fff_ffff;
    value % 10u32.pow(digits)
}

/// The time step of `unix_time`.
pub fn step_at(unix_time: u64) -> u64 {
    unix_time / STEP
}

/// The 6-digit code at `unix_time`, zero-padded.
pub fn code_at(secret: &[u8], unix_time: u64) -> String {
    format!("{:06}", hotp(secret, step_at(unix_time), DIGITS))
}

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Not six digits.
    #[error("a TOTP code is 6 digits")]
    Malformed,
    /// Matches no step in the window.
    #[error("wrong TOTP code")]
    Wrong,
    /// Matches a step at or before the last one used.
    #[error("TOTP code already used; wait for the next code")]
    Replayed,
}

/// Checks `code` at `unix_time` (±1 step) and returns the matching step, which must be later than `last_used`.
pub fn verify(
    secret: &[u8],
    code: &str,
    unix_time: u64,
    last_used: Option<u64>,
) -> Result<u64, TotpError> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let now = step_at(unix_time);
    let mut matched = None;
    // Check every candidate (no early exit) and compare in constant time.
    for step in [now.saturating_sub(1), now, now.saturating_add(1)] {
        let expected = format!("{:06}", hotp(secret, step, DIGITS));
        let diff = expected
            .bytes()
            .zip(code.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && matched.is_none() {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Wrong)?;
    if last_used.is_some_and(|last| step <= last) {
        return Err(TotpError::Replayed);
    }
    Ok(step)
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what `otpauth://` URIs carry).
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let index = ((buffer >> bits) & 31) as usize;
            out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
        }
    }
    if bits > 0 {
        let index = ((buffer << (5 - bits)) & 31) as usize;
        out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !matches!(c, b'=' | b' ')) {
        let value = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://totp/...` URI an authenticator app enrols from.
pub fn otpauth_uri(issuer: &str, principal: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{issuer}:{principal}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        base32_encode(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits, seed "12345678901234567890").
    #[test]
    fn rfc6238_vectors() {
        let seed = b"12345678901234567890";
        for (time, code) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(seed, step_at(time), 8), code, "time {time}");
        }
        // The 6-digit code is the low six digits.
        assert_eq!(code_at(seed, 59), "287082");
    }

    #[test]
    fn window_and_replay() {
        let seed = b"12345678901234567890";
        let t = 1111111111;
        let code = code_at(seed, t);
        assert_eq!(verify(seed, &code, t, None), Ok(step_at(t)));
        assert_eq!(verify(seed, &code, t + STEP, None), Ok(step_at(t)));
        assert_eq!(
            verify(seed, &code, t + 3 * STEP, None),
            Err(TotpError::Wrong)
        );
        assert_eq!(
            verify(seed, &code, t, Some(step_at(t))),
            Err(TotpError::Replayed)
        );
        assert_eq!(verify(seed, "12345", t, None), Err(TotpError::Malformed));
        assert_eq!(verify(seed, "abcdef", t, None), Err(TotpError::Malformed));
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(
            base32_decode("mzxw6ytboi======").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(base32_decode("1"), None);
    }
}
