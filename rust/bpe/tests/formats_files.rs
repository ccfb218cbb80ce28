//! Vocabulary file formats: tiktoken, GPT-2 data-gym, Hugging Face tokenizer.json.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::path::{Path, PathBuf};

use bpe::encode::Bpe;
use bpe::formats::{
    bytes_to_unicode, load_gpt2, load_tiktoken, read_hf_json, unicode_to_bytes, write_hf_json, HfBpe,
    HF_BYTELEVEL_PATTERN,
};
use bpe::pretokenize::GPT2_PATTERN;
use bpe::BpeError;

/// A fresh temporary directory for this test.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fastllm-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vocab_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FASTLLM_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/vocab"));
    if dir.join("gpt2_encoder.json").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: real vocabularies not found in {}", dir.display());
        None
    }
}

fn format_line(e: &BpeError) -> Option<usize> {
    match e {
        BpeError::Format { line, .. } => *line,
        other => panic!("expected a Format error, got {other:?}"),
    }
}

#[test]
fn formats_byte_map() {
    let m = bytes_to_unicode();
    let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
    assert_eq!(m[b' ' as usize], 'Ġ');
    assert_eq!(m[0], 'Ā');
    assert_eq!(m[0xAD], 'Ń');
    assert_eq!(unicode_to_bytes("ĠhelloĊ"), Some(b" hello\n".to_vec()));
    assert_eq!(unicode_to_bytes("a b"), None);
    assert_eq!(unicode_to_bytes("Ő"), None); // U+0150: past the map
}

#[test]
fn formats_tiktoken_load_and_errors() {
    let d = tmp_dir("tiktoken");
    let good = d.join("good.tiktoken");
    let mut text = String::new();
    for b in 0..=255u8 {
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::STANDARD.encode([b]);
        text.push_str(&format!("{enc} {}\n", b as u32));
    }
    text.push_str("YWI= 300\n\n"); // "ab" after a gap, then a blank line
    std::fs::write(&good, &text).unwrap();
    let v = load_tiktoken(&good).unwrap();
    assert_eq!(v.len(), 301);
    assert_eq!(v[300].as_deref(), Some(&b"ab"[..]));
    assert!(v[256..300].iter().all(Option::is_none));
    let bpe = Bpe::from_ranks(v).unwrap();
    let mut out = Vec::new();
    bpe.encode_piece(b"abab", &mut out);
    assert_eq!(out, vec![300, 300]);

    // missing file -> Io
    match load_tiktoken(&d.join("missing.tiktoken")) {
        Err(BpeError::Io { path, .. }) => assert!(path.ends_with("missing.tiktoken")),
        other => panic!("{other:?}"),
    }
    for (bad, line, what) in [
        ("IQ== 0\nIg== 1\n!!!! 2\n", 3, "base64"),
        ("IQ== 0\nIg== x\n", 2, "rank"),
        ("IQ== 0\nIg== 0\n", 2, "twice"),
        ("IQ== 0\nIQ== 1\n", 2, "twice"),
        ("IQ==\n", 1, "expected"),
        ("IQ== 0 7\n", 1, "expected"),
        ("IQ== 99999999999\n", 1, "too large"),
    ] {
        let p = d.join("bad.tiktoken");
        std::fs::write(&p, bad).unwrap();
        let e = load_tiktoken(&p).unwrap_err();
        assert_eq!(format_line(&e), Some(line), "{bad:?}: {e}");
        assert!(e.to_string().contains(what), "{bad:?}: {e}");
        assert!(e.to_string().contains("bad.tiktoken"), "{e}");
    }
    std::fs::write(d.join("bin.tiktoken"), b"IQ== 0\n\xff\xfe 1\n").unwrap();
    let e = load_tiktoken(&d.join("bin.tiktoken")).unwrap_err();
    assert_eq!(format_line(&e), Some(2));
}

