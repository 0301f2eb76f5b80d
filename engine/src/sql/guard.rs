//! The checks a SQL text meets where it enters, before DataFusion plans it: how deep it can
//! nest (a bound checked on tokens, so that no deep syntax tree is ever built) and whether a
//! statement is a query (SQL here is read-only by construction).

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// An upper bound of how deep `sql`'s statements nest once parsed and planned, or `None`
/// when it exceeds `limit` (counting stops there). A text no longer than `limit` bytes
/// cannot exceed it, and is not tokenized.
///
/// The parser nests parentheses, subqueries and prefix operators by recursion, which
/// DataFusion's parser bounds (50 levels); but it builds chains of infix operators
/// (`1+1+1...`), set operations, joins and common table expressions in loops, one level per
/// operator, keyword or (in `FROM` and `WITH` lists) comma. The estimate therefore counts,
/// per parenthesized group and per comma-separated list item, every operator and every
/// keyword that is not a clause word, and adds up the counts of the enclosing groups.
/// It never undercounts those chains; it overcounts (a 200-term `OR` chain of comparisons
/// counts about 400).
pub fn nesting_estimate(sql: &str, limit: usize) -> Option<usize> {
    if sql.len() <= limit {
        return Some(sql.len());
    }
    let dialect = GenericDialect {};
    // A text that does not tokenize is left to the parser, which reports it in its words.
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Some(0);
    };
    let mut groups = vec![Group::default()];
    let mut total = 0usize;
    let mut deepest = 0usize;
    for token in &tokens {
        match token {
            Token::LParen => groups.push(Group::default()),
            Token::RParen => {
                if groups.len() > 1
                    && let Some(group) = groups.pop()
                {
                    total -= group.chain;
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(group) = groups.last_mut() {
                    if group.counts_commas && matches!(token, Token::Comma) {
                        group.chain += 1;
                        total += 1;
                    } else {
                        total -= group.chain;
                        group.chain = 0;
                    }
                }
            }
            Token::Word(word) => {
                let Some(group) = groups.last_mut() else {
                    continue;
                };
                if word.quote_style.is_some() || word.keyword == Keyword::NoKeyword {
                    continue;
                }
                match word.keyword {
                    Keyword::FROM | Keyword::WITH => group.counts_commas = true,
                    Keyword::SELECT
                    | Keyword::WHERE
                    | Keyword::GROUP
                    | Keyword::HAVING
                    | Keyword::ORDER
                    | Keyword::LIMIT
                    | Keyword::WINDOW
                    | Keyword::QUALIFY
                    | Keyword::VALUES => group.counts_commas = false,
                    _ => {}
                }
                if !is_clause_word(word.keyword) {
                    group.chain += 1;
                    total += 1;
                }
            }
            Token::Whitespace(_) | Token::Period | Token::Number(..) | Token::EOF => {}
            _ => {
                if let Some(group) = groups.last_mut() {
                    group.chain += 1;
                    total += 1;
                }
            }
        }
        deepest = deepest.max(total + groups.len());
        if deepest > limit {
            return None;
        }
    }
    Some(deepest)
}

/// One parenthesized group of a statement, as [`nesting_estimate`] counts it.
#[derive(Debug, Default)]
struct Group {
    /// Operators and keywords since the group's start or its last list separator.
    chain: usize,
    /// In a `FROM` or `WITH` list, where each comma is a join or a common table expression.
    counts_commas: bool,
}

/// Keywords that open or shape a clause but add no level of nesting.
fn is_clause_word(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::BY
            | Keyword::ORDER
            | Keyword::HAVING
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::AS
            | Keyword::ASC
            | Keyword::DESC
            | Keyword::DISTINCT
            | Keyword::ALL
            | Keyword::WITH
            | Keyword::CASE
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::END
            | Keyword::NULL
            | Keyword::TRUE
            | Keyword::FALSE
            | Keyword::NULLS
            | Keyword::FIRST
            | Keyword::LAST
            | Keyword::OVER
            | Keyword::PARTITION
            | Keyword::ROWS
            | Keyword::RANGE
            | Keyword::PRECEDING
            | Keyword::FOLLOWING
            | Keyword::CURRENT
            | Keyword::ROW
            | Keyword::UNBOUNDED
            | Keyword::INTERVAL
            | Keyword::CAST
            | Keyword::EXTRACT
            | Keyword::VALUES
            | Keyword::EXPLAIN
            | Keyword::ANALYZE
            | Keyword::VERBOSE
    )
}

