//! How token states become one vector: the pooling modes, and the sentence-transformers files
//! that choose them (`modules.json`, `1_Pooling/config.json`, `2_Normalize`,
//! `sentence_bert_config.json`), as both sentence-transformers 2–4 (`pooling_mode_*_tokens`
//! flags) and 5 (`pooling_mode`) write them.

use crate::config::Keys;
use crate::error::{read_json, ModelError, Result};
use std::path::Path;

/// How an encoder's last hidden states become one embedding per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean over the text's tokens (padding excluded).
    Mean,
    /// The sum over the text's tokens divided by the square root of their number.
    MeanSqrtLen,
    /// The first token's state (`[CLS]` / `<s>`).
    Cls,
    /// The last token's state.
    LastToken,
    /// The elementwise maximum over the text's tokens.
    Max,
}

impl Pooling {
    /// Every mode, by its name.
    pub const ALL: &'static [(&'static str, Pooling)] = &[
        ("mean", Pooling::Mean),
        ("mean_sqrt_len", Pooling::MeanSqrtLen),
        ("cls", Pooling::Cls),
        ("lasttoken", Pooling::LastToken),
        ("max", Pooling::Max),
    ];

    /// The mode called `name` (as `--pooling` and sentence-transformers spell it).
    pub fn from_name(name: &str) -> Option<Pooling> {
        // sentence-transformers 5 writes `mean_sqrt_len_tokens` in `pooling_mode`.
        let name = if name == "mean_sqrt_len_tokens" {
            "mean_sqrt_len"
        } else {
            name
        };
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .expect("every mode is listed")
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a sentence-transformers directory says about its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceConfig {
    /// The pooling module's mode.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows (unit-length vectors).
    pub normalize: bool,
    /// `sentence_bert_config.json`'s `max_seq_length`, when given (sentence-transformers 5
    /// keeps it as the tokenizer's `model_max_length` instead).
    pub max_seq_length: Option<usize>,
}

/// The pooling flags of `1_Pooling/config.json`, with the mode each one selects.
const POOLING_FLAGS: &[(&str, Option<Pooling>)] = &[
    ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
    (
        "pooling_mode_mean_sqrt_len_tokens",
        Some(Pooling::MeanSqrtLen),
    ),
    ("pooling_mode_cls_token", Some(Pooling::Cls)),
    ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
    ("pooling_mode_max_tokens", Some(Pooling::Max)),
    ("pooling_mode_weightedmean_tokens", None),
];

impl SentenceConfig {
    /// Reads the pipeline of a sentence-transformers directory; `None` when `dir` has no
    /// `modules.json` (a plain Hugging Face encoder directory).
    pub fn from_dir(dir: &Path) -> Result<Option<SentenceConfig>> {
        let modules_file = dir.join("modules.json");
        if !modules_file.is_file() {
            return Ok(None);
        }
        let modules = read_json(&modules_file)?;
        let list = modules.as_array().ok_or_else(|| {
            ModelError::config(&modules_file, "(top level)", "expected a list of modules")
        })?;
        let (mut pooling, mut normalize, mut transformer) = (None, false, false);
        for (i, m) in list.iter().enumerate() {
            let field = |key: &str| m.get(key).and_then(|v| v.as_str());
            let kind = field("type").ok_or_else(|| {
                ModelError::config(&modules_file, &format!("[{i}].type"), "missing (required)")
            })?;
            let short = kind.rsplit('.').next().unwrap_or(kind);
            match short {
                "Transformer" => transformer = true,
                "Pooling" => {
                    let path = dir.join(field("path").unwrap_or("1_Pooling"));
                    pooling = Some(read_pooling(&path.join("config.json"))?);
                }
                "Normalize" => normalize = true,
                other => {
                    return Err(ModelError::config(
                        &modules_file,
                        &format!("[{i}].type"),
                        format!("module '{other}' is not supported: Switchyard runs Transformer, Pooling and Normalize"),
                    ))
                }
            }
        }
        if !transformer {
            return Err(ModelError::config(
                &modules_file,
                "type",
                "no sentence_transformers.models.Transformer module",
            ));
        }
        let pooling = pooling.ok_or_else(|| {
            ModelError::config(
                &modules_file,
                "type",
                "no sentence_transformers.models.Pooling module",
            )
        })?;
        let st_file = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_file.is_file() {
            let json = read_json(&st_file)?;
            match json.as_object() {
                Some(map) => Keys {
                    file: &st_file,
                    map,
                }
                .opt_usize("max_seq_length")?,
                None => None,
            }
        } else {
            None
        };
        Ok(Some(SentenceConfig {
            pooling,
            normalize,
            max_seq_length,
        }))
    }
}

fn read_pooling(file: &Path) -> Result<Pooling> {
    let json = read_json(file)?;
    let map = json
        .as_object()
        .ok_or_else(|| ModelError::config(file, "(top level)", "expected a JSON object"))?;
    let k = Keys { file, map };
    let mut chosen = Vec::new();
    for (flag, mode) in POOLING_FLAGS {
        if k.bool_or(flag, false)? {
            let mode = mode.ok_or_else(|| {
                ModelError::config(file, flag, "weighted-mean pooling is not supported")
            })?;
            chosen.push((*flag, mode));
        }
    }
    // Newer files name the mode directly.
    if let Some(name) = k.opt_str("pooling_mode")? {
        let mode = Pooling::from_name(name).ok_or_else(|| {
            ModelError::config(file, "pooling_mode", format!("unknown mode '{name}'"))
        })?;
        if chosen.is_empty() {
            chosen.push(("pooling_mode", mode));
        }
    }
    match chosen.as_slice() {
        [(_, mode)] => Ok(*mode),
        [] => Err(ModelError::config(
            file,
            "pooling_mode_mean_tokens",
            "no pooling mode is set",
        )),
        many => Err(ModelError::config(
            file,
            many[1].0,
            format!(
                "several pooling modes are set ({}); Switchyard pools one way",
                many.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    /// The layout sentence-transformers 2–4 write (and most hub models ship): one flag per mode,
    /// `max_seq_length` in `sentence_bert_config.json`.
    #[test]
    fn reads_the_classic_layout() {
        let dir = dir_with(&[
            ("modules.json", MODULES),
            (
                "1_Pooling/config.json",
                r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
                    "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                    "pooling_mode_mean_sqrt_len_tokens": false}"#,
            ),
            (
                "sentence_bert_config.json",
                r#"{"max_seq_length": 256, "do_lower_case": false}"#,
            ),
        ]);
        assert_eq!(
            SentenceConfig::from_dir(dir.path()).unwrap(),
            Some(SentenceConfig {
                pooling: Pooling::Mean,
                normalize: true,
                max_seq_length: Some(256),
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let two_modes = dir_with(&[
            ("modules.json", MODULES),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
            ),
        ]);
        let err = SentenceConfig::from_dir(two_modes.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("several pooling modes"), "{err}");
        let dense = dir_with(&[(
            "modules.json",
            r#"[{"type": "sentence_transformers.models.Transformer"},
                {"type": "sentence_transformers.models.Dense", "path": "2_Dense"}]"#,
        )]);
        let err = SentenceConfig::from_dir(dense.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modules.json") && err.contains("'Dense'"),
            "{err}"
        );
        assert_eq!(
            SentenceConfig::from_dir(tempfile::tempdir().unwrap().path()).unwrap(),
            None
        );
        assert_eq!(
            Pooling::from_name("mean_sqrt_len_tokens"),
            Some(Pooling::MeanSqrtLen)
        );
    }
}
