//! Bot detection: whether a user agent belongs to an automated client. Owns
//! the vendored isbot pattern list, the way it is compiled for the `regex`
//! crate, and the few rules of our own around it.
//!
//! - **isbot** (`isbot_patterns.json`): the pattern list of the npm package
//!   `isbot` 5.2.4 (Unlicense), copied verbatim so that an update is a file
//!   swap. It is maintained against large public crawler and browser corpora,
//!   which a hand-made list never is. The patterns are JavaScript regexes:
//!   they are compiled as one case-insensitive, ASCII-only byte regex (as
//!   JavaScript's `/i` without `u` reads them). The few with look-around,
//!   which the `regex` crate lacks, are compiled as their core plus the
//!   look-behind literals and the look-ahead checked beside each match.
//! - **Device models are masked** before matching: a manufacturer may name a
//!   phone anything (`CUBOT X30`, `Discovery Elite`, `Spider 8`), and the
//!   list's broad words would take the phone for a bot.
//! - **App tokens of real browsers** that contain such words are masked too.
//! - **Our markers**: clients the list misses (see `MARKERS`).

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder};

/// The isbot pattern list, verbatim (see the module comment).
const ISBOT_PATTERNS: &str = include_str!("isbot_patterns.json");

/// Substrings (any case) of kinds of automated clients that isbot misses.
const MARKERS: &[&str] = &[
    // Uptime and health checks.
    "uptime",
    "monitoring",
    "kube-probe",
    // Office and mail apps fetch a link to check or preview it; a person who
    // follows it lands in a browser.
    "microsoft office/",
    "ms-office",
    ") word/",
    ") powerpoint/",
    ") excel/",
    "outlook-ios/",
    "outlook-android/",
    "macoutlook/",
    "outlook-express/",
    // A native iOS or macOS app's own HTTP stack (link previews, prefetch):
    // browsers and in-app browsers send a Mozilla user agent instead.
    "cfnetwork/",
    // HTTP libraries isbot does not name.
    "(dart:io)",
    "ureq/",
    "windowspowershell/",
    // Screenshot and thumbnail services, link expanders, AI fetchers.
    "screenshot",
    "webthumb",
    "unshorten",
    "link-resolver",
    "claude-web",
];

/// Product tokens of real browsers and in-app browsers that contain what the
/// pattern list takes for a bot's; each is removed, up to the next space,
/// before matching.
const HUMAN_TOKENS: &[&str] = &[
    // Sogou's mobile browser (the list has "sogou" for Sogou's spider, which
    // "spider" catches anyway).
    "SogouMobileBrowser/",
    "SogouMSE",
    // The Baidu app: its version token can hold a "|".
    "baiduboxapp/",
    // WeChat's in-app browser runs in its "tools" process.
    "Process/tools",
    // QQ browser.
    "QQ-URL-Manager",
    // Google Earth's built-in browser.
    "Google Earth/",
    // Added when Google's front end relays a phone's request (with
    // ",gzip(gfe)"); the browser before it is the person's.
    "GoogleHypersonic",
    // The app ID of an Adobe AIR app's web view (`[air.com.example/1.0]`).
    "[air.com.",
];

/// Whole user agents of HTTP runtimes that send only their name.
const BOT_NAMES: &[&str] = &["node", "deno", "bun", "go", "python", "java", "dart"];

/// A pattern with look-around: its core, the literals that must not come
/// right before a match, and what must not come right after it.
#[derive(Debug)]
struct Guarded {
    core: Regex,
    not_after: Vec<Vec<u8>>,
    not_before: Option<Regex>,
}

impl Guarded {
    fn is_match(&self, ua: &[u8]) -> bool {
        let mut at = 0;
        while at <= ua.len() {
            let Some(m) = self.core.find_at(ua, at) else {
                return false;
            };
            if !self.vetoed(ua, m.start(), m.end()) {
                return true;
            }
            at = m.start() + 1;
        }
        false
    }

    fn vetoed(&self, ua: &[u8], start: usize, end: usize) -> bool {
        let before = &ua[..start];
        let behind = self.not_after.iter().any(|lit| {
            before.len() >= lit.len()
                && before[before.len() - lit.len()..].eq_ignore_ascii_case(lit)
        });
        behind
            || self
                .not_before
                .as_ref()
                .is_some_and(|r| r.is_match(&ua[end..]))
    }
}

/// The compiled rules.
#[derive(Debug)]
pub struct BotRules {
    /// Every isbot pattern without look-around and the cores of those with
    /// it, as one alternation: a user agent it does not match (most browsers)
    /// is cleared by the list in one pass instead of seven.
    gate: Regex,
    /// Every isbot pattern without look-around, as one alternation.
    plain: Regex,
    guarded: Vec<Guarded>,
    markers: AhoCorasick,
    human_tokens: AhoCorasick,
}

fn regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&from_javascript(pattern))
        .case_insensitive(true)
        .unicode(false)
        .size_limit(1 << 24)
        .build()
        .map_err(|e| format!("{pattern}: {e}"))
}