/// Mini GPT-2 files: 256 byte tokens (GPT-2's order), merges "Ġ t" and "Ġt he"... written here.
fn write_mini_gpt2(d: &Path, merges: &[(&str, &str)], extra: &[(&str, u32)]) -> (PathBuf, PathBuf) {
    let m = bytes_to_unicode();
    let mut enc = serde_json::Map::new();
    for b in 0..=255u8 {
        enc.insert(m[b as usize].to_string(), (b as u32).into());
    }
    for (i, (a, b)) in merges.iter().enumerate() {
        enc.insert(format!("{a}{b}"), (256 + i as u32).into());
    }
    for (k, v) in extra {
        enc.insert(k.to_string(), (*v).into());
    }
    let ej = d.join("encoder.json");
    std::fs::write(&ej, serde_json::to_string(&enc).unwrap()).unwrap();
    let mut bpe = String::from("#version: 0.2\n");
    for (a, b) in merges {
        bpe.push_str(&format!("{a} {b}\n"));
    }
    let vb = d.join("vocab.bpe");
    std::fs::write(&vb, bpe).unwrap();
    (ej, vb)
}

#[test]
fn formats_gpt2_mini_and_errors() {
    let d = tmp_dir("gpt2");
    let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")];
    let (ej, vb) = write_mini_gpt2(&d, &merges, &[("<|endoftext|>", 259), ("<|startoftext|>", 260)]);
    let (vocab, specials) = load_gpt2(&ej, &vb).unwrap();
    assert_eq!(vocab.len(), 259);
    assert_eq!(vocab[258].as_deref(), Some(&b" the"[..]));
    assert_eq!(specials, vec![("<|endoftext|>".to_string(), 259), ("<|startoftext|>".to_string(), 260)]);

    // vocab.bpe disagreeing with encoder.json: line 3 (second merge) is wrong
    std::fs::write(&vb, "#version: 0.2\nĠ t\nh x\nĠt he\n").unwrap();
    let e = load_gpt2(&ej, &vb).unwrap_err();
    assert_eq!(format_line(&e), Some(3), "{e}");
    assert!(e.to_string().contains("vocab.bpe"), "{e}");
    // a merge line that is not two byte-level strings
    std::fs::write(&vb, "#version: 0.2\nĠ t\nh\n").unwrap();
    assert_eq!(format_line(&load_gpt2(&ej, &vb).unwrap_err()), Some(3));
    // fewer merges than tokens
    std::fs::write(&vb, "#version: 0.2\nĠ t\n").unwrap();
    assert!(load_gpt2(&ej, &vb).unwrap_err().to_string().contains("1 merges"));
    // broken JSON
    std::fs::write(&ej, "{\n\"a\": 1,\n oops}").unwrap();
    assert_eq!(format_line(&load_gpt2(&ej, &vb).unwrap_err()), Some(3));
    // missing file
    assert!(matches!(load_gpt2(&d.join("nope.json"), &vb), Err(BpeError::Io { .. })));
}

#[test]
fn formats_gpt2_real() {
    let Some(dir) = vocab_dir() else { return };
    let (vocab, specials) = load_gpt2(&dir.join("gpt2_encoder.json"), &dir.join("gpt2_vocab.bpe")).unwrap();
    assert_eq!(vocab.len() + specials.len(), 50257);
    assert_eq!(specials, vec![("<|endoftext|>".to_string(), 50256)]);
    assert_eq!(vocab[31373].as_deref(), Some(&b"hello"[..]));
    assert_eq!(vocab[995].as_deref(), Some(&b" world"[..]));
}

fn small_hf() -> HfBpe {
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    vocab.push(Some(b" t".to_vec())); // 256
    vocab.push(Some(b"he".to_vec())); // 257
    vocab.push(None); // 258: gap
    vocab.push(Some(b" the".to_vec())); // 259
    vocab.push(Some("é".as_bytes().to_vec())); // 260
    HfBpe {
        pattern: GPT2_PATTERN.to_string(),
        vocab,
        merges: vec![(32, 116), (104, 101), (256, 257), (0xC3, 0xA9)],
        specials: vec![
            ("<|endoftext|>".to_string(), 261),
            ("<|im start|>".to_string(), 262), // a space: not a byte-level string
            ("<|ü|>".to_string(), 258),        // in the gap
        ],
        ..Default::default()
    }
}

