//! Chat templates: the Jinja template a GGUF file carries in `tokenizer.chat_template`, rendered
//! with minijinja the way Hugging Face's `apply_chat_template` renders it (`trim_blocks`,
//! `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, `tojson`; variables
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`), with Python's string and dict
//! methods (`.strip()`, `.startswith()`, `.items()`) from minijinja-contrib's pycompat.

use minijinja::{Environment, ErrorKind as JinjaErrorKind};
use serde::Serialize;

use crate::LlmError;

/// ChatML, used when a file carries no template (SmolLM2's own minus its default system line).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat message, as Ollama's `/api/chat` and HF templates name its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn template_error(e: &minijinja::Error) -> LlmError {
    LlmError::Template(format!("{e:#}"))
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` / `eos_token` are the texts templates may refer to.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, LlmError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    JinjaErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(&e))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt text for `messages`, ending with the assistant's header when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, LlmError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&e))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| template_error(&e))
    }
}

/// The current UTC time formatted with the strftime directives chat templates use (`%Y %m %d
/// %B %b %H %M %S %%`); others are kept as written.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs, format)
}

fn format_utc(secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(name),
            Some('b') => out.push_str(&name[..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's `tokenizer.chat_template`, as its GGUF file carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_renders_chatml_with_its_default_system_line() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>")
            .expect("the template compiles");
        let got = t
            .render(&[ChatMessage::new("user", "Hi!")], true)
            .expect("renders");
        assert_eq!(
            got,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "2+2?"),
                ],
                false,
            )
            .expect("renders");
        assert_eq!(
            with_system,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        );
    }

    #[test]
    fn hf_renderer_settings_loop_controls_and_raise_exception() {
        let src = "{% for m in messages %}\n  {% if m.role == 'skip' %}{% continue %}{% endif %}\n{{ m.content }}|\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").expect("compiles");
        let got = t
            .render(
                &[
                    ChatMessage::new("user", "a"),
                    ChatMessage::new("skip", "b"),
                    ChatMessage::new("user", "c"),
                ],
                false,
            )
            .expect("renders");
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before one.
        assert_eq!(got, "a|\nc|\n");
        let raising = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")
            .expect("compiles");
        let err = raising.render(&[], false).expect_err("raises");
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let python = ChatTemplate::new(
            "{% for m in messages %}{% if m.content.startswith('x') %}{{ m.content.strip() }}{% endif %}{% endfor %}",
            "",
            "",
        )
        .expect("compiles");
        let got = python
            .render(
                &[
                    ChatMessage::new("user", "x padded  "),
                    ChatMessage::new("user", "y"),
                ],
                false,
            )
            .expect("pycompat methods");
        assert_eq!(got, "x padded");
    }

    #[test]
    fn strftime_covers_the_directives_templates_use() {
        // 2024-07-26 13:05:09 UTC
        assert_eq!(
            format_utc(1_721_999_109, "%d %b %Y %H:%M:%S %B %m %%"),
            "26 Jul 2024 13:05:09 July 07 %"
        );
        assert_eq!(format_utc(0, "%Y-%m-%d"), "1970-01-01");
    }
}
