//! Redaction of secret values from a job's output streams.
//!
//! A [`Redactor`] replaces every occurrence of a secret, in any of the forms below, with
//! `[REDACTED:name]` in a byte stream that arrives in chunks of any size. It keeps back the last
//! `longest pattern - 1` bytes of each chunk until the next one (or the end of the stream), so a
//! value split across two reads, or across many, is still found; nothing else is buffered, and
//! memory is bounded by the longest pattern. The price: while a job is silent, up to that many
//! bytes of its output (a few KiB at most, [`stockade_profiles::MAX_SECRET_BYTES`] × 4/3) wait
//! for more output or the end of the stream.
//!
//! # Forms
//!
//! For a secret `s`:
//! - `s` itself;
//! - base64 (standard and URL-safe alphabets) of `s` at each of the three byte alignments it can
//!   have inside a longer base64 text: for alignment `a` the characters of
//!   `base64(a filler bytes + s)` that depend on `s` alone (the partial groups at either end are
//!   dropped, since they depend on neighbouring bytes), plus the padded encoding of `s` alone
//!   (`printf %s "$S" | base64`), so a whole encoded value is replaced with its padding;
//! - percent-encoding (URL) of `s`, with upper- and lower-case hex, where it differs from `s`.
//!
//! Where two patterns match at the same position the longest wins; matches do not overlap.
//! Forms that are cheap to produce but not matched: hex dumps, other encodings, a value
//! re-split with characters inserted (a job can always encode a secret it holds in a way no
//! filter recognises: redaction stops accidents, not a job that exfiltrates on purpose).

/// One pattern: the bytes and the replacement.
#[derive(Clone)]
struct Pattern {
    bytes: Vec<u8>,
    replacement: Vec<u8>,
}

/// Streaming redactor for one output stream.
#[derive(Clone)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    /// Bytes held back from the previous chunk (shorter than the longest pattern).
    pending: Vec<u8>,
    longest: usize,
}

// Never print the patterns: they are the secrets.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .field("pending_bytes", &self.pending.len())
            .finish()
    }
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 with `=` padding.
pub fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// Percent-encoding of every byte outside RFC 3986's unreserved set.
fn percent(data: &[u8], upper: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::new();
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// The base64 characters that encode `secret` placed after `align` other bytes, and that
/// depend on no byte but the secret's.
fn base64_core(secret: &[u8], align: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut data = vec![0u8; align];
    data.extend_from_slice(secret);
    let enc = base64(&data, alphabet);
    // Characters 4g..4g+3 encode bytes 3g..3g+2; character j of a group depends on bytes up
    // to index 3g + ceil(6(j+1)/8) - 1 (j = 0: byte 0; 1: 0-1; 2: 1-2; 3: 2).
    let depends_on = |c: usize| -> (usize, usize) {
        let g = c / 4;
        let j = c % 4;
        let bits_from = 6 * j;
        let bits_to = 6 * j + 5;
        (3 * g + bits_from / 8, 3 * g + bits_to / 8)
    };
    let end = align + secret.len();
    let full: Vec<u8> = enc
        .iter()
        .enumerate()
        .filter(|(c, ch)| {
            let (lo, hi) = depends_on(*c);
            **ch != b'=' && lo >= align && hi < end
        })
        .map(|(_, ch)| *ch)
        .collect();
    full
}

impl Redactor {
    /// A redactor for `secrets` (name, value). Values must not be empty.
    pub fn new(secrets: &[(&str, &[u8])]) -> Redactor {
        let mut patterns: Vec<Pattern> = Vec::new();
        for (name, value) in secrets {
            assert!(!value.is_empty(), "secret {name} is empty");
            let replacement = format!("[REDACTED:{name}]").into_bytes();
            let mut forms = vec![value.to_vec()];
            for alphabet in [STD, URL] {
                forms.push(base64(value, alphabet));
                for align in 0..3 {
                    forms.push(base64_core(value, align, alphabet));
                }
            }
            forms.push(percent(value, true));
            forms.push(percent(value, false));
            for bytes in forms {
                // A core of a very short secret can be a few characters: never redact those, they
                // would hit ordinary output (secrets are at least 8 bytes, so cores are >= 8).
                if bytes.len() < 4 || patterns.iter().any(|p| p.bytes == bytes) {
                    continue;
                }
                patterns.push(Pattern {
                    bytes,
                    replacement: replacement.clone(),
                });
            }
        }
        // Longest first: at one position, the longest match wins.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.bytes.len()));
        let longest = patterns.iter().map(|p| p.bytes.len()).max().unwrap_or(0);
        Redactor {
            patterns,
            pending: Vec::new(),
            longest,
        }
    }

    /// Feed one chunk; returns what may be emitted now (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        // A match starting before `safe` lies wholly inside `buf`; one starting later may
        // continue in the next chunk.
        let safe = buf.len().saturating_sub(self.longest.saturating_sub(1));
        let (out, rest) = self.scan(&buf, safe);
        self.pending = buf[rest..].to_vec();
        out
    }

    /// The end of the stream: everything held back, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.pending);
        let (out, _) = self.scan(&buf, buf.len());
        out
    }

    /// Redact matches that start before `safe`; returns the output and where the unprocessed
    /// rest begins.
    fn scan(&self, buf: &[u8], safe: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < safe {
            match self.next_match(buf, i, safe) {
                Some((at, p)) => {
                    out.extend_from_slice(&buf[i..at]);
                    out.extend_from_slice(&p.replacement);
                    i = at + p.bytes.len();
                }
                None => {
                    out.extend_from_slice(&buf[i..safe]);
                    i = safe;
                }
            }
        }
        (out, i)
    }

    /// The leftmost match starting in `from..before`, longest first at that position.
    fn next_match(&self, buf: &[u8], from: usize, before: usize) -> Option<(usize, &Pattern)> {
        let mut best: Option<(usize, &Pattern)> = None;
        for p in &self.patterns {
            let limit = best.map_or(before, |(at, _)| at + 1).min(before);
            if let Some(at) = find(&buf[from..], &p.bytes, limit.saturating_sub(from)) {
                let at = from + at;
                // Patterns are sorted longest first, so an equal position keeps the longer.
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, p));
                }
            }
        }
        best
    }
}

