//! Text normalization before shingling, so that trivially different copies of a document
//! (accents composed or not, case, spacing, optionally punctuation) produce the same shingles.
//!
//! Steps, in order: Unicode NFC; lowercase (full, context-free per-character mapping of
//! `char::to_lowercase`, so 'Σ' always becomes 'σ'); optional removal of punctuation (general
//! category P*, table below); runs of Unicode `White_Space` collapsed to one ' ' and trimmed.
//! Runs of ASCII (most of real text) take a branch-free byte loop; other characters go one by
//! one through the general definition (`Writer::push_char`). `tests/features_normalize.rs` checks
//! both against a plain multi-pass oracle.
//!
//! Stability: the punctuation table is frozen here (Unicode 18.0, generated with `unicodedata2`);
//! NFC comes from `unicode-normalization` and lowercase from Rust's std, whose Unicode versions
//! move with those dependencies (only characters new in a Unicode version are affected).

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// What `normalize` does; every step can be switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Map to lowercase (full Unicode mapping, not only ASCII).
    pub lowercase: bool,
    /// Compose to Unicode NFC ("e\u{301}" -> "é").
    pub nfc: bool,
    /// Collapse runs of Unicode White_Space to one ' ' and trim both ends.
    pub collapse_whitespace: bool,
    /// Delete characters of general category P* (punctuation; not symbols such as '$' or '+').
    pub strip_punctuation: bool,
}

impl Default for NormalizeOptions {
    /// Lowercase, NFC and whitespace collapsing on; punctuation kept (as datasketch/rensa users
    /// shingle raw words, and punctuation often separates otherwise different texts).
    fn default() -> Self {
        Self { lowercase: true, nfc: true, collapse_whitespace: true, strip_punctuation: false }
    }
}

/// Normalized copy of `text` (see the module docs for the exact steps).
pub fn normalize(text: &str, opts: &NormalizeOptions) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, opts, &mut out);
    out
}

