//! The language of a question, decided by its script, and the fixed phrases Kura
//! says in each language.
//!
//! Why script detection and not a language model: the question is one line, the two
//! languages Kura serves are written in different scripts, and a kana or kanji in
//! a question is a reliable sign that the asker reads Japanese. Kana is decisive
//! (Chinese has none); kanji alone count as Japanese too, since Kura's users write
//! Japanese or English. A question that mixes both (`KR-200のエラーE05とは?`) is
//! Japanese as soon as a third of its letters are Japanese (an English question
//! quoting a Japanese term, `What is KintaiNavi (勤怠システム)?`, stays English).
//!
//! ```
//! use kura::rag::Lang;
//! assert_eq!(Lang::detect("有給休暇は何日前までに申請しますか？"), Lang::Ja);
//! assert_eq!(Lang::detect("What does E08 mean on the KR-200?"), Lang::En);
//! assert_eq!(Lang::detect("KR-200のE05とは?"), Lang::Ja);
//! ```

use serde::{Deserialize, Serialize};

/// A language Kura answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Japanese.
    Ja,
    /// English.
    En,
}

/// Whether `c` is kana or a CJK ideograph (not CJK punctuation or full-width Latin).
pub fn is_japanese_letter(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309f | 0x30a0..=0x30ff | 0x31f0..=0x31ff | 0xff66..=0xff9f
        | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xf900..=0xfaff)
}

impl Lang {
    /// The language of `text` by script: Japanese when at least a third of its
    /// letters are kana or kanji, English otherwise.
    pub fn detect(text: &str) -> Lang {
        let (mut ja, mut latin) = (0usize, 0usize);
        for c in text.chars() {
            if is_japanese_letter(c) {
                ja += 1;
            } else if c.is_alphabetic() {
                latin += 1;
            }
        }
        if ja > 0 && ja * 3 >= (ja + latin) {
            Lang::Ja
        } else {
            Lang::En
        }
    }

    /// ISO 639-1 code.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// What Kura says when the documents do not hold the answer.
    pub fn refusal(self) -> &'static str {
        match self {
            Lang::Ja => "資料に記載が見つかりませんでした。",
            Lang::En => "The documents do not say.",
        }
    }

    /// Phrases that mark a refusal in a model's answer (the instructed phrase and
    /// the variants small models write instead).
    pub fn refusal_markers(self) -> &'static [&'static str] {
        match self {
            Lang::Ja => &[
                "資料に記載が見つかりません",
                "記載が見つかりません",
                "記載がありません",
                "記載されていません",
                "見つかりませんでした",
                "わかりません",
                "分かりません",
            ],
            Lang::En => &[
                "the documents do not say",
                "documents do not say",
                "do not contain",
                "does not contain",
                "don't contain",
                "no information",
                "not mentioned",
                "i don't know",
                "i do not know",
            ],
        }
    }

    /// Heading of the list of sources shown after an answer.
    pub fn sources_heading(self) -> &'static str {
        match self {
            Lang::Ja => "出典",
            Lang::En => "Sources",
        }
    }

    /// Heading of the list of closest sources shown with a refusal.
    pub fn closest_heading(self) -> &'static str {
        match self {
            Lang::Ja => "関連しそうな資料",
            Lang::En => "Closest sources",
        }
    }
}

/// Whether `answer` is (or starts with) a refusal in either language.
pub fn is_refusal(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    let head: String = lower.chars().take(80).collect();
    [Lang::Ja, Lang::En]
        .iter()
        .flat_map(|l| l.refusal_markers().iter())
        .any(|m| head.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_decide_the_language() {
        assert_eq!(Lang::detect("それは何日前までに申請?"), Lang::Ja);
        assert_eq!(Lang::detect("ノギスの校正周期"), Lang::Ja);
        assert_eq!(Lang::detect("How many days of paid leave?"), Lang::En);
        assert_eq!(Lang::detect("What is KintaiNavi (勤怠システム)?"), Lang::En);
        assert_eq!(Lang::detect("KintaiNaviで申請する方法は?"), Lang::Ja);
        assert_eq!(Lang::detect(""), Lang::En);
    }

    #[test]
    fn refusals_are_recognised_in_both_languages() {
        assert!(is_refusal("資料に記載が見つかりませんでした。"));
        assert!(is_refusal("The documents do not say."));
        assert!(!is_refusal("年次有給休暇は3営業日前までに申請します[1]。"));
    }
}
