//! The PROXY protocol parser over arbitrary bytes: it never panics, a prefix
//! of the stream never decides differently from the whole, a header it reads
//! is re-encoded to the same header; and encode -> parse round-trips for
//! addresses drawn from the same bytes.
#![no_main]
use std::net::SocketAddr;

use arbitrary::{Arbitrary, Unstructured};
use gateway_agent::proxy_protocol::{
    encode_v1, encode_v2, one_family, parse, Parsed, Version, MAX_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    // Every split of a short stream, the first and last bytes of a long one.
    let splits: Vec<usize> = if data.len() <= 256 {
        (0..data.len()).collect()
    } else {
        (0..64).chain(data.len() - 64..data.len()).collect()
    };
    for split in splits {
        match parse(&data[..split]) {
            Ok(Parsed::Incomplete { at_most }) => {
                assert!(
                    split < at_most && at_most <= MAX_LEN,
                    "bound {at_most} at {split} bytes"
                );
                if let Ok(Parsed::Header { consumed, .. }) = whole {
                    assert!(
                        split < consumed && consumed <= at_most,
                        "bound {at_most} below the header's {consumed} bytes"
                    );
                }
            }
            early => assert_eq!(
                early, whole,
                "a prefix of {split} bytes decided differently"
            ),
        }
    }
    if let Ok(Parsed::Header { header, consumed }) = whole {
        assert!(consumed <= data.len() && consumed <= MAX_LEN);
        if let Some((src, dst)) = header.addresses {
            let again = match header.version {
                Version::V1 => encode_v1(src, dst),
                Version::V2 => encode_v2(src, dst),
            };
            assert_eq!(
                parse(&again),
                Ok(Parsed::Header {
                    header,
                    consumed: again.len()
                }),
                "re-encoded"
            );
        }
    }

    let mut u = Unstructured::new(data);
    if let (Ok(src), Ok(dst)) = (SocketAddr::arbitrary(&mut u), SocketAddr::arbitrary(&mut u)) {
        for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
            match parse(&encoded) {
                Ok(Parsed::Header { header, consumed }) => {
                    assert_eq!(header.addresses, Some(one_family(src, dst)));
                    assert_eq!(consumed, encoded.len());
                }
                other => panic!(
                    "{src} -> {dst}: {other:?} from {:?}",
                    String::from_utf8_lossy(&encoded)
                ),
            }
        }
    }
});