#[test]
fn formats_hf_round_trip() {
    let t = small_hf();
    let json = write_hf_json(&t).unwrap();
    let back = read_hf_json(&json, "mem.json").unwrap();
    assert_eq!(back, t);
    // vocab is written in id order
    let v = json.find("\"vocab\"").unwrap();
    let (a, b) = (json[v..].find("\"Ġt\": 256").unwrap(), json[v..].find("\"Ġthe\": 259").unwrap());
    assert!(a < b);
    // valid JSON with the expected structure
    let val: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(val["model"]["merges"][2], serde_json::json!(["Ġt", "he"]));
    assert_eq!(val["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], GPT2_PATTERN);
    assert_eq!(val["added_tokens"][1]["content"], "<|im start|>");
    assert_eq!(val["model"]["vocab"]["<|im start|>"], 262);
}

/// A normalizer and added tokens with flags survive write + read, and the tokenizer built from
/// them gives the added tokens' ids and text back.
#[test]
fn formats_hf_round_trip_text_level() {
    use bpe::normalize::NormStep;
    use bpe::special::AddedToken;
    let mut t = small_hf();
    t.normalizer = vec![NormStep::Nfkc, NormStep::Lowercase];
    let plain =
        |content: &str, id: u32| AddedToken { special: false, normalized: true, ..AddedToken::special(content, id) };
    t.added_tokens = t.specials.iter().map(|(c, id)| AddedToken::special(c, *id)).collect();
    t.added_tokens[0].lstrip = true;
    t.added_tokens.push(AddedToken { rstrip: true, single_word: true, ..plain("<tok>", 263) });
    t.added_tokens.push(AddedToken { normalized: false, ..plain("he", 257) }); // also a BPE token
    let json = write_hf_json(&t).unwrap();
    let back = read_hf_json(&json, "mem.json").unwrap();
    assert_eq!(back, t);
    let tok = bpe::Tokenizer::from_hf(back).unwrap();
    assert_eq!(tok.added_tokens(), [("<tok>".to_string(), 263), ("he".to_string(), 257)]);
    assert_eq!(tok.token_bytes(263), Some(&b"<tok>"[..]));
    assert_eq!(tok.vocab_size(), 264);
    assert_eq!(tok.to_hf(), t);
}

#[test]
fn formats_hf_round_trip_gpt2_real() {
    let Some(dir) = vocab_dir() else { return };
    let (vocab, specials) = load_gpt2(&dir.join("gpt2_encoder.json"), &dir.join("gpt2_vocab.bpe")).unwrap();
    let merges = Bpe::from_ranks(vocab.clone()).unwrap().merges();
    let t = HfBpe { pattern: GPT2_PATTERN.to_string(), vocab, merges, specials, ..Default::default() };
    let json = write_hf_json(&t).unwrap();
    assert_eq!(read_hf_json(&json, "gpt2.json").unwrap(), t);
}

/// Written by tokenizers 0.23 (`Tokenizer.to_str()`): ByteLevel(use_regex=True) pre-tokenizer,
/// byte tokens in sorted-char order, merges Ġ t / h e / Ġt he, <|endoftext|> in vocab and added.
const HF_GENERATED: &str = concat!(
    r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":259,"content":"<|e"###,
    r###"ndoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special""###,
    r###":true}],"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"tr"###,
    r###"im_offsets":true,"use_regex":true},"post_processor":{"type":"ByteLevel","add_prefix_space""###,
    r###":true,"trim_offsets":false,"use_regex":true},"decoder":{"type":"ByteLevel","add_prefix_spa"###,
    r###"ce":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_t"###,
    r###"oken":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"by"###,
    r###"te_fallback":false,"ignore_merges":false,"vocab":{"!":0,"\"":1,"#":2,"$":3,"%":4,"&":5,"'""###,
    r###":6,"(":7,")":8,"*":9,"+":10,",":11,"-":12,".":13,"/":14,"0":15,"1":16,"2":17,"3":18,"4":19"###,
    r###","5":20,"6":21,"7":22,"8":23,"9":24,":":25,";":26,"<":27,"=":28,">":29,"?":30,"@":31,"A":3"###,
    r###"2,"B":33,"C":34,"D":35,"E":36,"F":37,"G":38,"H":39,"I":40,"J":41,"K":42,"L":43,"M":44,"N":"###,
    r###"45,"O":46,"P":47,"Q":48,"R":49,"S":50,"T":51,"U":52,"V":53,"W":54,"X":55,"Y":56,"Z":57,"[""###,
    r###":58,"\\":59,"]":60,"^":61,"_":62,"`":63,"a":64,"b":65,"c":66,"d":67,"e":68,"f":69,"g":70,""###,
    r###"h":71,"i":72,"j":73,"k":74,"l":75,"m":76,"n":77,"o":78,"p":79,"q":80,"r":81,"s":82,"t":83,"###,
    r###""u":84,"v":85,"w":86,"x":87,"y":88,"z":89,"{":90,"|":91,"}":92,"~":93,"¡":94,"¢":95,"£":96"###,
    r###","¤":97,"¥":98,"¦":99,"§":100,"¨":101,"©":102,"ª":103,"«":104,"¬":105,"®":106,"¯":107,"°":"###,
    r###"108,"±":109,"²":110,"³":111,"´":112,"µ":113,"¶":114,"·":115,"¸":116,"¹":117,"º":118,"»":11"###,
    r###"9,"¼":120,"½":121,"¾":122,"¿":123,"À":124,"Á":125,"Â":126,"Ã":127,"Ä":128,"Å":129,"Æ":130,"###,
    r###""Ç":131,"È":132,"É":133,"Ê":134,"Ë":135,"Ì":136,"Í":137,"Î":138,"Ï":139,"Ð":140,"Ñ":141,"Ò"###,
    r###"":142,"Ó":143,"Ô":144,"Õ":145,"Ö":146,"×":147,"Ø":148,"Ù":149,"Ú":150,"Û":151,"Ü":152,"Ý":"###,
    r###"153,"Þ":154,"ß":155,"à":156,"á":157,"â":158,"ã":159,"ä":160,"å":161,"æ":162,"ç":163,"è":16"###,
    r###"4,"é":165,"ê":166,"ë":167,"ì":168,"í":169,"î":170,"ï":171,"ð":172,"ñ":173,"ò":174,"ó":175,"###,
    r###""ô":176,"õ":177,"ö":178,"÷":179,"ø":180,"ù":181,"ú":182,"û":183,"ü":184,"ý":185,"þ":186,"ÿ"###,
    r###"":187,"Ā":188,"ā":189,"Ă":190,"ă":191,"Ą":192,"ą":193,"Ć":194,"ć":195,"Ĉ":196,"ĉ":197,"Ċ":"###,
    r###"198,"ċ":199,"Č":200,"č":201,"Ď":202,"ď":203,"Đ":204,"đ":205,"Ē":206,"ē":207,"Ĕ":208,"ĕ":20"###,
    r###"9,"Ė":210,"ė":211,"Ę":212,"ę":213,"Ě":214,"ě":215,"Ĝ":216,"ĝ":217,"Ğ":218,"ğ":219,"Ġ":220,"###,
    r###""ġ":221,"Ģ":222,"ģ":223,"Ĥ":224,"ĥ":225,"Ħ":226,"ħ":227,"Ĩ":228,"ĩ":229,"Ī":230,"ī":231,"Ĭ"###,
    r###"":232,"ĭ":233,"Į":234,"į":235,"İ":236,"ı":237,"Ĳ":238,"ĳ":239,"Ĵ":240,"ĵ":241,"Ķ":242,"ķ":"###,
    r###"243,"ĸ":244,"Ĺ":245,"ĺ":246,"Ļ":247,"ļ":248,"Ľ":249,"ľ":250,"Ŀ":251,"ŀ":252,"Ł":253,"ł":25"###,
    r###"4,"Ń":255,"Ġt":256,"he":257,"Ġthe":258,"<|endoftext|>":259},"merges":[["Ġ","t"],["h","e"],"###,
    r###"["Ġt","he"]]}}"###,
);

#[test]
fn formats_hf_read_tokenizers_output() {
    let t = read_hf_json(HF_GENERATED, "tiny.json").unwrap();
    assert_eq!(t.pattern, HF_BYTELEVEL_PATTERN);
    assert_eq!(t.specials, vec![("<|endoftext|>".to_string(), 259)]);
    assert_eq!(t.vocab.len(), 259); // the special's vocab entry is not a BPE token
    let id = |s: &[u8]| t.vocab.iter().position(|v| v.as_deref() == Some(s)).unwrap() as u32;
    assert_eq!(t.merges, vec![(id(b" "), id(b"t")), (id(b"h"), id(b"e")), (id(b" t"), id(b"he"))]);
    let bpe = Bpe::from_merges(t.vocab.clone(), &t.merges).unwrap();
    let mut out = Vec::new();
    for piece in [&b" the"[..], b" the", b"me"] {
        bpe.encode_piece(piece, &mut out);
    }
    // tokenizers: " the theme" -> [258, 258, 76, 68]
    assert_eq!(out, vec![258, 258, 76, 68]);
}

/// A minimal hand-written tokenizer.json: "a b" merges, Split + ByteLevel(use_regex=false).
#[test]
fn formats_hf_read_hand_written() {
    let m = bytes_to_unicode();
    let mut vocab: Vec<String> =
        (0..=255u8).map(|b| format!("{}: {b}", serde_json::to_string(&m[b as usize].to_string()).unwrap())).collect();
    vocab.push("\"ab\": 256".into());
    vocab.push("\"abĠ\": 257".into());
    let json = format!(
        r#"{{
  "version": "1.0",
  "added_tokens": [{{"id": 258, "content": "<pad>", "special": true}}],
  "normalizer": null,
  "pre_tokenizer": {{"type": "Sequence", "pretokenizers": [
      {{"type": "Split", "pattern": {{"Regex": "\\s?\\w+|\\s"}}, "behavior": "Isolated", "invert": false}},
      {{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}}]}},
  "model": {{"type": "BPE", "vocab": {{{}}}, "merges": ["a b", "ab Ġ"]}}
}}"#,
        vocab.join(", ")
    );
    let t = read_hf_json(&json, "hand.json").unwrap();
    assert_eq!(t.pattern, r"\s?\w+|\s");
    assert_eq!(t.merges, vec![(97, 98), (256, 32)]);
    assert_eq!(t.specials, vec![("<pad>".to_string(), 258)]);
    assert_eq!(t.vocab[257].as_deref(), Some(&b"ab "[..]));
    // and it writes back to an equivalent file
    assert_eq!(read_hf_json(&write_hf_json(&t).unwrap(), "again.json").unwrap(), t);
}