/// The one JavaScript-ism of the list: in a class, a `-` next to a class
/// escape (`[\w\d-.]`) is a literal there and a syntax error in `regex`.
fn from_javascript(pattern: &str) -> Cow<'_, str> {
    let class_escape = |pair: &[u8]| pair[0] == b'\\' && b"dwsDWS".contains(&pair[1]);
    let b = pattern.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(pattern.len() + 2);
    let (mut in_class, mut escaped) = (false, false);
    for (i, &c) in b.iter().enumerate() {
        let literal_dash = in_class
            && !escaped
            && c == b'-'
            && ((i >= 2 && class_escape(&b[i - 2..i]))
                || b.get(i + 1..i + 3).is_some_and(class_escape));
        if literal_dash {
            out.push(b'\\');
        }
        out.push(c);
        match c {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'[' => in_class = true,
            b']' => in_class = false,
            _ => {}
        }
    }
    if out == b {
        Cow::Borrowed(pattern)
    } else {
        // Only ASCII was inserted, so the bytes stay UTF-8.
        Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Splits `(?<!a|b)core(?!ahead)` into its parts; either guard may be absent.
/// Other look-around forms are refused, so that a new form in an updated list
/// fails the unit test instead of being misread.
fn split_lookaround(pattern: &str) -> Result<(Vec<String>, &str, Option<&str>), String> {
    let unsupported = || format!("unsupported look-around in isbot pattern {pattern}");
    let (not_after, rest) = match pattern.strip_prefix("(?<!") {
        Some(rest) => {
            let close = rest.find(')').ok_or_else(unsupported)?;
            let literals: Vec<String> = rest[..close].split('|').map(str::to_owned).collect();
            if literals
                .iter()
                .any(|l| l.contains(|c: char| "\\.*+?[](){}^$".contains(c)))
            {
                return Err(unsupported());
            }
            (literals, &rest[close + 1..])
        }
        None => (Vec::new(), pattern),
    };
    let (core, ahead) = match rest.find("(?!") {
        Some(at) if rest.ends_with(')') => (&rest[..at], Some(&rest[at + 3..rest.len() - 1])),
        Some(_) => return Err(unsupported()),
        None => (rest, None),
    };
    if ["(?<", "(?=", "(?!"].iter().any(|l| core.contains(l)) {
        return Err(unsupported());
    }
    Ok((not_after, core, ahead))
}

impl BotRules {
    /// Compiles the vendored list and our rules.
    pub fn new() -> Result<BotRules, String> {
        let patterns: Vec<String> = serde_json::from_str(ISBOT_PATTERNS)
            .map_err(|e| format!("isbot_patterns.json: {e}"))?;
        let mut plain = Vec::new();
        let mut cores = Vec::new();
        let mut guarded = Vec::new();
        for p in &patterns {
            if !p.contains("(?<") && !p.contains("(?=") && !p.contains("(?!") {
                regex(p)?;
                plain.push(format!("(?:{p})"));
                continue;
            }
            let (not_after, core, ahead) = split_lookaround(p)?;
            cores.push(format!("(?:{core})"));
            guarded.push(Guarded {
                core: regex(core)?,
                not_after: not_after.into_iter().map(String::into_bytes).collect(),
                not_before: ahead.map(|a| regex(&format!("^(?:{a})"))).transpose()?,
            });
        }
        let automaton = |list: &[&str]| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(list)
                .map_err(|e| e.to_string())
        };
        let gate = plain.iter().chain(&cores).map(String::as_str);
        Ok(BotRules {
            gate: regex(&gate.collect::<Vec<_>>().join("|"))?,
            plain: regex(&plain.join("|"))?,
            guarded,
            markers: automaton(MARKERS)?,
            human_tokens: automaton(HUMAN_TOKENS)?,
        })
    }

    /// Whether `ua` (non-empty, trimmed) is an automated client's.
    pub fn is_bot(&self, ua: &str) -> bool {
        if BOT_NAMES.iter().any(|n| n.eq_ignore_ascii_case(ua)) {
            return true;
        }
        let masked = self.mask(ua);
        let bytes = masked.as_bytes();
        self.markers.is_match(bytes)
            || (self.gate.is_match(bytes)
                && (self.plain.is_match(bytes) || self.guarded.iter().any(|g| g.is_match(bytes))))
    }

    /// `ua` without its Android device model and without known human tokens.
    fn mask<'a>(&self, ua: &'a str) -> Cow<'a, str> {
        let ua = mask_android_model(ua);
        let mut matches = self.human_tokens.find_iter(ua.as_ref()).peekable();
        if matches.peek().is_none() {
            return ua;
        }
        let mut out = String::with_capacity(ua.len());
        let mut kept = 0;
        for m in matches {
            if m.start() < kept {
                continue;
            }
            out.push_str(&ua[kept..m.start()]);
            kept = ua[m.end()..].find(' ').map_or(ua.len(), |s| m.end() + s);
        }
        out.push_str(&ua[kept..]);
        Cow::Owned(out)
    }
}

