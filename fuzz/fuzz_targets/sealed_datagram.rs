//! Authenticated datagrams (`flocon::secret::datagram`): `open` is total whatever the bytes
//! and the clock; what it takes is the envelope's inner bytes, taken once only (the same
//! bytes again are `Repeated`); and whatever is sealed opens to itself, once, under the same
//! key only, and no longer once any one byte of it is changed.
#![no_main]
use flocon::secret::datagram::{DatagramAuth, OVERHEAD, Refused, seal};
use flocon::secret::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((clock, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = u64::from_be_bytes(*clock);
    let key = Secret::from_bytes(b"fuzzing key, sixteen bytes or more").unwrap();
    let other = Secret::from_bytes(b"another key, sixteen bytes or more").unwrap();

    // Arbitrary bytes: never a panic; taken at most once.
    let mut auth = DatagramAuth::new(key.clone());
    if let Ok(inner) = auth.open(bytes, now) {
        assert_eq!(inner, &bytes[OVERHEAD..]);
        assert_eq!(auth.open(bytes, now), Err(Refused::Repeated));
    }

    // Sealed bytes: open to themselves, once, under this key only.
    let mut sealed = Vec::new();
    seal(&key, bytes, now, &mut sealed);
    let mut fresh = DatagramAuth::new(key.clone());
    assert_eq!(fresh.open(&sealed, now), Ok(bytes));
    assert_eq!(fresh.open(&sealed, now), Err(Refused::Repeated));
    assert!(DatagramAuth::new(other).open(&sealed, now).is_err());
    if !sealed.is_empty() {
        let at = usize::from(clock[7]) * sealed.len() / 256;
        sealed[at] ^= 1 << (clock[6] % 8);
        assert!(DatagramAuth::new(key).open(&sealed, now).is_err());
    }
});
