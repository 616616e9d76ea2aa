//! Follow-up questions in a conversation, rewritten into standalone queries
//! before retrieval.
//!
//! 「それは何日前までに申請?」 retrieves nothing useful on its own: the topic is in
//! the previous turn. Kura therefore
//!
//! 1. decides by rule whether a question leans on the conversation
//!    ([`is_follow_up`]: a demonstrative or pronoun — それ/その/あれ/これ/そこ,
//!    it/that/they… —, an opening like では/じゃあ/"what about", or a question
//!    so short it cannot carry its topic). A question that does not is used as
//!    it is: most turns cost nothing extra.
//! 2. asks the local model, with a short prompt (the previous standalone question,
//!    the follow-up and one example; ≈ 160 prompt tokens and at most 48 new ones,
//!    a few seconds on an idle 2-core machine), for one standalone question;
//! 3. checks the rewrite ([`accept_rewrite`]: one line, not empty, not a refusal,
//!    not much longer than its inputs, keeping at least one content word of the
//!    follow-up and one of the previous question) and otherwise falls back to the
//!    rule-based rewrite
//!    ([`concat_rewrite`]): the previous standalone question followed by the
//!    follow-up. Hybrid retrieval handles that concatenation well — BM25 matches
//!    the topic words of the first part and the specifics of the second — so it
//!    is a sound fallback, but the model's rewrite also reads naturally in the
//!    prompt and in the answer, which is why it comes first.
//!
//! The answer prompt then carries only the standalone question, not the whole
//! history: every history token would be prefill time on a CPU.

use crate::llm::{ChatMessage, GenerateParams, Llm};

use super::lang::{is_refusal, Lang};
use super::retrieve::question_units;

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The standalone form of the question that was asked.
    pub question: String,
    /// The answer given.
    pub answer: String,
}

const JA_REFERENCES: &[&str] = &[
    "それ",
    "その",
    "そこ",
    "そちら",
    "あれ",
    "あの",
    "これ",
    "この",
    "こちら",
    "同じ",
    "上記",
    "前述",
    "さっき",
    "先ほど",
    "他に",
    "ほかに",
    "他の",
    "ほかの",
    "その他",
];
const JA_OPENINGS: &[&str] = &[
    "では",
    "じゃあ",
    "なら",
    "それなら",
    "また",
    "あと",
    "で、",
    "じゃ",
];
const EN_REFERENCES: &[&str] = &[
    "it", "its", "that", "those", "they", "them", "their", "this", "these", "there", "he", "she",
    "his", "her", "same", "above", "else", "other",
];
const EN_OPENINGS: &[&str] = &["what about", "how about", "and ", "also", "then"];

/// Whether `question` leans on the conversation before it.
pub fn is_follow_up(question: &str) -> bool {
    let q = question.trim();
    match Lang::detect(q) {
        Lang::Ja => {
            JA_REFERENCES.iter().any(|r| q.contains(r))
                || JA_OPENINGS.iter().any(|o| q.starts_with(o))
                || q.chars()
                    .filter(|c| !c.is_ascii_punctuation() && !"？?。、".contains(*c))
                    .count()
                    <= 6
        }
        Lang::En => {
            let lower = q.to_lowercase();
            let words: Vec<&str> = lower
                .split(|c: char| !c.is_alphanumeric() && c != '\'')
                .filter(|w| !w.is_empty())
                .collect();
            words.iter().any(|w| EN_REFERENCES.contains(w))
                || EN_OPENINGS.iter().any(|o| lower.starts_with(o))
                || words.len() <= 3
        }
    }
}

/// The rule-based rewrite: the previous standalone question, then the follow-up.
pub fn concat_rewrite(previous: &Turn, question: &str) -> String {
    let sep = if Lang::detect(question) == Lang::Ja {
        " "
    } else {
        " — "
    };
    format!("{}{sep}{}", previous.question.trim(), question.trim())
}

/// The rewriting prompt: the previous standalone question and the follow-up, with
/// one example. The previous answer is left out: with it, the 1.5B model rewrote
/// 「それは何日前までに申請?」 into a question about the answer's system name.
pub fn rewrite_messages(previous: &Turn, question: &str) -> Vec<ChatMessage> {
    match Lang::detect(question) {
        Lang::Ja => vec![
            ChatMessage::system(
                "続きの質問を、前の質問を見なくても意味が通じる1つの質問文に書き換えてください。続きの質問の言葉はそのまま残し、指示語(それ、その等)だけを前の質問の具体的な言葉に置き換えます。書き換えた質問だけを1行で出力してください。\n例: 前の質問「通勤手当について教えて」、続きの質問「その上限は?」→ 通勤手当の上限は?",
            ),
            ChatMessage::user(format!(
                "前の質問: {}\n続きの質問: {}\n書き換えた質問:",
                previous.question.trim(),
                question.trim()
            )),
        ],
        Lang::En => vec![
            ChatMessage::system(
                "Rewrite the follow-up question as one standalone question that makes sense without the previous one. Keep the follow-up's words; replace only pronouns (it, that…) with what they refer to in the previous question. Output only the rewritten question, on one line.\nExample: previous \"Tell me about the commuting allowance\", follow-up \"What is its limit?\" → What is the limit of the commuting allowance?",
            ),
            ChatMessage::user(format!(
                "Previous question: {}\nFollow-up question: {}\nRewritten question:",
                previous.question.trim(),
                question.trim()
            )),
        ],
    }
}