/// Replaces the device model and build of the platform group of an Android
/// user agent (`(Linux; Android 13; Spider 8 Build/TP1A)` → `(Linux; Android
/// 13; model)`), and Instagram's device group after it. Segments with a `/`
/// before ` Build/` are kept: they are product tokens, which is where a bot
/// that claims Android names itself.
fn mask_android_model(ua: &str) -> Cow<'_, str> {
    let Some(android) = ua.find("Android") else {
        return Cow::Borrowed(ua);
    };
    let Some(close) = ua[android..].find(')').map(|c| android + c) else {
        return Cow::Borrowed(ua);
    };
    let first = ua[android..close]
        .find(';')
        .map_or(close, |s| android + s + 1);
    let mut out = String::with_capacity(ua.len());
    out.push_str(&ua[..first]);
    if first < close {
        for (i, segment) in ua[first..close].split(';').enumerate() {
            if i > 0 {
                out.push(';');
            }
            let model = segment.find(" Build/").map_or(segment, |b| &segment[..b]);
            out.push_str(if model.contains('/') {
                segment
            } else {
                " model"
            });
        }
    }
    let rest = &ua[close..];
    // Instagram: "Instagram 267.0 Android (31/12; 480dpi; 1080x2132; HTC;
    // HTC Desire 22 pro; htc_botdugls; qcom; de_DE; 440638617)".
    match rest
        .find(" Android (")
        .filter(|_| rest.contains("Instagram "))
    {
        Some(open) => match rest[open..].find(')') {
            Some(end) => {
                out.push_str(&rest[..open]);
                out.push_str(" Android (device");
                out.push_str(&rest[open + end..]);
            }
            None => out.push_str(rest),
        },
        None => out.push_str(rest),
    }
    Cow::Owned(out)
}

static RULES: LazyLock<BotRules> =
    // The vendored list and our literals are fixed; a unit test compiles them.
    LazyLock::new(|| BotRules::new().expect("bot rules compile"));

/// Whether `ua` (non-empty, trimmed) is an automated client's.
pub fn is_bot(ua: &str) -> bool {
    RULES.is_bot(ua)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_list_compiles_with_its_look_around() {
        let rules = BotRules::new().unwrap();
        assert_eq!(rules.guarded.len(), 6, "{:?}", rules.guarded);
        assert!(is_bot("Googlebot/2.1 (+http://www.google.com/bot.html)"));
        assert!(!is_bot(
            "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 GoogleApp"
        ));
        assert!(is_bot("Mozilla/5.0 (compatible; MyScanner/1.0)"));
        assert!(!is_bot(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1 Camscanner"
        ));
    }

    #[test]
    fn in_app_browsers_of_the_big_apps_are_people() {
        for ua in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 SP-engine/3.21.0 main/1.0 baiduboxapp/13.41.0.10 (Baidu; P2 16.6) NABar/1.0 themeUA=Theme/default",
            "Mozilla/5.0 (Linux; Android 12; V2134A Build/SP1A.210812.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/97.0.4692.98 Mobile Safari/537.36 T7/13.33 SP-engine/2.71.0 baiduboxapp/13.33.0.10 (Baidu; P1 12) NABar/1.0",
            "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 YaBrowser/24.1.0.0 YaApp_Android/24.10 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 12; LGE-AN10 Build/HONORLGE-AN10; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.99 XWEB/3211 MMWEBSDK/20220303 Mobile Safari/537.36 MMWEBID/7223 MicroMessenger/8.0.21.2120(0x2800153B) Process/toolsmp WeChat/arm64 Weixin NetType/5G Language/zh_CN ABI/arm64",
            "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 Instagram 300.0.0.29.110 Android (29/10; 480dpi; 1024x720; CUBOT; X30; botdugls; mt6771; en_US; 515022270)",
        ] {
            assert!(!is_bot(ua), "{ua}");
        }
    }

    #[test]
    fn look_around_guards_veto_only_their_own_match() {
        let g = Guarded {
            core: regex("scan").unwrap(),
            not_after: vec![b"cam".to_vec()],
            not_before: None,
        };
        assert!(!g.is_match(b"CamScanner"));
        assert!(g.is_match(b"CamScanner scan"));
        let g = Guarded {
            core: regex("java").unwrap(),
            not_after: vec![],
            not_before: Some(regex("^(?:;)").unwrap()),
        };
        assert!(!g.is_match(b"(java; x)"));
        assert!(g.is_match(b"Java/17"));
    }

    #[test]
    fn android_device_models_are_masked() {
        let ua = "Mozilla/5.0 (Linux; Android 13; Spider 8 Build/TP1A) AppleWebKit/537.36";
        assert_eq!(
            mask_android_model(ua),
            "Mozilla/5.0 (Linux; Android 13; model) AppleWebKit/537.36"
        );
        let bot = "Mozilla/5.0 (Linux; Android 6.0; FooBot/1.0) AppleWebKit/537.36";
        assert_eq!(mask_android_model(bot), bot);
        assert!(is_bot(bot));
    }
}
