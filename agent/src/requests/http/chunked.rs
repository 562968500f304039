//! The chunked transfer coding (RFC 9112 §7.1), decoded from captured bytes
//! and skipped over uncaptured ones.
//!
//! ```text
//! chunk-size [;ext] CRLF  data(chunk-size)  CRLF  ...  0 [;ext] CRLF  trailers  CRLF
//! ^ must be captured      ^ may be uncaptured ^ must be captured
//! ```
//!
//! Only chunk data may fall in uncaptured bytes: every line must be seen,
//! or the body's end is unknown ([`LostReason::ChunkUncaptured`]).

use super::LostReason;
use super::head::is_tchar;

/// Where the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line.
    Size,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: CR or LF expected.
    DataEnd,
    /// After chunk data and CR: LF expected.
    DataLf,
    /// In the trailer section (after the last chunk).
    Trailer,
}

/// A chunked body's decoder. It holds at most one line, bounded by the
/// `max_line` given to [`Chunked::known`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunked {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Chunked {
    pub fn new() -> Self {
        Chunked {
            state: State::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// Decodes captured bytes, giving chunk data to `data`. Returns
    /// `Some(n)` when the body ended after `n` of them, `None` when all were
    /// used and more are needed.
    pub fn known(
        &mut self,
        bytes: &[u8],
        max_line: usize,
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<usize>, LostReason> {
        let mut used = 0;
        while used < bytes.len() {
            let rest = &bytes[used..];
            match self.state {
                State::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    data(&rest[..n]);
                    used += n;
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        left => State::Data(left),
                    };
                }
                State::DataEnd | State::DataLf => {
                    self.state = match (self.state, rest[0]) {
                        (State::DataEnd, b'\r') => State::DataLf,
                        (_, b'\n') => State::Size,
                        _ => {
                            return Err(LostReason::Smuggling("chunk data not followed by CRLF"));
                        }
                    };
                    used += 1;
                }
                State::Size | State::Trailer => {
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        self.push_line(rest, max_line)?;
                        return Ok(None);
                    };
                    self.push_line(&rest[..lf], max_line)?;
                    used += lf + 1;
                    if self.end_line()? {
                        return Ok(Some(used));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Bytes held on the heap (the line buffer).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.line.capacity()
    }

    /// Skips `n` uncaptured bytes: only chunk data may be skipped.
    pub fn unknown(&mut self, n: u64) -> Result<(), LostReason> {
        match self.state {
            State::Data(left) if n <= left => {
                self.state = match left - n {
                    0 => State::DataEnd,
                    left => State::Data(left),
                };
                Ok(())
            }
            _ if n == 0 => Ok(()),
            _ => Err(LostReason::ChunkUncaptured),
        }
    }

    fn push_line(&mut self, part: &[u8], max_line: usize) -> Result<(), LostReason> {
        let limit = match self.state {
            State::Trailer => max_line.saturating_sub(self.trailer_bytes),
            _ => max_line,
        };
        if self.line.len() + part.len() > limit {
            return Err(LostReason::TooLong);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    /// A line ended: returns whether the body ended with it.
    fn end_line(&mut self) -> Result<bool, LostReason> {
        let raw = std::mem::take(&mut self.line);
        let line = raw.strip_suffix(b"\r").unwrap_or(&raw);
        if line.contains(&b'\r') || line.contains(&0) {
            return Err(LostReason::Malformed(
                "bare CR or NUL in a chunked body's line",
            ));
        }
        match self.state {
            State::Size => {
                self.state = match chunk_size(line)? {
                    0 => State::Trailer,
                    n => State::Data(n),
                };
                Ok(false)
            }
            _ if line.is_empty() => Ok(true),
            _ => {
                self.trailer_bytes += raw.len() + 1;
                let colon = line.iter().position(|&b| b == b':');
                match colon {
                    Some(c) if c > 0 && line[..c].iter().copied().all(is_tchar) => Ok(false),
                    _ => Err(LostReason::Malformed("invalid trailer field")),
                }
            }
        }
    }
}

/// `1*HEXDIG [BWS ";" ext]`: the size, or a smuggling shape. Sizes of 2^60
/// bytes and more are refused (no real body is that long; wrapping is an
/// attack).
fn chunk_size(line: &[u8]) -> Result<u64, LostReason> {
    const BAD: LostReason = LostReason::Smuggling("invalid chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, rest) = line.split_at(digits);
    let rest = super::head::trim_ows(rest);
    if hex.is_empty() || !(rest.is_empty() || rest[0] == b';') {
        return Err(BAD);
    }
    if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(BAD);
    }
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(LostReason::Smuggling("chunk size overflows"));
    }
    Ok(hex.iter().fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n * 16 + u64::from(v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8]) -> (Result<Option<usize>, LostReason>, Vec<u8>) {
        let mut c = Chunked::new();
        let mut got = Vec::new();
        let r = c.known(body, 1024, &mut |d| got.extend_from_slice(d));
        (r, got)
    }

    #[test]
    fn decodes_and_finds_the_end() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nNEXT";
        assert_eq!(decode(body), (Ok(Some(body.len() - 4)), b"hello!".to_vec()));
        let body = b"5\nhello\n0\nX-T: 1\n\nNEXT";
        assert_eq!(decode(body), (Ok(Some(body.len() - 4)), b"hello".to_vec()));
        assert_eq!(
            decode(b"A\r\n0123456789\r\n"),
            (Ok(None), b"0123456789".to_vec())
        );
    }

    #[test]
    fn bytewise_is_the_same_as_whole() {
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut c = Chunked::new();
        let mut got = Vec::new();
        for (i, b) in body.iter().enumerate() {
            let r = c.known(std::slice::from_ref(b), 1024, &mut |d| {
                got.extend_from_slice(d)
            });
            let want = if i + 1 == body.len() { Some(1) } else { None };
            assert_eq!(r, Ok(want), "at {i}");
        }
        assert_eq!(got, b"abc0123456789abcdef");
    }

    #[test]
    fn data_may_be_uncaptured_lines_may_not() {
        let mut c = Chunked::new();
        let mut sink = |_: &[u8]| {};
        assert_eq!(c.known(b"10\r\nab", 1024, &mut sink), Ok(None));
        assert_eq!(c.unknown(14), Ok(()));
        assert_eq!(c.known(b"\r\n0\r\n\r\n", 1024, &mut sink), Ok(Some(7)));
        let mut c = Chunked::new();
        assert_eq!(c.known(b"2\r\nab", 1024, &mut sink), Ok(None));
        assert_eq!(c.unknown(1), Err(LostReason::ChunkUncaptured));
        let mut c = Chunked::new();
        assert_eq!(c.unknown(1), Err(LostReason::ChunkUncaptured));
        assert_eq!(Chunked::new().unknown(0), Ok(()));
    }

    #[test]
    fn bad_sizes_are_smuggling() {
        for bad in [
            &b"\r\n"[..],
            b"-1\r\n",
            b"+1\r\n",
            b"0x10\r\n",
            b"g\r\n",
            b"1 2\r\n",
            b"1000000000000000\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            assert!(
                matches!(decode(bad).0, Err(LostReason::Smuggling(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(chunk_size(b"00000000000000000000001"), Ok(1));
        assert_eq!(chunk_size(b"fFfFfFfFfFfFfFf"), Ok(0x0fff_ffff_ffff_ffff));
        assert_eq!(chunk_size(b"1 ;a=b"), Ok(1));
    }

    #[test]
    fn missing_crlf_after_data_is_smuggling() {
        assert_eq!(
            decode(b"1\r\naX\r\n").0,
            Err(LostReason::Smuggling("chunk data not followed by CRLF"))
        );
    }

    #[test]
    fn lines_are_bounded() {
        let mut c = Chunked::new();
        assert_eq!(
            c.known(&[b'0'; 20], 10, &mut |_| {}),
            Err(LostReason::TooLong)
        );
        let mut c = Chunked::new();
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(b"T: v\r\n".repeat(10));
        assert_eq!(
            c.known(&trailers, 30, &mut |_| {}),
            Err(LostReason::TooLong)
        );
    }

    #[test]
    fn invalid_trailers_are_malformed() {
        assert!(matches!(
            decode(b"0\r\nno colon\r\n\r\n").0,
            Err(LostReason::Malformed(_))
        ));
        assert!(matches!(
            decode(b"0\r\nA: \rb\r\n\r\n").0,
            Err(LostReason::Malformed(_))
        ));
    }
}