/// `Err` with the statement's leading words (`DELETE`, `COPY`, `CREATE EXTERNAL TABLE`)
/// unless `statement` is a query: `SELECT`, `WITH`, `VALUES`, or `EXPLAIN` of one.
pub fn read_only(statement: &DfStatement) -> Result<(), String> {
    match statement {
        DfStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::Query(_) => Ok(()),
            other => Err(leading_words(&other.to_string())),
        },
        DfStatement::Explain(explain) => read_only(&explain.statement),
        DfStatement::CopyTo(_) => Err("COPY".to_owned()),
        DfStatement::CreateExternalTable(_) => Err("CREATE EXTERNAL TABLE".to_owned()),
        DfStatement::Reset(_) => Err("RESET".to_owned()),
    }
}

/// The first word of a statement's text, two for `CREATE`, `DROP` and `ALTER`.
fn leading_words(text: &str) -> String {
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    match (first.as_str(), words.next()) {
        ("CREATE" | "DROP" | "ALTER", Some(second)) => {
            format!("{first} {}", second.to_ascii_uppercase())
        }
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParserBuilder;

    use super::*;

    fn statement(sql: &str) -> DfStatement {
        let mut statements = DFParserBuilder::new(sql)
            .build()
            .unwrap()
            .parse_statements()
            .unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        statements.pop_front().unwrap()
    }

    #[test]
    fn only_queries_are_read_only() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "VALUES (1), (2)",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
        ] {
            assert_eq!(read_only(&statement(sql)), Ok(()), "{sql}");
        }
        for (sql, words) in [
            ("DELETE FROM fleet", "DELETE"),
            ("UPDATE fleet SET a = 1", "UPDATE"),
            ("INSERT INTO fleet VALUES (1)", "INSERT"),
            ("COPY (SELECT 1) TO 'x.csv' STORED AS CSV", "COPY"),
            ("EXPLAIN COPY (SELECT 1) TO 'x.csv'", "COPY"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("DROP TABLE fleet", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
        ] {
            assert_eq!(read_only(&statement(sql)), Err(words.to_owned()), "{sql}");
        }
    }

    /// Naive depth of a left-deep chain: `n` terms joined by `n - 1` operators.
    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn operator_chains_count_every_operator_and_lists_reset_the_count() {
        let deep = format!("SELECT {}", chain("1", "+", 1000));
        assert_eq!(nesting_estimate(&deep, 500), None, "1000 terms");
        assert!(nesting_estimate(&deep, 2000).is_some_and(|d| d >= 999));
        // The same thousand additions as list items nest one level each.
        let wide = format!("SELECT {}", chain("1 + 1", ", ", 1000));
        assert!(nesting_estimate(&wide, 500).is_some_and(|d| d < 10));
        // Parentheses add the chains of their enclosing groups.
        let nested = format!(
            "SELECT {} + ({} + ({}))",
            chain("1", "+", 200),
            chain("1", "+", 200),
            chain("1", "+", 200)
        );
        assert_eq!(nesting_estimate(&nested, 500), None);
        // A long IN list is flat.
        let list = format!(
            "SELECT * FROM fleet WHERE device IN ({})",
            chain("'d'", ",", 5000)
        );
        assert!(nesting_estimate(&list, 500).is_some());
    }

    #[test]
    fn set_operations_joins_and_common_table_expressions_count_as_chains() {
        let unions = chain("SELECT 1", " UNION ALL ", 600);
        assert_eq!(nesting_estimate(&unions, 500), None);
        let cross = format!("SELECT 1 FROM {}", chain("fleet", ", ", 600));
        assert_eq!(nesting_estimate(&cross, 500), None);
        let joins = format!(
            "SELECT 1 FROM fleet{}",
            " JOIN fleet USING (device)".repeat(600)
        );
        assert_eq!(nesting_estimate(&joins, 500), None);
        let ctes: Vec<String> = (1..600)
            .map(|i| format!("t{i} AS (SELECT * FROM t{})", i - 1))
            .collect();
        let ctes = format!(
            "WITH t0 AS (SELECT 1), {} SELECT * FROM t599",
            ctes.join(", ")
        );
        assert_eq!(nesting_estimate(&ctes, 500), None);
    }
}
