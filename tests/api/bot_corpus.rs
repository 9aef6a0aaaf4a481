//! Bot detection measured on public corpora (`tests/data/corpus/`, sources
//! and licences in its README): recall on crawler corpora, false positives on
//! real browsers and the in-app browsers of the big apps. Each corpus is split
//! by a stable hash of the user agent into a tuning part (70%) and a held-out
//! part (30%) that was not looked at while the rules were tuned; both must
//! pass. Run with `--nocapture` to see the per-category table.

use std::collections::{BTreeMap, HashMap};

/// Bot recall every bot corpus must reach, on each part.
const MIN_RECALL: f64 = 0.95;
/// Distinct human user agents the corpora must hold.
const MIN_HUMANS: usize = 10_000;

const CORPORA: &[(&str, &str)] = &[
    (
        "bots_crawler_user_agents",
        include_str!("../data/corpus/bots_crawler_user_agents.tsv"),
    ),
    (
        "bots_matomo",
        include_str!("../data/corpus/bots_matomo.tsv"),
    ),
    (
        "bots_crawlerdetect",
        include_str!("../data/corpus/bots_crawlerdetect.tsv"),
    ),
    (
        "humans_user_agents",
        include_str!("../data/corpus/humans_user_agents.tsv"),
    ),
    (
        "humans_fake_useragent",
        include_str!("../data/corpus/humans_fake_useragent.tsv"),
    ),
    (
        "humans_matomo",
        include_str!("../data/corpus/humans_matomo.tsv"),
    ),
    (
        "humans_crawlerdetect_inapp",
        include_str!("../data/corpus/humans_crawlerdetect_inapp.tsv"),
    ),
    (
        "humans_isbot_inapp",
        include_str!("../data/corpus/humans_isbot_inapp.tsv"),
    ),
];

/// FNV-1a of the user agent: the split does not move when files are rebuilt.
fn held_out(ua: &str) -> bool {
    let hash = ua.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % 10 < 3
}

struct Row {
    source: &'static str,
    category: &'static str,
    ua: &'static str,
    bot: bool,
}

/// Every row once: a user agent in several files of the same kind counts
/// for the first; one that is in a bot file and a human file is an error.
fn rows() -> Vec<Row> {
    let mut seen: HashMap<&str, bool> = HashMap::new();
    let mut rows = Vec::new();
    for (source, text) in CORPORA {
        let bot = source.starts_with("bots_");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (category, ua) = line.split_once('\t').expect("category <TAB> user agent");
            if let Some(kind) = seen.insert(ua, bot) {
                assert_eq!(kind, bot, "{ua} is both a bot and a human");
                continue;
            }
            rows.push(Row {
                source,
                category,
                ua,
                bot,
            });
        }
    }
    rows
}

#[derive(Default, Clone, Copy)]
struct Tally {
    rows: usize,
    right: usize,
}

impl Tally {
    fn add(&mut self, right: bool) {
        self.rows += 1;
        self.right += usize::from(right);
    }
    fn cell(self) -> String {
        if self.rows == 0 {
            return "–".into();
        }
        let pct = 100.0 * self.right as f64 / self.rows as f64;
        format!("{}/{} ({pct:.1}%)", self.right, self.rows)
    }
}

/// (source, category) → [tuning, held-out]
type Table = BTreeMap<(bool, &'static str, &'static str), [Tally; 2]>;

fn print_table(table: &Table) {
    println!("| kind | source | category | tuning: right/rows | held-out: right/rows |");
    println!("|---|---|---|---|---|");
    for ((bot, source, category), [tuning, held]) in table.iter().rev() {
        let kind = if *bot { "bot" } else { "human" };
        println!(
            "| {kind} | {source} | {category} | {} | {} |",
            tuning.cell(),
            held.cell()
        );
    }
}

#[test]
fn bot_recall_and_human_false_positives_on_public_corpora() {
    let parser = woothee::parser::Parser::new();
    let rows = rows();
    let humans = rows.iter().filter(|r| !r.bot).count();
    assert!(humans >= MIN_HUMANS, "only {humans} human user agents");
    let mut table = Table::new();
    let mut per_source: BTreeMap<(&str, bool), [Tally; 2]> = BTreeMap::new();
    let mut wrong = Vec::new();
    for row in &rows {
        let agent = scanhop::enrich::useragent::parse(&parser, Some(row.ua));
        let right = agent.bot == row.bot;
        let part = usize::from(held_out(row.ua));
        let key = (
            row.bot,
            row.source.split_once('_').map_or("", |s| s.1),
            row.category,
        );
        table.entry(key).or_default()[part].add(right);
        let kind = if row.bot { "bots" } else { "humans" };
        per_source.entry((kind, row.bot)).or_default()[part].add(right);
        per_source.entry((row.source, row.bot)).or_default()[part].add(right);
        if !right {
            let part = ["tuning", "held-out"][part];
            wrong.push(format!(
                "{part} {} {}: {}",
                row.source, row.category, row.ua
            ));
        }
    }
    print_table(&table);
    println!("\n| corpus | tuning | held-out |\n|---|---|---|");
    for ((source, _), [tuning, held]) in &per_source {
        println!("| {source} | {} | {} |", tuning.cell(), held.cell());
    }
    wrong.sort();
    println!("\nmisclassified:\n{}", wrong.join("\n"));
    for ((source, bot), parts) in &per_source {
        for (tally, part) in parts.iter().zip(["tuning", "held-out"]) {
            if *bot {
                let recall = tally.right as f64 / tally.rows as f64;
                assert!(
                    recall >= MIN_RECALL,
                    "{source} {part}: recall {}",
                    tally.cell()
                );
            } else {
                assert_eq!(tally.right, tally.rows, "{source} {part}: false positives");
            }
        }
    }
}
