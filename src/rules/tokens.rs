//! One pass over a statement's bytes, yielding its tokens. Works on bytes, not `str`: a
//! query may hold any bytes (binary strings, other character sets, broken UTF-8), and none
//! of that may make the proxy fail. Never panics, never recurses, never reads past the end.

/// What a token is, as far as digests, classification and rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or an unquoted identifier (`SELECT`, `sbtest1`, `_utf8mb4`).
    Word,
    /// A backtick-quoted identifier, quotes included.
    QuotedIdent,
    /// A string literal in single or double quotes (also `N'…'`).
    String,
    /// A decimal number: `1`, `1.5`, `.5`, `1e-3`.
    Number,
    /// A hexadecimal or bit literal: `0x1F`, `X'1F'`, `0b101`, `B'101'`.
    HexOrBit,
    /// `?`: a placeholder of a prepared statement.
    Placeholder,
    /// `@name`, `@'name'`: a user variable.
    UserVar,
    /// `@@name`, `@@session.name`: a system variable.
    SystemVar,
    /// Operators and other punctuation (`=`, `<=>`, `:=`, `*`, …).
    Operator,
    OpenParen,
    CloseParen,
    Comma,
    Dot,
    Semicolon,
}

impl TokenKind {
    /// A literal value: what a digest replaces by `?`.
    pub fn is_literal(self) -> bool {
        matches!(
            self,
            TokenKind::String | TokenKind::Number | TokenKind::HexOrBit | TokenKind::Placeholder
        )
    }
}

/// One token: its kind and where it is in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: u32,
    pub end: u32,
    /// Whitespace or a comment came between this token and the one before.
    pub spaced: bool,
}

impl Token {
    /// The token's bytes in `sql`.
    pub fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        &sql[self.start as usize..self.end as usize]
    }
}

/// What the scan noticed beside the tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanNotes {
    /// A string, quoted identifier or comment ran to the end without being closed.
    pub unterminated: bool,
    /// The statement ends in a comment that follows a token on the same line
    /// (`… WHERE name = 'x' -- '…`): how a truncating injection looks.
    pub trailing_comment: bool,
    /// `/*! … */` or `/*M! … */` code was read as part of the statement.
    pub executable_comment: bool,
}

/// The tokens of a statement, in order. Comments are dropped, except that the code inside
/// executable comments (`/*!50100 … */`) is read as the server reads it. Cloning is cheap
/// (a few words): that is how a reader looks ahead without holding every token.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    sql: &'a [u8],
    pos: usize,
    spaced: bool,
    in_executable: bool,
    notes: ScanNotes,
    last_line_start: usize,
}

impl<'a> Tokens<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Tokens {
            sql,
            pos: 0,
            spaced: false,
            in_executable: false,
            notes: ScanNotes::default(),
            last_line_start: 0,
        }
    }

    /// What the scan noticed so far (complete once the iterator is exhausted).
    pub fn notes(&self) -> ScanNotes {
        self.notes
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.next_token()
    }
}

