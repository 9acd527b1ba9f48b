//! Reading SQL text that a database holds (`sqlite_schema.sql`) without running it.
//!
//! A downloaded database is untrusted input, and so is the SQL of its schema: a file
//! written with `writable_schema` can hold any text there, e.g. `CREATE VIEW v AS
//! SELECT 1; ATTACH …`. hubvault never hands that text to `execute_batch`. What it needs
//! from it is read here with a small lexer (SQLite's token rules: comments, the four
//! quotings, punctuation):
//! - [`check_create`]: the head of a `CREATE VIEW`/`CREATE TRIGGER` statement names the
//!   object it must create, in the main schema, not `TEMP`;
//! - [`virtual_table`]: the module and arguments of a `CREATE VIRTUAL TABLE`, and
//!   [`option`] for FTS's `key=value` arguments.
//!
//! That a text is exactly ONE statement is SQLite's to say (see
//! [`crate::sqlite::rewrite`], which prepares it and refuses a tail); that running it did
//! nothing but create that object is checked afterwards against `sqlite_schema`.

/// One token; whitespace and comments are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A bare word: keyword, identifier or number.
    Word(String),
    /// `"x"`, `[x]` or `` `x` ``, unquoted.
    Ident(String),
    /// `'x'`, unquoted.
    Str(String),
    Punct(char),
}

impl Token {
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// The name this token spells, if it can be a name (SQLite also accepts a string
    /// literal where a name is expected).
    fn name(&self) -> Option<&str> {
        match self {
            Token::Word(s) | Token::Ident(s) | Token::Str(s) => Some(s),
            Token::Punct(_) => None,
        }
    }
}

/// Tokens of `sql` with the byte offset where each starts. Unterminated quotes and
/// comments run to the end (SQLite would refuse the text; we only read it).
fn lex(sql: &str) -> Vec<(usize, Token)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Doubling the closing quote escapes it, in all four quotings that use a pair.
    let quoted = |i: usize, close: u8| -> (String, usize) {
        let mut s = Vec::new();
        let mut j = i + 1;
        while j < b.len() {
            if b[j] == close {
                if close != b']' && j + 1 < b.len() && b[j + 1] == close {
                    s.push(close);
                    j += 2;
                    continue;
                }
                return (String::from_utf8_lossy(&s).into_owned(), j + 1);
            }
            s.push(b[j]);
            j += 1;
        }
        (String::from_utf8_lossy(&s).into_owned(), b.len())
    };
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            b'\'' => {
                let (s, j) = quoted(i, b'\'');
                out.push((i, Token::Str(s)));
                i = j;
            }
            b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                let (s, j) = quoted(i, close);
                out.push((i, Token::Ident(s)));
                i = j;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < b.len() {
                    let d = b[i];
                    if d.is_ascii_alphanumeric() || d == b'_' || d == b'$' || d >= 0x80 {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Token::Word(sql[start..i].to_string())));
            }
            _ => {
                // A multi-byte character cannot start here (>= 0x80 is a word above).
                out.push((i, Token::Punct(c as char)));
                i += 1;
            }
        }
    }
    out
}

/// The kind of schema object a statement must create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creates {
    View,
    Trigger,
}

impl Creates {
    fn keyword(self) -> &'static str {
        match self {
            Creates::View => "VIEW",
            Creates::Trigger => "TRIGGER",
        }
    }
}

/// Checks that `sql` starts `CREATE VIEW <name>` (or `CREATE TRIGGER <name>`), optionally
/// `IF NOT EXISTS` and qualified by `main.`, where `<name>` is `name` (compared as
/// SQLite compares names: ASCII case-insensitively). `TEMP` is refused: the object must
/// land in the database being rewritten. Says what is wrong otherwise.
pub fn check_create(sql: &str, kind: Creates, name: &str) -> Result<(), String> {
    let toks: Vec<Token> = lex(sql).into_iter().map(|(_, t)| t).collect();
    let mut it = toks.iter().peekable();
    let want = format!("CREATE {}", kind.keyword());
    if !it.next().is_some_and(|t| t.is_kw("CREATE")) {
        return Err(format!("does not start with {want}"));
    }
    if it
        .peek()
        .is_some_and(|t| t.is_kw("TEMP") || t.is_kw("TEMPORARY"))
    {
        return Err("creates a TEMP object, not one in the database".into());
    }
    if !it.next().is_some_and(|t| t.is_kw(kind.keyword())) {
        return Err(format!("does not start with {want}"));
    }
    if it.peek().is_some_and(|t| t.is_kw("IF")) {
        it.next();
        if !(it.next().is_some_and(|t| t.is_kw("NOT"))
            && it.next().is_some_and(|t| t.is_kw("EXISTS")))
        {
            return Err("has a malformed IF NOT EXISTS".into());
        }
    }
    let first = it
        .next()
        .and_then(Token::name)
        .ok_or_else(|| format!("names no object after {want}"))?;
    let named = if it.peek() == Some(&&Token::Punct('.')) {
        it.next();
        if !first.eq_ignore_ascii_case("main") {
            return Err(format!("creates its object in schema {first:?}, not main"));
        }
        it.next()
            .and_then(Token::name)
            .ok_or_else(|| format!("names no object after {want} main."))?
    } else {
        first
    };
    if !named.eq_ignore_ascii_case(name) {
        return Err(format!("creates {named:?}, not {name:?}"));
    }
    Ok(())
}

