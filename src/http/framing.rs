//! Message framing read from request headers.

/// Whether a request carries a body, judged from its headers alone (RFC 9112
/// §6.3: a request with neither Transfer-Encoding nor a positive
/// Content-Length has none). For hosts that never flag the end of the stream
/// with the headers. Names are lower-case.
pub fn declares_body(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(name, value)| match name.as_str() {
        "transfer-encoding" => true,
        // An unreadable length is treated as a body: waiting for it is safe,
        // guessing "none" would let the request pass undecided.
        "content-length" => {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                != Some(0)
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn no_length_and_no_chunking_means_no_body() {
        assert!(!declares_body(&h(&[("host", "a"), ("cookie", "x=1")])));
        assert!(!declares_body(&h(&[("content-length", "0")])));
        assert!(!declares_body(&h(&[("content-length", "000")])));
    }

    #[test]
    fn a_length_or_chunking_means_a_body() {
        assert!(declares_body(&h(&[("content-length", "12")])));
        assert!(declares_body(&h(&[("transfer-encoding", "chunked")])));
        assert!(declares_body(&h(&[("content-length", "nonsense")])));
    }
}
