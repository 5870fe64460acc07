//! Compresses a body as an HTTP client would for a `Content-Encoding` (`identity`: as is).
//!
//! Declared with `#[path]` by the tests that use it.

use std::io::Write;

pub fn encode(coding: &str, plain: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &plain[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
            out
        }
        "zstd" => zstd::encode_all(plain, 1).unwrap(),
        _ => plain.to_vec(),
    }
}
