//! The pre-tokenizers a byte-level BPE vocabulary names in `tokenizer.ggml.pre`, as the regular
//! expressions llama.cpp splits text with (applied in order, each splitting the pieces the one
//! before left, matches and the text between them both kept), and the way back: which name a
//! `tokenizer.json` pre-tokenizer is, for writing GGUF files.
//!
//! The patterns are facts of each tokenizer (they come from the models' own `tokenizer.json`
//! files, in the form llama.cpp uses them: case-insensitive groups spelled out).

use serde_json::{json, Value};

/// One pre-tokenizer kind.
pub(crate) struct PreTokenizer {
    /// `tokenizer.ggml.pre` values naming it; the first is the one written.
    pub names: &'static [&'static str],
    /// The split patterns, in order.
    pub patterns: &'static [&'static str],
    /// Words found whole in the vocabulary are taken as one token before any merge.
    pub ignore_merges: bool,
    /// The single pattern a `tokenizer.json` of this kind splits with (before its byte-level
    /// step), as the model ships it, when it differs from `patterns`.
    pub original: Option<&'static str>,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Han, and the ranges from U+0800 and of Hangul syllables, as DeepSeek's tokenizers group them.
const CJK: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";
/// DeepSeek LLM's letters: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee and other cased
/// scripts, as code point ranges.
const DEEPSEEK_LETTERS: &str = "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+";
/// Sentence punctuation of several scripts, excluded from words by BLOOM-family tokenizers.
const NOT_PUNCT: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+";

/// Every pre-tokenizer this crate reads.
pub(crate) const TABLE: &[PreTokenizer] = &[
    PreTokenizer {
        names: &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
            "exaone4",
        ],
        patterns: &[GPT2],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
            "dbrx",
            "smaug-bpe",
        ],
        patterns: &[LLAMA3],
        ignore_merges: true,
        original: Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    },
    PreTokenizer {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "stablelm2",
            "megrez",
            "hunyuan",
            "solar-open",
        ],
        patterns: &[QWEN2],
        ignore_merges: false,
        original: Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    },
    PreTokenizer {
        names: &["qwen35"],
        patterns: &[QWEN35],
        ignore_merges: false,
        original: Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    },
    PreTokenizer {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        patterns: &[r"\p{N}", GPT2],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["falcon"],
        patterns: &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["deepseek-llm"],
        patterns: &[
            "[\r\n]",
            DEEPSEEK_LETTERS,
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            r"\s+$",
            CJK,
            r"\p{N}+",
        ],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["deepseek-coder"],
        patterns: &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["chatglm-bpe"],
        patterns: &[LLAMA3],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["poro-chat", "bloom", "gpt3-finnish"],
        patterns: &[NOT_PUNCT],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["viking"],
        patterns: &[NOT_PUNCT, r"\p{N}"],
        ignore_merges: false,
        original: None,
    },
    PreTokenizer {
        names: &["default"],
        patterns: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        ignore_merges: false,
        original: None,
    },
];

/// The pre-tokenizer `name` stands for.
pub(crate) fn lookup(name: &str) -> Option<&'static PreTokenizer> {
    TABLE.iter().find(|p| p.names.contains(&name))
}

/// The names this crate reads, for error messages.
pub(crate) fn supported_names() -> String {
    TABLE
        .iter()
        .map(|p| p.names[0])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `tokenizer.json` pre-tokenizer of `p`: each pattern as an isolating split, then the
/// byte-level mapping (the patterns have done the splitting).
pub(crate) fn to_json(p: &PreTokenizer) -> Value {
    let mut steps: Vec<Value> = p
        .patterns
        .iter()
        .map(|r| {
            json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false})
        })
        .collect();
    steps.push(
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}),
    );
    json!({"type": "Sequence", "pretokenizers": steps})
}

/// The splitting patterns a `tokenizer.json` pre-tokenizer applies before its byte-level step,
/// or `None` when it is not a byte-level pre-tokenizer this module can describe.
fn patterns_of(pre: &Value) -> Option<Vec<String>> {
    let ty = pre.get("type")?.as_str()?;
    match ty {
        "ByteLevel" => Some(
            if pre
                .get("use_regex")
                .and_then(Value::as_bool)
                .unwrap_or(true)
            {
                vec![GPT2.to_string()]
            } else {
                vec![]
            },
        ),
        "Digits" if pre.get("individual_digits").and_then(Value::as_bool) == Some(true) => {
            Some(vec![r"\p{N}".to_string()])
        }
        "Digits" => Some(vec![r"\p{N}+".to_string()]),
        "Split" => {
            let isolated = pre.get("behavior").and_then(Value::as_str) == Some("Isolated");
            let inverted = pre.get("invert").and_then(Value::as_bool).unwrap_or(false);
            let regex = pre.get("pattern")?.get("Regex")?.as_str()?;
            (isolated && !inverted).then(|| vec![regex.to_string()])
        }
        "Sequence" => {
            let mut out = Vec::new();
            for step in pre.get("pretokenizers")?.as_array()? {
                out.extend(patterns_of(step)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The `tokenizer.ggml.pre` name of a byte-level BPE `tokenizer.json`'s pre-tokenizer, when it
/// is one llama.cpp implements.
pub(crate) fn detect(pre: &Value) -> Option<&'static str> {
    let found = patterns_of(pre)?;
    TABLE.iter().find_map(|p| {
        let same = found
            .iter()
            .map(String::as_str)
            .eq(p.patterns.iter().copied())
            || p.original
                .is_some_and(|o| found.len() == 1 && found[0] == o);
        same.then_some(p.names[0])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for p in TABLE {
            for n in p.names {
                assert!(seen.insert(*n), "{n} twice");
            }
            assert_eq!(
                detect(&to_json(p)).and_then(lookup).map(|q| q.patterns),
                Some(p.patterns)
            );
            // Every pattern compiles with the regex engine the tokenizers use.
            serde_json::from_value::<tokenizers::PreTokenizerWrapper>(to_json(p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.names[0]));
        }
    }

    #[test]
    fn detects_what_models_ship() {
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(detect(&smollm), Some("smollm"));
        let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true});
        assert_eq!(detect(&gpt2), Some("gpt-2"));
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": TABLE[1].original.unwrap()}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
        assert_eq!(detect(&llama3), Some("llama-bpe"));
        assert_eq!(detect(&json!({"type": "Whitespace"})), None);
    }
}