/// The module name and the raw arguments (trimmed, top-level commas) of a `CREATE
/// VIRTUAL TABLE … USING module(args)` statement; `None` if `sql` is not one.
pub fn virtual_table(sql: &str) -> Option<(String, Vec<String>)> {
    let toks = lex(sql);
    let using = toks.iter().position(|(_, t)| t.is_kw("USING"))?;
    if !(toks.first()?.1.is_kw("CREATE") && toks.get(1)?.1.is_kw("VIRTUAL")) {
        return None;
    }
    let module = toks.get(using + 1)?.1.name()?.to_string();
    let mut args = Vec::new();
    let Some((open, Token::Punct('('))) = toks.get(using + 2) else {
        return Some((module, args));
    };
    let mut depth = 0usize;
    let mut start = open + 1;
    for (at, t) in &toks[using + 2..] {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    args.push(sql[start..*at].trim().to_string());
                    break;
                }
            }
            Token::Punct(',') if depth == 1 => {
                args.push(sql[start..*at].trim().to_string());
                start = at + 1;
            }
            _ => {}
        }
    }
    args.retain(|a| !a.is_empty());
    Some((module, args))
}

/// The value of a `key = value` module argument (FTS options: `content='Events'`),
/// unquoted; keys compare ASCII case-insensitively. `None` if no argument sets `key`.
pub fn option(args: &[String], key: &str) -> Option<String> {
    args.iter().find_map(|a| {
        let toks = lex(a);
        match toks.as_slice() {
            [(_, k), (_, Token::Punct('=')), rest @ ..]
                if k.name().is_some_and(|n| n.eq_ignore_ascii_case(key)) =>
            {
                match rest {
                    [] => Some(String::new()),
                    [(_, v)] => v.name().map(str::to_string),
                    // An unquoted value with punctuation in it: its text as written.
                    [(at, _), ..] => Some(a[*at..].trim().to_string()),
                }
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_view_or_trigger_must_name_its_own_object_in_main() {
        let ok = [
            ("CREATE VIEW v AS SELECT 1", Creates::View, "v"),
            (
                "create view \"My \"\"V\"\"\" as select 1",
                Creates::View,
                "My \"V\"",
            ),
            (
                "CREATE VIEW IF NOT EXISTS main.[v] AS SELECT 1",
                Creates::View,
                "V",
            ),
            (
                "/* c */ CREATE -- x\n TRIGGER `t` AFTER INSERT ON a BEGIN SELECT 1; END",
                Creates::Trigger,
                "t",
            ),
        ];
        for (sql, kind, name) in ok {
            assert_eq!(check_create(sql, kind, name), Ok(()), "{sql}");
        }
        let bad = [
            ("CREATE TEMP VIEW v AS SELECT 1", Creates::View, "v"),
            ("CREATE VIEW other AS SELECT 1", Creates::View, "v"),
            ("CREATE VIEW aux.v AS SELECT 1", Creates::View, "v"),
            ("CREATE TABLE v(a)", Creates::View, "v"),
            (
                "CREATE TRIGGER v AFTER INSERT ON a BEGIN SELECT 1; END",
                Creates::View,
                "v",
            ),
            ("DROP TABLE Events", Creates::View, "v"),
            ("", Creates::Trigger, "t"),
        ];
        for (sql, kind, name) in bad {
            assert!(check_create(sql, kind, name).is_err(), "{sql}");
        }
    }

    #[test]
    fn module_and_options_of_a_virtual_table_are_read_without_running_it() {
        let (m, args) = virtual_table(
            "CREATE VIRTUAL TABLE f USING fts5(body, title, content='Events', content_rowid = \"id\", tokenize = 'porter unicode61')",
        )
        .unwrap();
        assert_eq!(m, "fts5");
        assert_eq!(args.len(), 5);
        assert_eq!(option(&args, "content").as_deref(), Some("Events"));
        assert_eq!(option(&args, "CONTENT_ROWID").as_deref(), Some("id"));
        assert_eq!(
            option(&args, "tokenize").as_deref(),
            Some("porter unicode61")
        );
        assert_eq!(option(&args, "columnsize"), None);
        let (_, args) = virtual_table("CREATE VIRTUAL TABLE f USING fts5(a, content='')").unwrap();
        assert_eq!(option(&args, "content").as_deref(), Some(""));
        let (m, args) = virtual_table("CREATE VIRTUAL TABLE r USING rtree(id, x0, x1)").unwrap();
        assert_eq!((m.as_str(), args.len()), ("rtree", 3));
        assert_eq!(virtual_table("CREATE TABLE t(a)"), None);
        let (m, args) = virtual_table("CREATE VIRTUAL TABLE d USING dbstat").unwrap();
        assert_eq!((m.as_str(), args.len()), ("dbstat", 0));
    }
}
