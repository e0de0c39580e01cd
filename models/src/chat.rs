//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json`, rendered with minijinja.

use crate::error::{read_json, ModelError, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// What `tokenizer_config.json` says: special token strings and the chat template.
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// BOS token string.
    pub bos_token: Option<String>,
    /// EOS token string.
    pub eos_token: Option<String>,
    /// The Jinja chat template.
    pub chat_template: Option<String>,
}

fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`. The chat template may be a string or a list of named
    /// templates (the one named `default` is used).
    pub fn from_file(path: &Path) -> Result<TokenizerConfig> {
        let json = read_json(path)?;
        let template = match json.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            Some(other) => {
                return Err(ModelError::config(
                    path,
                    "chat_template",
                    format!("expected a string or a list of named templates, got {other}"),
                ))
            }
        };
        Ok(TokenizerConfig {
            file: path.to_path_buf(),
            bos_token: token_string(json.get("bos_token")),
            eos_token: token_string(json.get("eos_token")),
            chat_template: template,
        })
    }

    /// Renders `messages` with the chat template, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let err = |message: String| ModelError::ChatTemplate {
            file: self.file.clone(),
            message,
        };
        let source = self
            .chat_template
            .as_deref()
            .ok_or_else(|| err("this model has no chat_template".into()))?;
        let mut env = minijinja::Environment::new();
        // Templates come with downloaded models: a bounded amount of work, so a hostile or broken
        // one fails instead of hanging (real chat templates use a few thousand units).
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", source)
            .map_err(|e| err(format!("{e:#}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| err(format!("{e:#}")))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| err(format!("{e:#}")))
    }
}

/// Instructions a chat template may execute per rendering.
const TEMPLATE_FUEL: u64 = 5_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_would_run_for_ever_is_stopped() {
        let t = config(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        );
        let start = std::time::Instant::now();
        let e = t
            .render_chat(&[ChatMessage::new("user", "hi")], true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("fuel"),
            "{e}"
        );
        assert!(start.elapsed().as_secs() < 10);
    }

    fn config(template: &str) -> TokenizerConfig {
        TokenizerConfig {
            file: "tokenizer_config.json".into(),
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            chat_template: Some(template.into()),
        }
    }

    #[test]
    fn renders_python_style_templates() {
        let t = config(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}[{{ m.content.strip() }}]{% else %}<{{ m.role }}>{{ m['content'] | trim }}{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        );
        let out = t
            .render_chat(
                &[
                    ChatMessage::new("system", " be brief "),
                    ChatMessage::new("user", "hi "),
                ],
                true,
            )
            .unwrap();
        assert_eq!(out, "<s>[be brief]<user>hi<assistant>");
    }

    #[test]
    fn template_errors_are_reported() {
        let t = config("{% if messages[0].role != 'user' %}{{ raise_exception('first message must be the user') }}{% endif %}");
        let err = t
            .render_chat(&[ChatMessage::new("system", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("first message must be the user") && err.contains("tokenizer_config.json"),
            "{err}"
        );
        let broken = config("{% for m in messages %}");
        assert!(broken
            .render_chat(&[], true)
            .unwrap_err()
            .to_string()
            .contains("chat template"));
        let none = TokenizerConfig::default();
        assert!(none
            .render_chat(&[], true)
            .unwrap_err()
            .to_string()
            .contains("no chat_template"));
    }
}