/// Whether the model's rewrite is usable (see the module docs); returns it cleaned.
pub fn accept_rewrite(rewrite: &str, previous: &Turn, question: &str) -> Option<String> {
    let line = rewrite.trim().lines().next()?.trim();
    let line = line
        .trim_start_matches("書き換えた質問:")
        .trim_start_matches("Rewritten question:")
        .trim()
        .trim_matches(['「', '」', '"'])
        .trim();
    if line.is_empty() || is_refusal(line) {
        return None;
    }
    let limit = previous.question.chars().count() + question.chars().count() + 20;
    if line.chars().count() > limit {
        return None;
    }
    // It must keep something of the follow-up (else it answers or repeats the
    // previous question) and bring something of the previous question (else the
    // reference was not resolved).
    let own = question_units(question);
    let words = super::overlap::units(line);
    if !own.is_empty() && super::overlap::containment(&own, &words) == 0.0 {
        return None;
    }
    let before = question_units(&previous.question);
    if !before.is_empty() && super::overlap::containment(&before, &words) == 0.0 {
        return None;
    }
    Some(line.to_string())
}

/// The standalone query for `question` after `history`: unchanged when it is not a
/// follow-up; else the model's rewrite when it passes [`accept_rewrite`]; else
/// [`concat_rewrite`]. `llm = None` uses the rule only.
pub fn standalone_query(llm: Option<&Llm>, history: &[Turn], question: &str) -> String {
    let Some(previous) = history.last() else {
        return question.trim().to_string();
    };
    if !is_follow_up(question) {
        return question.trim().to_string();
    }
    if let Some(llm) = llm {
        let params = GenerateParams {
            stop: vec!["\n".into()],
            ..GenerateParams::greedy(48)
        };
        let mut session = llm.model.new_session();
        if let Ok(g) = llm.chat(
            &mut session,
            &rewrite_messages(previous, question),
            &params,
            None,
            &mut |_| {},
        ) {
            if let Some(r) = accept_rewrite(&g.text, previous, question) {
                return r;
            }
        }
    }
    concat_rewrite(previous, question)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> Turn {
        Turn {
            question: "年次有給休暇について教えてください。".into(),
            answer: "勤続6か月で10日付与されます[1]。".into(),
        }
    }

    #[test]
    fn follow_ups_are_recognised() {
        assert!(is_follow_up("それは何日前までに申請?"));
        assert!(is_follow_up("では、慶弔休暇は?"));
        assert!(is_follow_up("何日?"));
        assert!(is_follow_up("How do I apply for it?"));
        assert!(is_follow_up("What about Osaka?"));
        assert!(!is_follow_up("通勤手当の上限額はいくらですか？"));
        assert!(!is_follow_up("What is the nightly hotel cap for Tokyo?"));
    }

    #[test]
    fn concatenation_carries_the_topic() {
        let q = concat_rewrite(&turn(), "それは何日前までに申請?");
        assert!(q.contains("年次有給休暇") && q.contains("何日前"));
    }

    #[test]
    fn rewrites_that_lose_the_question_are_rejected() {
        let t = turn();
        let q = "それは何日前までに申請?";
        assert_eq!(
            accept_rewrite(
                "年次有給休暇は何日前までに申請する必要がありますか？",
                &t,
                q
            )
            .as_deref(),
            Some("年次有給休暇は何日前までに申請する必要がありますか？")
        );
        assert_eq!(
            accept_rewrite("年次有給休暇について教えてください。", &t, q),
            None,
            "the follow-up's point is lost"
        );
        assert_eq!(
            accept_rewrite("年次有給休暇の申請期限は?", &t, q).as_deref(),
            Some("年次有給休暇の申請期限は?")
        );
        assert_eq!(
            accept_rewrite("それは何日前までに申請しますか?", &t, q),
            None,
            "the reference is not resolved"
        );
        assert_eq!(accept_rewrite("", &t, q), None);
        assert_eq!(
            accept_rewrite("資料に記載が見つかりませんでした。", &t, q),
            None
        );
    }

    #[test]
    fn first_question_is_used_as_is() {
        assert_eq!(standalone_query(None, &[], " それは? "), "それは?");
        assert_eq!(
            standalone_query(None, &[turn()], "給料日はいつですか？"),
            "給料日はいつですか？"
        );
        assert!(standalone_query(None, &[turn()], "それは何日前までに申請?")
            .starts_with("年次有給休暇"));
    }
}