/// Like `normalize`, but writes into `out` (cleared first) so a caller can reuse the buffer.
pub fn normalize_into(text: &str, opts: &NormalizeOptions, out: &mut String) {
    // NFC is skipped when the quick check proves the text already is NFC (all ASCII text, and
    // most other real text); only then is a composed copy made.
    let composed: String;
    let src = if opts.nfc && !text.is_ascii() && is_nfc_quick(text.chars()) != IsNormalized::Yes {
        composed = text.nfc().collect();
        composed.as_str()
    } else {
        text
    };
    let mut w = Writer { buf: std::mem::take(out).into_bytes(), opts: *opts, last_space: true };
    w.buf.clear();
    w.buf.reserve(src.len());
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // An ASCII run goes through the byte loop; a non-ASCII character through `push_char`.
        let run = bytes[i..].iter().position(|&b| b >= 0x80).unwrap_or(bytes.len() - i);
        w.push_ascii(&bytes[i..i + run]);
        i += run;
        if let Some(c) = src.get(i..).and_then(|rest| rest.chars().next()) {
            if opts.lowercase {
                c.to_lowercase().for_each(|l| w.push_char(l));
            } else {
                w.push_char(c);
            }
            i += c.len_utf8();
        }
    }
    if opts.collapse_whitespace && w.buf.last() == Some(&b' ') {
        w.buf.pop(); // trailing whitespace (with collapsing on, every ' ' comes from a run)
    }
    // Only whole characters and ASCII bytes were written, so this never takes the lossy branch.
    *out = String::from_utf8(w.buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// The output being built, with the whitespace-collapsing state shared by both loops.
struct Writer {
    buf: Vec<u8>,
    opts: NormalizeOptions,
    /// The last byte written is a collapsed space, or nothing is written yet (which trims the start).
    last_space: bool,
}

impl Writer {
    /// One (already lowercased) character of any kind: the definition the ASCII loop must match.
    fn push_char(&mut self, c: char) {
        if self.opts.strip_punctuation && is_punctuation(c) {
            return;
        }
        if self.opts.collapse_whitespace && c.is_whitespace() {
            if !self.last_space {
                self.buf.push(b' ');
                self.last_space = true;
            }
            return;
        }
        self.buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        self.last_space = false;
    }

    /// A run of ASCII bytes, without branches on the data: every byte is written at the write
    /// position, which then advances only if the byte is kept. NFC is the identity on ASCII and
    /// lowercase maps ASCII to ASCII, so 128-entry tables (output byte, is-space, is-punctuation)
    /// say everything.
    fn push_ascii(&mut self, run: &[u8]) {
        if self.opts.strip_punctuation {
            self.push_ascii_stripping(run);
            return;
        }
        // Without stripping, whether a space is dropped depends only on the previous input byte,
        // so the loop carries no state but the write position, and table look-ups replace the
        // data-dependent branches. Performance notes (IMDB text, 1 thread): a loop carrying
        // "last kept byte was a space" took ~4 ns/byte, a branch on "is space" mispredicted once
        // a word (~4 ns/byte); this one takes ~1 ns/byte.
        let map = ascii_map(self.opts);
        let spaces = if self.opts.collapse_whitespace { &ASCII_SPACE } else { &[false; 128] };
        let mut w = self.buf.len();
        self.buf.resize(w + run.len(), 0);
        let mut prev_space = self.last_space;
        for &b in run {
            let i = usize::from(b & 0x7F);
            let space = spaces[i];
            if let Some(slot) = self.buf.get_mut(w) {
                *slot = map[i];
            }
            w += usize::from(!(space & prev_space));
            prev_space = space;
        }
        self.buf.truncate(w);
        self.last_space = prev_space;
    }

    /// `push_ascii` when punctuation is stripped: a space after removed punctuation is dropped if a
    /// space was kept before it ("a , b" -> "a b"), so the state is the last kept byte.
    fn push_ascii_stripping(&mut self, run: &[u8]) {
        let map = ascii_map(self.opts);
        let collapse = self.opts.collapse_whitespace;
        let mut w = self.buf.len();
        self.buf.resize(w + run.len(), 0);
        let mut last_space = self.last_space;
        for &b in run {
            let i = usize::from(b & 0x7F);
            let space = collapse & ASCII_SPACE[i];
            let skip = ASCII_PUNCT[i] | (space & last_space);
            if let Some(slot) = self.buf.get_mut(w) {
                *slot = map[i];
            }
            w += usize::from(!skip);
            last_space = if skip { last_space } else { space };
        }
        self.buf.truncate(w);
        self.last_space = last_space;
    }
}

/// The output byte of each ASCII byte: lowercased or not, White_Space mapped to ' ' or not.
fn ascii_map(opts: NormalizeOptions) -> &'static [u8; 128] {
    match (opts.lowercase, opts.collapse_whitespace) {
        (true, true) => &MAP_LOWER_COLLAPSE,
        (true, false) => &MAP_LOWER,
        (false, true) => &MAP_COLLAPSE,
        (false, false) => &MAP_IDENTITY,
    }
}

const MAP_LOWER_COLLAPSE: [u8; 128] = map_table(true, true);
const MAP_LOWER: [u8; 128] = map_table(true, false);
const MAP_COLLAPSE: [u8; 128] = map_table(false, true);
const MAP_IDENTITY: [u8; 128] = map_table(false, false);

const fn map_table(lowercase: bool, collapse: bool) -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = if collapse && ASCII_SPACE[b] {
            b' '
        } else if lowercase {
            (b as u8).to_ascii_lowercase()
        } else {
            b as u8
        };
        b += 1;
    }
    t
}

/// Unicode White_Space within ASCII: TAB, LF, VT, FF, CR and SPACE (`u8::is_ascii_whitespace`
/// leaves out VT, which `char::is_whitespace` includes).
const ASCII_SPACE: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = matches!(b as u8, b'\t'..=b'\r' | b' ');
        b += 1;
    }
    t
};

