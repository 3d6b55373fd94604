//! Loading an identity (certificate and private key) from PEM, as the console and the engine do
//! from their volumes at start: any bytes are refused or accepted without a panic, and an
//! accepted identity's fingerprint is its certificate's. Half of the inputs are a real
//! identity's PEM with the input spliced into it, so the parser is driven past the first line.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use scan_engine_protocol::{Fingerprint, Identity};

/// A real identity's PEM text: its certificate, then its PKCS#8 key.
fn real_pem() -> &'static [u8] {
    static PEM: OnceLock<Vec<u8>> = OnceLock::new();
    PEM.get_or_init(|| {
        let id = Identity::generate("fuzz").expect("generating an identity");
        let key = base64::engine::general_purpose::STANDARD.encode(id.private_key().secret_der());
        let mut pem = id.cert_pem().to_owned();
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for line in key.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        assert!(
            Identity::from_pem(pem.as_bytes()).is_ok(),
            "the real PEM loads"
        );
        pem.into_bytes()
    })
}

fuzz_target!(|data: &[u8]| {
    let input: Vec<u8> = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 && rest.len() >= 2 => {
            let real = real_pem();
            let at = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % (real.len() + 1);
            let cut = usize::from(mode / 2) % 8;
            let resume = (at + cut).min(real.len());
            let mut spliced = real[..at].to_vec();
            spliced.extend_from_slice(&rest[2..]);
            spliced.extend_from_slice(&real[resume..]);
            spliced
        }
        _ => data.to_vec(),
    };
    if let Ok(identity) = Identity::from_pem(&input) {
        assert_eq!(
            identity.fingerprint(),
            &Fingerprint::of_der(identity.cert_der()),
            "an accepted identity's fingerprint is its certificate's"
        );
    }
});
