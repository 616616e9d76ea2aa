//! `kura generate`: one prompt answered by the local model, through its chat
//! template.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::load::{load_llm, messages, ModelArgs};
use crate::term::{cancel_on_ctrl_c, print_json};
use kura::adapters::AdapterRegistry;
use kura::llm::ChatMessage;
use kura::paths::Paths;

/// `kura generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt (sent through the model's chat template as a user message).
    pub prompt: String,
    /// Model and sampling options.
    #[command(flatten)]
    pub model: ModelArgs,
    /// A LoRA adapter to apply: a PEFT folder or the name of a trained one
    /// (`<data>/adapters/NAME`, see `kura train run`).
    #[arg(long)]
    pub adapter: Option<String>,
}

pub(super) fn generate_cmd(args: GenerateArgs, paths: &Paths, json_out: bool) -> Result<ExitCode> {
    let model =
        AdapterRegistry::new(paths).model_for(args.model.model.as_deref(), args.adapter.as_deref());
    let mut llm = load_llm(paths, model.as_deref(), args.model.device)?;
    let adapter = match &args.adapter {
        Some(spec) => Some(AdapterRegistry::new(paths).attach(&mut llm.model, spec)?),
        None => None,
    };
    let cancel = cancel_on_ctrl_c();
    let mut session = llm.model.new_session();
    session.set_adapters(adapter.into_iter().collect());
    let msgs = messages(
        &args.model.system,
        &[ChatMessage::user(args.prompt.clone())],
    );
    let mut stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if !json_out {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
    };
    let g = llm.chat(
        &mut session,
        &msgs,
        &args.model.params(),
        Some(&cancel),
        &mut on_text,
    )?;
    if json_out {
        print_json(&json!({
            "text": g.text,
            "finish_reason": g.finish_reason,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "prefill_tokens_per_s": g.prefill_tokens_per_second(),
            "decode_tokens_per_s": g.decode_tokens_per_second(),
        }));
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, {:?}]",
            g.prompt_tokens,
            g.prefill_tokens_per_second(),
            g.generated_tokens,
            g.decode_tokens_per_second(),
            g.finish_reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