/// First position `< start_before` where `needle` occurs in `hay`.
fn find(hay: &[u8], needle: &[u8], start_before: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut pos = 0;
    while pos < start_before && pos + needle.len() <= hay.len() {
        let off = hay[pos..start_before.min(hay.len())]
            .iter()
            .position(|&b| b == first)?;
        let at = pos + off;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        pos = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"hunter2-s3cr3t/value+";

    fn all(r: &mut Redactor, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(r.push(c));
        }
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    fn redactor() -> Redactor {
        Redactor::new(&[("api", SECRET)])
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b"", STD), b"");
        assert_eq!(base64(b"f", STD), b"Zg==");
        assert_eq!(base64(b"fo", STD), b"Zm8=");
        assert_eq!(base64(b"foo", STD), b"Zm9v");
        assert_eq!(base64(b"foobar", STD), b"Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff], STD), b"+/8=");
        assert_eq!(base64(&[0xfb, 0xff], URL), b"-_8=");
    }

    #[test]
    fn a_whole_value_is_redacted_and_the_rest_kept() {
        let mut r = redactor();
        let text = format!("token={} done\n", std::str::from_utf8(SECRET).unwrap());
        assert_eq!(
            all(&mut r, &[text.as_bytes()]),
            "token=[REDACTED:api] done\n"
        );
    }

    #[test]
    fn a_value_split_across_chunks_is_redacted() {
        for cut in 1..SECRET.len() {
            let mut r = redactor();
            let (a, b) = SECRET.split_at(cut);
            let got = all(&mut r, &[b"<", a, b, b">"]);
            assert_eq!(got, "<[REDACTED:api]>", "cut at {cut}");
        }
        // One byte at a time.
        let mut r = redactor();
        let bytes: Vec<&[u8]> = SECRET.chunks(1).collect();
        assert_eq!(all(&mut r, &bytes), "[REDACTED:api]");
    }

    #[test]
    fn base64_and_url_encoded_forms_are_redacted() {
        let b64 = String::from_utf8(base64(SECRET, STD)).unwrap();
        let url64 = String::from_utf8(base64(SECRET, URL)).unwrap();
        let pct = String::from_utf8(percent(SECRET, true)).unwrap();
        let pct_lower = String::from_utf8(percent(SECRET, false)).unwrap();
        assert_ne!(
            pct,
            std::str::from_utf8(SECRET).unwrap(),
            "the test secret needs escaping"
        );
        for form in [&b64, &url64, &pct, &pct_lower] {
            let mut r = redactor();
            assert_eq!(
                all(&mut r, &[format!("x {form} y").as_bytes()]),
                "x [REDACTED:api] y",
                "{form}"
            );
        }
    }

    #[test]
    fn base64_of_a_longer_text_containing_the_secret_is_redacted_at_every_alignment() {
        for prefix in ["", "a", "ab", "abc", "Authorization: Bearer "] {
            for suffix in ["", "!", "!!", "\n"] {
                let mut data = prefix.as_bytes().to_vec();
                data.extend_from_slice(SECRET);
                data.extend_from_slice(suffix.as_bytes());
                let enc = base64(&data, STD);
                let mut r = redactor();
                let got = all(&mut r, &[&enc]);
                assert!(
                    got.contains("[REDACTED:api]"),
                    "{prefix:?}+{suffix:?}: {got}"
                );
                // What is left can hold at most the partial groups at either end: not enough to
                // decode more than 2 bytes of the secret on each side.
                let left = got.replace("[REDACTED:api]", "");
                assert!(left.len() <= enc.len() - base64_core(SECRET, prefix.len() % 3, STD).len());
            }
        }
    }

    #[test]
    fn several_secrets_and_overlaps() {
        let mut r = Redactor::new(&[("a", b"abcdefgh12"), ("b", b"gh12XYZW99")]);
        // Leftmost wins; matches do not overlap.
        assert_eq!(all(&mut r, &[b"abcdefgh12XYZW99"]), "[REDACTED:a]XYZW99");
        let mut r = Redactor::new(&[("a", b"abcdefgh12"), ("b", b"gh12XYZW99")]);
        assert_eq!(
            all(&mut r, &[b"--gh12XYZW99--abcdefgh12--"]),
            "--[REDACTED:b]--[REDACTED:a]--"
        );
    }

    #[test]
    fn output_without_secrets_passes_unchanged_and_is_held_back_only_briefly() {
        let mut r = redactor();
        let text = b"hello world, this is a long enough line of output\n";
        let out = r.push(text);
        // Everything but the last longest-1 bytes is emitted at once.
        assert_eq!(out.len(), text.len() - (r.longest - 1));
        let mut rest = out;
        rest.extend(r.finish());
        assert_eq!(rest, text);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let r = redactor();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any text with the secret (in any form) inserted anywhere, split at any points, comes
        /// out redacted, and equal to redacting it in one piece; without secrets, unchanged.
        #[test]
        fn split_points_never_matter(
            before in proptest::collection::vec(any::<u8>(), 0..200),
            after in proptest::collection::vec(any::<u8>(), 0..200),
            form in 0usize..4,
            cuts in proptest::collection::vec(0usize..500, 0..8),
        ) {
            let forms = [SECRET.to_vec(), base64(SECRET, STD), base64(SECRET, URL), percent(SECRET, true)];
            let mut text = before.clone();
            text.extend_from_slice(&forms[form]);
            text.extend_from_slice(&after);
            let mut whole = redactor();
            let mut expect = whole.push(&text);
            expect.extend(whole.finish());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut r = redactor();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                got.extend(r.push(&text[last..c]));
                last = c;
            }
            got.extend(r.finish());
            prop_assert_eq!(&got, &expect);
            prop_assert!(find(&got, SECRET, got.len()).is_none());
            prop_assert!(find(&got, b"[REDACTED:api]", got.len()).is_some());

            let mut none = Redactor::new(&[("x", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7")]);
            let mut plain = Vec::new();
            for piece in text.chunks(7) {
                plain.extend(none.push(piece));
            }
            plain.extend(none.finish());
            let no_secret = find(&text, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7", text.len()).is_none();
            if no_secret {
                prop_assert_eq!(plain, text);
            }
        }
    }
}