impl Tokens<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.sql.get(self.pos + ahead).copied()
    }

    fn next_token(&mut self) -> Option<Token> {
        self.spaced = false;
        loop {
            let c = self.peek(0)?;
            match c {
                b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c' => self.skip_space(1),
                b'\n' => {
                    self.skip_space(1);
                    self.last_line_start = self.pos;
                }
                b'#' => self.line_comment(),
                b'-' if self.peek(1) == Some(b'-')
                    && self
                        .peek(2)
                        .is_none_or(|c| c.is_ascii_whitespace() || c < 0x20) =>
                {
                    self.line_comment()
                }
                b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
                b'*' if self.in_executable && self.peek(1) == Some(b'/') => {
                    self.in_executable = false;
                    self.skip_space(2);
                }
                _ => return Some(self.token(c)),
            }
        }
    }

    fn skip_space(&mut self, n: usize) {
        self.pos += n;
        self.spaced = true;
    }

    fn line_comment(&mut self) {
        let after_token = self.sql[self.last_line_start..self.pos]
            .iter()
            .any(|c| !c.is_ascii_whitespace());
        match self.sql[self.pos..].iter().position(|&c| c == b'\n') {
            Some(n) => self.skip_space(n),
            None => {
                self.notes.trailing_comment |= after_token;
                self.pos = self.sql.len();
                self.spaced = true;
            }
        }
    }

    fn block_comment(&mut self) {
        let body = self.pos + 2;
        let executable = match (self.sql.get(body), self.sql.get(body + 1)) {
            (Some(b'!'), _) => Some(body + 1),
            (Some(b'M'), Some(b'!')) => Some(body + 2),
            _ => None,
        };
        if let (Some(mut code), false) = (executable, self.in_executable) {
            // the version number, if any, is not code
            while self.sql.get(code).is_some_and(u8::is_ascii_digit) {
                code += 1;
            }
            self.in_executable = true;
            self.notes.executable_comment = true;
            self.pos = code;
            self.spaced = true;
            return;
        }
        match find(&self.sql[body..], b"*/") {
            Some(n) => self.skip_space(2 + n + 2),
            None => {
                self.notes.unterminated = true;
                self.notes.trailing_comment = true;
                self.pos = self.sql.len();
                self.spaced = true;
            }
        }
    }

    fn token(&mut self, c: u8) -> Token {
        let start = self.pos;
        let kind = self.scan(c);
        Token {
            kind,
            start: start as u32,
            end: self.pos as u32,
            spaced: self.spaced,
        }
    }

    fn scan(&mut self, c: u8) -> TokenKind {
        let next = self.peek(1);
        match c {
            b'\'' | b'"' => {
                self.quoted(c);
                TokenKind::String
            }
            b'`' => {
                self.quoted(c);
                TokenKind::QuotedIdent
            }
            b'0' if matches!(next, Some(b'x' | b'X' | b'b' | b'B')) => self.prefixed_number(),
            b'0'..=b'9' => self.number(),
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) && !self.after_name() => self.number(),
            b'x' | b'X' | b'b' | b'B' if next == Some(b'\'') => {
                self.pos += 1;
                self.quoted(b'\'');
                TokenKind::HexOrBit
            }
            b'n' | b'N' if next == Some(b'\'') => {
                self.pos += 1;
                self.quoted(b'\'');
                TokenKind::String
            }
            // `'user'@'host'`: an account, not a variable
            b'@' if next != Some(b'@') && self.after_name() => self.single(TokenKind::Operator),
            b'@' => self.variable(),
            b'?' => self.single(TokenKind::Placeholder),
            b'(' => self.single(TokenKind::OpenParen),
            b')' => self.single(TokenKind::CloseParen),
            b',' => self.single(TokenKind::Comma),
            b'.' => self.single(TokenKind::Dot),
            b';' => self.single(TokenKind::Semicolon),
            c if is_word_byte(c) => {
                self.word();
                TokenKind::Word
            }
            _ => self.operator(),
        }
    }

    /// The byte before this one ends a name or a quoted string (`t.1col`, `'u'@'h'`).
    fn after_name(&self) -> bool {
        self.pos > 0
            && self
                .sql
                .get(self.pos - 1)
                .is_some_and(|&c| is_word_byte(c) || matches!(c, b'`' | b'\'' | b'"'))
    }

    fn single(&mut self, kind: TokenKind) -> TokenKind {
        self.pos += 1;
        kind
    }

    /// A quoted string or identifier starting at `pos`; backslash escapes in strings, a
    /// doubled quote in both.
    fn quoted(&mut self, quote: u8) {
        self.pos += 1;
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            if c == b'\\' && quote != b'`' {
                self.pos += 1;
            } else if c == quote {
                if self.peek(0) != Some(quote) {
                    return;
                }
                self.pos += 1;
            }
        }
        self.pos = self.sql.len();
        self.notes.unterminated = true;
    }

    fn word(&mut self) {
        while self.peek(0).is_some_and(is_word_byte) {
            self.pos += 1;
        }
    }

    fn digits(&mut self) {
        while self.peek(0).is_some_and(|d| d.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// `12`, `1.5`, `.5`, `1e10`, `1.5E-3`; digits followed by letters are an identifier
    /// (`1st_table` is a valid name).
    fn number(&mut self) -> TokenKind {
        let start = self.pos;
        self.digits();
        if self.peek(0) == Some(b'.') {
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|d| d.is_ascii_digit()) {
                self.pos += 1 + sign;
                self.digits();
            }
        }
        if self.peek(0).is_some_and(is_word_byte) && !self.sql[start..self.pos].contains(&b'.') {
            self.word();
            return TokenKind::Word;
        }
        TokenKind::Number
    }

    /// `0x1F` or `0b101` (or an identifier such as `0xyz`).
    fn prefixed_number(&mut self) -> TokenKind {
        let hex = matches!(self.peek(1), Some(b'x' | b'X'));
        self.pos += 2;
        let digits = self.pos;
        while self.peek(0).is_some_and(|d| {
            if hex {
                d.is_ascii_hexdigit()
            } else {
                d == b'0' || d == b'1'
            }
        }) {
            self.pos += 1;
        }
        if self.pos == digits || self.peek(0).is_some_and(is_word_byte) {
            self.word();
            return TokenKind::Word;
        }
        TokenKind::HexOrBit
    }

    fn variable(&mut self) -> TokenKind {
        if self.peek(1) == Some(b'@') {
            self.pos += 2;
            self.dotted_word();
            return TokenKind::SystemVar;
        }
        self.pos += 1;
        match self.peek(0) {
            Some(q @ (b'\'' | b'"' | b'`')) => self.quoted(q),
            _ => self.dotted_word(),
        }
        TokenKind::UserVar
    }

    fn dotted_word(&mut self) {
        while self.peek(0).is_some_and(|c| is_word_byte(c) || c == b'.') {
            self.pos += 1;
        }
    }

    fn operator(&mut self) -> TokenKind {
        const LONG: [&[u8]; 11] = [
            b"<=>", b"->>", b"<=", b">=", b"<>", b"!=", b":=", b"||", b"&&", b"<<", b">>",
        ];
        let rest = &self.sql[self.pos..];
        let len = LONG
            .iter()
            .find(|op| rest.starts_with(op))
            .map_or(1, |op| op.len());
        let len = if len == 1 && rest.starts_with(b"->") {
            2
        } else {
            len
        };
        self.pos += len;
        TokenKind::Operator
    }
}