#[test]
fn formats_hf_rejects_what_we_cannot_reproduce() {
    let base: serde_json::Value = serde_json::from_str(HF_GENERATED).unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/model/type", "WordPiece".into(), "model.type"),
        ("/model/dropout", 0.1.into(), "model.dropout"),
        ("/model/continuing_subword_prefix", "##".into(), "continuing_subword_prefix"),
        ("/model/end_of_word_suffix", "</w>".into(), "end_of_word_suffix"),
        ("/model/ignore_merges", "yes".into(), "model.ignore_merges"),
        ("/model/byte_fallback", true.into(), "model.byte_fallback"),
        ("/normalizer", serde_json::json!({"type": "Replace"}), "normalizer is \"Replace\""),
        ("/pre_tokenizer", serde_json::json!({"type": "Whitespace"}), "pre_tokenizer"),
        ("/pre_tokenizer", serde_json::Value::Null, "pre_tokenizer"),
        ("/pre_tokenizer", serde_json::json!({"type": "ByteLevel", "use_regex": false}), "pre_tokenizer"),
        (
            "/post_processor",
            serde_json::json!({"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}}),
            "post_processor.single",
        ),
        ("/post_processor", serde_json::json!({"type": "BertProcessing"}), "post_processor"),
        ("/added_tokens/0/lstrip", "yes".into(), "lstrip is \"yes\""),
        ("/added_tokens/0/id", 7.into(), "added_tokens[0]"),
        ("/model/merges/0", serde_json::json!(["Ġ", "zz"]), "model.merges[0]"),
        ("/model/merges/1", "h e x".into(), "model.merges[1]"),
        ("/model/vocab/a b", 300.into(), "model.vocab"),
    ];
    for (ptr, value, needle) in cases {
        let mut v = base.clone();
        if let Some((parent, key)) = ptr.rsplit_once('/') {
            let slot = v.pointer_mut(parent).unwrap();
            match slot {
                serde_json::Value::Object(o) => {
                    o.insert(key.to_string(), value);
                }
                serde_json::Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
                _ => unreachable!(),
            }
        }
        let e = read_hf_json(&v.to_string(), "t.json").unwrap_err();
        assert!(matches!(e, BpeError::Format { .. }), "{ptr}: {e:?}");
        assert!(e.to_string().contains(needle), "{ptr}: {e}");
    }
    // invalid JSON: the line is reported
    let e = read_hf_json("{\n\"model\":\n}", "broken.json").unwrap_err();
    assert_eq!(format_line(&e), Some(3));
    assert!(e.to_string().starts_with("broken.json:3"), "{e}");
}

#[test]
fn formats_hf_write_errors() {
    let mut t = small_hf();
    t.specials.push(("<x>".into(), 256)); // the id of a token
    assert!(write_hf_json(&t).is_err());
    let mut t = small_hf();
    t.specials.push(("Ġt".into(), 300)); // the text of token 256's vocab key
    assert!(write_hf_json(&t).is_err());
    let mut t = small_hf();
    t.merges.push((1, 2)); // result not in vocab
    assert!(write_hf_json(&t).is_err());
    let mut t = small_hf();
    t.merges.push((258, 2)); // unused id
    assert!(write_hf_json(&t).is_err());
}

#[test]
fn formats_hf_round_trip_model_options() {
    use bpe::formats::{HfTemplate, HfTemplateSpecial, PrefixSpace, HF_BYTELEVEL_PATTERN};
    let special =
        |name: &str, id: u32| HfTemplateSpecial { name: name.into(), ids: vec![id], tokens: vec![name.into()] };
    let mut t = small_hf();
    t.vocab[0x00] = None; // a byte without a token
    t.ignore_merges = true;
    t.prefix_space = PrefixSpace::Piece;
    t.unk_token = Some("<|endoftext|>".into());
    t.fuse_unk = true;
    t.template =
        Some(HfTemplate { prefix: vec![special("<|endoftext|>", 261)], suffix: vec![special("<|im start|>", 262)] });
    let json = write_hf_json(&t).unwrap();
    assert_eq!(read_hf_json(&json, "opts.json").unwrap(), t);
    // HfBpe is the full description: serde keeps every field
    let again: HfBpe = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(again, t);
    // a prefix space per segment is ByteLevel(use_regex=true) alone, with GPT-2's pattern only
    t.prefix_space = PrefixSpace::Segment;
    t.pattern = r"\S+|\s+".into();
    assert!(write_hf_json(&t).is_err());
    t.pattern = HF_BYTELEVEL_PATTERN.to_string();
    let json = write_hf_json(&t).unwrap();
    assert!(json.contains(r#""pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true"#), "{json}");
    assert_eq!(read_hf_json(&json, "segment.json").unwrap(), t);
}

#[test]
fn formats_hf_split_regex_is_read_as_oniguruma() {
    use bpe::formats::pattern_from_onig;
    for (onig, ours) in [
        (r"\p{N}{1,3}+", r"(?:\p{N}{1,3})+"),
        (r"\d{2}+|x", r"(?:\d{2})+|x"),
        (r"\d{2,}+", r"(?:\d{2,})+"),
        (r"a{1,2}*", r"(?:a{1,2})*"),
        (r"\d{2}?", r"(?:\d{2})?"),
        (r"\d{2,3}?", r"\d{2,3}?"), // lazy in both
        (r"(?>\p{N}{1,3})", r"\p{N}{1,3}+"),
        (r"(ab){2}+", r"(?:(ab){2})+"),
        (r"[0-9]{3}+", r"(?:[0-9]{3})+"),
        (r"\p{N}{1,3}", r"\p{N}{1,3}"),
        (r"\p{N}++", r"\p{N}++"),
    ] {
        assert_eq!(pattern_from_onig(onig), ours, "{onig}");
    }
}