/// General category P* within ASCII. Unlike `u8::is_ascii_punctuation`, this leaves out the symbols
/// `$ + < = > ^ ` | ~` (categories Sc, Sm, Sk), as `is_punctuation` does.
const ASCII_PUNCT: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = matches!(
            b as u8,
            b'!'..=b'#' | b'%'..=b'*' | b','..=b'/' | b':' | b';' | b'?' | b'@' | b'['..=b']' | b'_' | b'{' | b'}'
        );
        b += 1;
    }
    t
};

/// Whether `c` has general category Pc, Pd, Ps, Pe, Pi, Pf or Po (Unicode 18.0).
pub fn is_punctuation(c: char) -> bool {
    let cp = u32::from(c);
    if cp < 0x80 {
        return ASCII_PUNCT[cp as usize];
    }
    PUNCTUATION
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Inclusive code point ranges of general category P*, sorted and disjoint; generated from
/// Unicode 18.0 (`unicodedata2.category(c).startswith("P")`), 200 ranges, 860 code points.
#[rustfmt::skip]
pub const PUNCTUATION: &[(u32, u32)] = &[
    (0x0021, 0x0023), (0x0025, 0x002A), (0x002C, 0x002F), (0x003A, 0x003B), (0x003F, 0x0040),
    (0x005B, 0x005D), (0x005F, 0x005F), (0x007B, 0x007B), (0x007D, 0x007D), (0x00A1, 0x00A1),
    (0x00A7, 0x00A7), (0x00AB, 0x00AB), (0x00B6, 0x00B7), (0x00BB, 0x00BB), (0x00BF, 0x00BF),
    (0x037E, 0x037E), (0x0387, 0x0387), (0x055A, 0x055F), (0x0589, 0x058A), (0x05BE, 0x05BE),
    (0x05C0, 0x05C0), (0x05C3, 0x05C3), (0x05C6, 0x05C6), (0x05F3, 0x05F4), (0x0609, 0x060A),
    (0x060C, 0x060D), (0x061B, 0x061B), (0x061D, 0x061F), (0x066A, 0x066D), (0x06D4, 0x06D4),
    (0x0700, 0x070D), (0x07F7, 0x07F9), (0x0830, 0x083E), (0x085E, 0x085E), (0x0964, 0x0965),
    (0x0970, 0x0970), (0x09FD, 0x09FD), (0x0A76, 0x0A76), (0x0AF0, 0x0AF0), (0x0C77, 0x0C77),
    (0x0C84, 0x0C84), (0x0DF4, 0x0DF4), (0x0E4F, 0x0E4F), (0x0E5A, 0x0E5B), (0x0F04, 0x0F12),
    (0x0F14, 0x0F14), (0x0F3A, 0x0F3D), (0x0F85, 0x0F85), (0x0FD0, 0x0FD4), (0x0FD9, 0x0FDA),
    (0x104A, 0x104F), (0x10FB, 0x10FB), (0x1360, 0x1368), (0x1400, 0x1400), (0x166E, 0x166E),
    (0x169B, 0x169C), (0x16EB, 0x16ED), (0x1735, 0x1736), (0x17D4, 0x17D6), (0x17D8, 0x17DA),
    (0x1800, 0x180A), (0x1944, 0x1945), (0x1A1E, 0x1A1F), (0x1AA0, 0x1AA6), (0x1AA8, 0x1AAD),
    (0x1B4E, 0x1B4F), (0x1B5A, 0x1B60), (0x1B7D, 0x1B7F), (0x1BFC, 0x1BFF), (0x1C3B, 0x1C3F),
    (0x1C7E, 0x1C7F), (0x1CC0, 0x1CC7), (0x1CD3, 0x1CD3), (0x2010, 0x2027), (0x2030, 0x2043),
    (0x2045, 0x2051), (0x2053, 0x205E), (0x207D, 0x207E), (0x208D, 0x208E), (0x2308, 0x230B),
    (0x2329, 0x232A), (0x2768, 0x2775), (0x27C5, 0x27C6), (0x27E6, 0x27EF), (0x2983, 0x2998),
    (0x29D8, 0x29DB), (0x29FC, 0x29FD), (0x2CF9, 0x2CFC), (0x2CFE, 0x2CFF), (0x2D70, 0x2D70),
    (0x2E00, 0x2E2E), (0x2E30, 0x2E4F), (0x2E52, 0x2E5D), (0x2E60, 0x2E63), (0x3001, 0x3003),
    (0x3008, 0x3011), (0x3014, 0x301F), (0x3030, 0x3030), (0x303D, 0x303D), (0x30A0, 0x30A0),
    (0x30FB, 0x30FB), (0xA4FE, 0xA4FF), (0xA60D, 0xA60F), (0xA673, 0xA673), (0xA67E, 0xA67E),
    (0xA6F2, 0xA6F7), (0xA874, 0xA877), (0xA8CE, 0xA8CF), (0xA8F8, 0xA8FA), (0xA8FC, 0xA8FC),
    (0xA92E, 0xA92F), (0xA95F, 0xA95F), (0xA9C1, 0xA9CD), (0xA9DE, 0xA9DF), (0xAA5C, 0xAA5F),
    (0xAADE, 0xAADF), (0xAAF0, 0xAAF1), (0xABEB, 0xABEB), (0xFD3E, 0xFD3F), (0xFE10, 0xFE19),
    (0xFE30, 0xFE52), (0xFE54, 0xFE61), (0xFE63, 0xFE63), (0xFE68, 0xFE68), (0xFE6A, 0xFE6B),
    (0xFF01, 0xFF03), (0xFF05, 0xFF0A), (0xFF0C, 0xFF0F), (0xFF1A, 0xFF1B), (0xFF1F, 0xFF20),
    (0xFF3B, 0xFF3D), (0xFF3F, 0xFF3F), (0xFF5B, 0xFF5B), (0xFF5D, 0xFF5D), (0xFF5F, 0xFF65),
    (0x10100, 0x10102), (0x1039F, 0x1039F), (0x103D0, 0x103D0), (0x1056F, 0x1056F), (0x10857, 0x10857),
    (0x1091F, 0x1091F), (0x1093F, 0x1093F), (0x10A50, 0x10A58), (0x10A7F, 0x10A7F), (0x10AF0, 0x10AF6),
    (0x10B39, 0x10B3F), (0x10B99, 0x10B9C), (0x10D6E, 0x10D6E), (0x10EAD, 0x10EAD), (0x10ED0, 0x10ED0),
    (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x11047, 0x1104D), (0x110BB, 0x110BC), (0x110BE, 0x110C1),
    (0x11140, 0x11143), (0x11174, 0x11175), (0x111C5, 0x111C8), (0x111CD, 0x111CD), (0x111DB, 0x111DB),
    (0x111DD, 0x111DF), (0x11238, 0x1123D), (0x112A9, 0x112A9), (0x113D4, 0x113D5), (0x113D7, 0x113D8),
    (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D, 0x1145D), (0x114C6, 0x114C6), (0x115C1, 0x115D7),
    (0x11641, 0x11643), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1173C, 0x1173E), (0x1183B, 0x1183B),
    (0x11944, 0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2),
    (0x11B00, 0x11B09), (0x11BE1, 0x11BE1), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8),
    (0x11F43, 0x11F4F), (0x11FFF, 0x11FFF), (0x12470, 0x12474), (0x12FF1, 0x12FF2), (0x16A6E, 0x16A6F),
    (0x16AF5, 0x16AF5), (0x16B37, 0x16B3B), (0x16B44, 0x16B44), (0x16D6D, 0x16D6F), (0x16E97, 0x16E9A),
    (0x16FE2, 0x16FE2), (0x1BC9F, 0x1BC9F), (0x1DA87, 0x1DA8B), (0x1E5FF, 0x1E5FF), (0x1E95E, 0x1E95F),
];
