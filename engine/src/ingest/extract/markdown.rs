//! Markdown: keep the text and its line structure, drop the markup lightly.
//!
//! Headings and list items are what chunking and citation snippets key on, so each stays
//! its own line (`## 注意事項` → `注意事項`, `- 項目` stays `- 項目`); emphasis, inline code
//! ticks, link targets, image URLs, fences and table rules are removed; table rows become
//! tab-separated lines like every other table in Kura.

use super::text::decode;
use super::{Ctx, Fail, RawDocument};

/// Extracts a Markdown file (page 1).
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let (source, _) = decode(bytes)?;
    let mut out = String::with_capacity(source.len());
    let mut in_front_matter = false;
    for (i, line) in source.lines().enumerate() {
        if i % 4096 == 0 {
            ctx.check()?;
        }
        let trimmed = line.trim();
        if i == 0 && trimmed == "---" {
            in_front_matter = true;
            continue;
        }
        if in_front_matter {
            if trimmed == "---" || trimmed == "..." {
                in_front_matter = false;
            } else {
                out.push_str(trimmed);
                out.push('\n');
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            continue;
        }
        if is_table_rule(trimmed) || is_thematic_break(trimmed) {
            continue;
        }
        out.push_str(&strip_line(line));
        out.push('\n');
    }
    Ok(RawDocument::single(out, "markdown"))
}

/// Strips block markers and inline markup from one line.
pub(crate) fn strip_line(line: &str) -> String {
    let mut rest = line.trim_end();
    let indent = rest.len() - rest.trim_start().len();
    rest = rest.trim_start();
    while let Some(r) = rest.strip_prefix('>') {
        rest = r.trim_start();
    }
    let hashes = rest.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) && rest[hashes..].starts_with([' ', '\t']) {
        rest = rest[hashes..].trim().trim_end_matches('#').trim_end();
        return inline(rest);
    }
    if rest.starts_with('|') && rest.ends_with('|') && rest.len() > 1 {
        let cells: Vec<String> = rest[1..rest.len() - 1]
            .split('|')
            .map(|c| inline(c.trim()))
            .collect();
        return cells.join("\t");
    }
    let mut out = " ".repeat(indent.min(8));
    out.push_str(&inline(rest));
    out
}

/// Removes inline markup: `**`, `__`, backticks, `[text](url)` → `text`, `![alt](url)` → `alt`.
fn inline(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\\' if next.is_some_and(|n| n.is_ascii_punctuation()) => {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            '*' | '_' if next == Some(c) => {
                i += 2;
                continue;
            }
            '`' => {
                i += 1;
                continue;
            }
            '!' if next == Some('[') => {
                i += 1;
                continue;
            }
            '[' => {
                if let Some(close) = chars[i + 1..].iter().position(|&x| x == ']') {
                    let close = i + 1 + close;
                    if chars.get(close + 1) == Some(&'(') {
                        if let Some(end) = chars[close + 2..].iter().position(|&x| x == ')') {
                            out.extend(&chars[i + 1..close]);
                            i = close + 2 + end + 1;
                            continue;
                        }
                    }
                }
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_table_rule(line: &str) -> bool {
    line.contains('-')
        && line.contains('|')
        && line
            .chars()
            .all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

fn is_thematic_break(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && (compact.chars().all(|c| c == '-')
            || compact.chars().all(|c| c == '*')
            || compact.chars().all(|c| c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_stripped_lines_kept() {
        assert_eq!(strip_line("## 注意事項 ##"), "注意事項");
        assert_eq!(strip_line("- **前日まで**に申請"), "- 前日までに申請");
        assert_eq!(
            strip_line("[申請フォーム](https://x/y)から"),
            "申請フォームから"
        );
        assert_eq!(strip_line("![図1](a.png)"), "図1");
        assert_eq!(strip_line("> 引用 `code`"), "引用 code");
        assert_eq!(strip_line("| 部署 | 内線 |"), "部署\t内線");
        assert!(is_table_rule("|---|:--:|"));
    }
}