/// Bytes an unquoted identifier or keyword is made of; bytes ≥ 0x80 are parts of
/// multi-byte characters, which MySQL allows in names.
pub fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::TokenKind::*;
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, std::string::String)> {
        Tokens::new(sql.as_bytes())
            .map(|t| {
                (
                    t.kind,
                    std::string::String::from_utf8_lossy(t.text(sql.as_bytes())).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn literals_of_every_shape() {
        let got = kinds(r#"1 1.5 .5 1e3 1.5E-3 0x1F X'1f' b'101' 0b11 'a''b' "c\"d" N'x' ?"#);
        let expected = [
            Number,
            Number,
            Number,
            Number,
            Number,
            HexOrBit,
            HexOrBit,
            HexOrBit,
            HexOrBit,
            String,
            String,
            String,
            Placeholder,
        ];
        assert_eq!(got.iter().map(|(k, _)| *k).collect::<Vec<_>>(), expected);
        assert_eq!(got[9].1, "'a''b'");
        assert_eq!(got[10].1, r#""c\"d""#);
    }

    #[test]
    fn names_variables_and_operators() {
        let got = kinds("SELECT `a``b`, t.c, @x, @'y z', @@session.sql_mode, 1st FROM t WHERE a<=>b AND c:=1 ->> d");
        let texts: Vec<&str> = got.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "SELECT",
                "`a``b`",
                ",",
                "t",
                ".",
                "c",
                ",",
                "@x",
                ",",
                "@'y z'",
                ",",
                "@@session.sql_mode",
                ",",
                "1st",
                "FROM",
                "t",
                "WHERE",
                "a",
                "<=>",
                "b",
                "AND",
                "c",
                ":=",
                "1",
                "->>",
                "d"
            ]
        );
        assert_eq!(got[1].0, QuotedIdent);
        assert_eq!(got[9].0, UserVar);
        assert_eq!(got[11].0, SystemVar);
        assert_eq!(got[13].0, Word);
    }

    #[test]
    fn comments_are_dropped_but_executable_code_is_read() {
        let got = kinds(
            "/* a */ SELECT -- x\n 1 # y\n /*!50000 SQL_NO_CACHE */ /*M!100100 2 */ /*+ hint */",
        );
        let texts: Vec<&str> = got.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(texts, ["SELECT", "1", "SQL_NO_CACHE", "2"]);
        assert_eq!(kinds("SELECT 1--1").len(), 5, "`--1` is minus, minus, one");
    }

    #[test]
    fn notes_unterminated_and_trailing_comments() {
        let notes = |sql: &str| {
            let mut tokens = Tokens::new(sql.as_bytes());
            tokens.by_ref().for_each(drop);
            tokens.notes()
        };
        for sql in ["SELECT 'abc", "SELECT `x", "SELECT /* x", "SELECT \"\\"] {
            assert!(notes(sql).unterminated, "{sql}");
        }
        let seen = notes("SELECT * FROM u WHERE n = 'a' -- ' AND p = 'x'");
        assert!(seen.trailing_comment && !seen.unterminated);
        assert!(!notes("-- leading comment\nSELECT 1").trailing_comment);
        assert!(!notes("SELECT 1\n-- a comment on its own line").trailing_comment);
    }

    #[test]
    fn any_bytes_are_safe() {
        for sql in [
            &b"\xff\xfe SELECT '\xc3'"[..],
            b"@",
            b"@@",
            b"0x",
            b"1e",
            b"/*!",
            b"/*M!",
            b"*/",
            b"'\\",
            b"X'",
            b"->",
        ] {
            for t in Tokens::new(sql) {
                assert!(t.start <= t.end && t.end as usize <= sql.len());
            }
        }
    }
}
