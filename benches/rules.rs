//! The rule engine's CPU work per statement: one pass of analysis (digest, kind, tables,
//! features) over a typical OLTP statement and over the whole digest corpus, and the walk
//! of 100 active regular-expression rules.
//!
//! `cargo bench --bench rules`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::config::QueryRule;
use sluice::rules::{Analyzer, Query, QueryRules};

/// 200 bytes of what an ORM sends for a point lookup.
const OLTP: &str = "SELECT `orders`.`id`, `orders`.`customer_id`, `orders`.`status`, `orders`.`total` FROM `orders` WHERE `orders`.`customer_id` = 48 AND `orders`.`status` IN ('paid', 'shipped', 'held') LIMIT 20 OFFSET 4";

fn corpus() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/digests.txt"
    ))
    .expect("the digest corpus");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("=> "))
        .map(str::to_owned)
        .collect()
}

fn analysis(c: &mut Criterion) {
    assert_eq!(OLTP.len(), 200);
    let mut group = c.benchmark_group("analyze");
    let mut analyzer = Analyzer::default();
    group.throughput(Throughput::Bytes(OLTP.len() as u64));
    group.bench_function("tokens_only_200B", |b| {
        b.iter(|| sluice::rules::tokens::Tokens::new(black_box(OLTP.as_bytes())).count())
    });
    group.bench_function("oltp_200B", |b| {
        b.iter(|| analyzer.analyze(black_box(OLTP.as_bytes())))
    });
    let statements = corpus();
    let bytes: usize = statements.iter().map(String::len).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("corpus_{}_statements", statements.len()), |b| {
        b.iter(|| {
            for s in &statements {
                black_box(analyzer.analyze(s.as_bytes()));
            }
        })
    });
    group.finish();
}

/// `n` active rules, each with a regex on the digest and one on the text, none of which
/// matches the benchmark statement (so every rule is considered).
fn rules(n: usize) -> QueryRules {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        query_rules: Vec<QueryRule>,
    }
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[query_rules]]\nrule_id = {i}\nmatch_digest = \"^SELECT .* FROM `?table_{i}`? WHERE\"\n\
             match_pattern = \"(?:DELETE|UPDATE) .*archive_{i}\"\ndestination_hostgroup = 20\n"
        ));
    }
    let file: File = toml::from_str(&text).unwrap();
    QueryRules::compile(&file.query_rules).unwrap()
}

fn evaluation(c: &mut Criterion) {
    let mut analyzer = Analyzer::default();
    let analysis = analyzer.analyze(OLTP.as_bytes());
    let digest_text = analyzer.digest_text().to_vec();
    let query = Query {
        user: "app",
        schema: Some("shop"),
        client: "10.1.2.3".parse().unwrap(),
        sql: OLTP.as_bytes(),
        digest_text: &digest_text,
        analysis: &analysis,
        suspicious: false,
    };
    let mut group = c.benchmark_group("rules");
    for n in [0, 10, 100] {
        let rules = rules(n);
        group.bench_function(format!("{n}_regex_rules"), |b| {
            b.iter(|| {
                let decision = rules.evaluate(black_box(&query));
                assert!(decision.hostgroup.is_none());
                decision
            })
        });
    }
    group.finish();
}

criterion_group!(benches, analysis, evaluation);
criterion_main!(benches);
