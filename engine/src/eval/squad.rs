//! The SQuAD 1.1 JSON format (JSQuAD v1.3 uses it), read once for both the retrieval
//! and the answer evaluations.

use std::path::Path;

use serde::Deserialize;

use super::EvalError;

/// A SQuAD-format data set.
#[derive(Deserialize)]
pub(crate) struct Squad {
    pub data: Vec<SquadArticle>,
}

/// One article: its paragraphs.
#[derive(Deserialize)]
pub(crate) struct SquadArticle {
    pub paragraphs: Vec<SquadParagraph>,
}

/// One paragraph (a passage of the corpus) and its questions.
#[derive(Deserialize)]
pub(crate) struct SquadParagraph {
    pub context: String,
    pub qas: Vec<SquadQa>,
}

/// One question with its gold answers.
#[derive(Deserialize)]
pub(crate) struct SquadQa {
    #[serde(default)]
    pub id: String,
    pub question: String,
    #[serde(default)]
    pub answers: Vec<SquadAnswer>,
}

/// A gold answer.
#[derive(Deserialize)]
pub(crate) struct SquadAnswer {
    pub text: String,
}

/// Reads and parses a SQuAD-format file; errors name the file.
pub(crate) fn read(path: &Path) -> Result<Squad, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EvalError::Dataset {
        path: path.to_owned(),
        message: format!("not SQuAD-format JSON: {e}"),
    })
}
