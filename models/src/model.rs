//! A model on disk: config, weights, tokenizer and generation defaults, loaded together.

use crate::builtin::{builtin_config, RandomWeights};
use crate::chat::TokenizerConfig;
use crate::checkpoint::Checkpoint;
use crate::config::{Keys, ModelConfig};
use crate::error::{read_json, ModelError, Result};
use crate::hub::resolve_model;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use std::path::{Path, PathBuf};

/// `generation_config.json`: end-of-sequence ids and the model's sampling defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Tokens that end generation (the file may give one id or a list).
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// Default temperature, when the model's authors set one.
    pub temperature: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default top-p.
    pub top_p: Option<f32>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Whether the authors meant sampling (false: greedy).
    pub do_sample: Option<bool>,
}

impl GenerationConfig {
    /// Reads `generation_config.json`.
    pub fn from_file(path: &Path) -> Result<GenerationConfig> {
        let json = read_json(path)?;
        let map = json
            .as_object()
            .ok_or_else(|| ModelError::config(path, "(root)", "expected a JSON object"))?;
        let k = Keys { file: path, map };
        Ok(GenerationConfig {
            eos_token_ids: k.ids("eos_token_id")?,
            bos_token_id: k.opt_usize("bos_token_id")?.map(|v| v as u32),
            temperature: k.opt_f32("temperature")?,
            top_k: k.opt_usize("top_k")?,
            top_p: k.opt_f32("top_p")?,
            repetition_penalty: k.opt_f32("repetition_penalty")?,
            do_sample: map.get("do_sample").and_then(|v| v.as_bool()),
        })
    }
}

/// Everything read from a model directory (or made up for a built-in model). Weights stay
/// memory-mapped (or ungenerated) until an engine uploads them.
pub struct Model {
    /// The directory the model was read from (`builtin:NAME` for built-in models).
    pub dir: PathBuf,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// The weights.
    pub weights: Box<dyn WeightSource>,
    /// The tokenizer, when the directory has `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    /// Special tokens and the chat template, when the directory has `tokenizer_config.json`.
    pub tokenizer_config: Option<TokenizerConfig>,
    /// Generation defaults, when the directory has `generation_config.json`.
    pub generation_config: Option<GenerationConfig>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Model({}, {})", self.dir.display(), self.config.arch)
    }
}

/// Seed of the built-in models' random weights.
const BUILTIN_SEED: u64 = 0x5377_6974_6368_7961;

impl Model {
    /// Loads a model: `builtin:NAME` (random weights with a real model's shapes, see
    /// [`crate::BUILTIN_MODELS`]), a `.gguf` file (see [`crate::gguf::load_gguf`]), a directory,
    /// or a Hugging Face hub id (see [`resolve_model`]).
    ///
    /// ```no_run
    /// let model = switchyard_models::Model::load("tests/fixtures/llama").unwrap();
    /// println!("{} layers", model.config.num_layers);
    /// ```
    pub fn load(model: &str) -> Result<Model> {
        if let Some(name) = model.strip_prefix("builtin:") {
            return Self::builtin(name);
        }
        let path = Path::new(model);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            if !path.is_file() {
                return Err(ModelError::Resolve {
                    model: model.to_string(),
                    message: "no such GGUF file".into(),
                });
            }
            return crate::gguf::load_gguf(path);
        }
        let dir = resolve_model(model)?;
        Self::load_dir(&dir)
    }

    /// The built-in model `name`: no tokenizer, deterministic random weights generated as the
    /// engine uploads them.
    pub fn builtin(name: &str) -> Result<Model> {
        let config = builtin_config(name)?;
        let label = format!("builtin:{name}");
        let weights = RandomWeights::new(&config, BUILTIN_SEED, &label)?;
        Ok(Model {
            dir: PathBuf::from(&label),
            config,
            weights: Box::new(weights),
            tokenizer: None,
            tokenizer_config: None,
            generation_config: None,
        })
    }

    /// Loads a model directory.
    pub fn load_dir(dir: &Path) -> Result<Model> {
        if !dir.is_dir() {
            return Err(ModelError::Resolve {
                model: dir.display().to_string(),
                message: "expected a model directory (config.json, *.safetensors, tokenizer.json)"
                    .into(),
            });
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(dir)?;
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let tokenizer = optional("tokenizer.json")
            .map(|p| Tokenizer::from_file(&p))
            .transpose()?;
        let tokenizer_config = optional("tokenizer_config.json")
            .map(|p| TokenizerConfig::from_file(&p))
            .transpose()?;
        let generation_config = optional("generation_config.json")
            .map(|p| GenerationConfig::from_file(&p))
            .transpose()?;
        Ok(Model {
            dir: dir.to_path_buf(),
            config,
            weights: Box::new(checkpoint),
            tokenizer,
            tokenizer_config,
            generation_config,
        })
    }

    /// Only the tokenizer of `model` (a `.gguf` file, a directory with `tokenizer.json`, or a
    /// hub id): no config or weights are read, so a vocabulary-only GGUF file works.
    pub fn load_tokenizer(model: &str) -> Result<Tokenizer> {
        let path = Path::new(model);
        let no_tokenizer = |what: String| ModelError::Resolve {
            model: model.to_string(),
            message: what,
        };
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            if !path.is_file() {
                return Err(no_tokenizer("no such GGUF file".into()));
            }
            return crate::gguf::load_gguf_tokenizer(path)?
                .ok_or_else(|| no_tokenizer("the GGUF file has no vocabulary".into()));
        }
        let dir = resolve_model(model)?;
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(no_tokenizer(format!(
                "{} has no tokenizer.json",
                dir.display()
            )));
        }
        Tokenizer::from_file(&file)
    }

    /// The end-of-sequence ids: from `generation_config.json` when it names any, else from the
    /// config.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        match &self.generation_config {
            Some(g) if !g.eos_token_ids.is_empty() => g.eos_token_ids.clone(),
            _ => self.config.eos_token_ids.clone(),
        }
    }
}
