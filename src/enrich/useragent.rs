//! User-agent parsing: woothee, plus the rules it lacks.
//!
//! - Tablets: woothee calls iPads and Android tablets smartphones. An `iPad`
//!   token, Kindle/Silk/`KF..` Fire devices, Android without `Mobile`, and
//!   explicit tablet keywords make a tablet.
//! - Desktop-mode iPadOS sends a macOS Safari UA; nothing in it tells an iPad
//!   from a Mac, so it stays `desktop` (we do not guess from screen size, which
//!   a redirect never sees).
//! - Bots: woothee's crawler and misc categories, then `super::bots` (the
//!   isbot pattern list and our rules around it). A request with no user
//!   agent at all is treated as a bot: every real browser sends one.
//! - TVs and consoles are `other`.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use compact_str::CompactString;
use woothee::parser::{Parser, WootheeResult};

use crate::domain::DeviceType;

/// What a user agent says about the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    pub device_type: Option<DeviceType>,
    pub os: Option<CompactString>,
    pub os_version: Option<CompactString>,
    pub browser: Option<CompactString>,
    pub browser_version: Option<CompactString>,
    pub bot: bool,
}

/// Lower-case substrings of TVs, consoles and set-top boxes.
const TV_MARKERS: &[&str] = &[
    "smart-tv",
    "smarttv",
    "smart tv",
    "hbbtv",
    "web0s",
    "webos",
    "tizen",
    "bravia",
    "appletv",
    "apple tv",
    "crkey",
    "roku",
    "googletv",
    "google tv",
    "android tv",
    "androidtv",
    "playstation",
    "xbox",
    "nintendo",
    "aftb",
    "aftm",
    "afts",
    "aftt",
    "aftk",
    "aftn",
    "aftr",
    "aftka",
    "netcast",
    "viera",
    "philipstv",
    "; tv",
    "dtv",
    "opera tv",
    "vidaa",
];

const TABLET_MARKERS: &[&str] = &[
    "ipad", "kindle", "silk/", "playbook", "tablet", "; kf", "nexus 7", "nexus 9", "nexus 10",
];

/// Tokens whose presence `device_of` and `os_of` ask about.
const FLAG_TOKENS: [&str; 7] = [
    "opera mini",
    "opera mobi",
    "windows nt",
    "android",
    "mobile",
    "windows phone",
    "iphone",
];
const OPERA_MINI: u8 = 1 << 0;
const OPERA_MOBI: u8 = 1 << 1;
const WINDOWS_NT: u8 = 1 << 2;
const ANDROID: u8 = 1 << 3;
const MOBILE: u8 = 1 << 4;
const WINDOWS_PHONE: u8 = 1 << 5;
const IPHONE: u8 = 1 << 6;

/// What one pass over a user agent found of the token lists.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Found {
    /// `FLAG_TOKENS` present, as bits.
    flags: u8,
    tv: bool,
    tablet: bool,
    /// The first of `BROWSER_TOKENS` (in list order) present, in its case.
    browser: Option<usize>,
}

/// Every token list in one case-insensitive automaton, its patterns in
/// this order: `FLAG_TOKENS`, `TV_MARKERS`, `TABLET_MARKERS`,
/// `BROWSER_TOKENS`. One pass over the user agent instead of one per list
/// (and one substring search per browser token).
static TOKENS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    let browsers = BROWSER_TOKENS.iter().map(|(token, _)| *token);
    let patterns = FLAG_TOKENS
        .iter()
        .chain(TV_MARKERS)
        .chain(TABLET_MARKERS)
        .copied()
        .chain(browsers);
    // The patterns are fixed literals; building can only fail on absurd sizes.
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(patterns)
        .expect("user-agent token automaton")
});

fn found_in(ua: &str) -> Found {
    const TV: usize = FLAG_TOKENS.len();
    let tablet = TV + TV_MARKERS.len();
    let browser = tablet + TABLET_MARKERS.len();
    let mut found = Found::default();
    for m in TOKENS.find_overlapping_iter(ua) {
        match m.pattern().as_usize() {
            i if i < TV => found.flags |= 1 << i,
            i if i < tablet => found.tv = true,
            i if i < browser => found.tablet = true,
            i => {
                // Browser tokens are matched in their own case.
                let i = i - browser;
                let exact = &ua[m.start()..m.end()] == BROWSER_TOKENS[i].0;
                if exact && found.browser.is_none_or(|b| i < b) {
                    found.browser = Some(i);
                }
            }
        }
    }
    found
}

/// Parses a user agent; `None` means the request had none.
pub fn parse(parser: &Parser, ua: Option<&str>) -> Agent {
    let Some(ua) = ua.map(str::trim).filter(|s| !s.is_empty()) else {
        return Agent {
            device_type: Some(DeviceType::Bot),
            bot: true,
            ..Agent::default()
        };
    };
    let found = found_in(ua);
    let w = parser.parse(ua);
    let (browser, browser_version) = browser_of(ua, found.browser, w.as_ref());
    let (os, os_version) = os_of(found.flags, w.as_ref());
    let category = w.as_ref().map_or("UNKNOWN", |w| w.category);
    let bot = matches!(category, "crawler" | "misc") || super::bots::is_bot(ua);
    let device_type = if bot {
        DeviceType::Bot
    } else {
        device_of(found, category)
    };
    Agent {
        device_type: Some(device_type),
        os,
        os_version,
        browser,
        browser_version,
        bot,
    }
}

fn device_of(found: Found, category: &str) -> DeviceType {
    let flags = found.flags;
    if category == "appliance" || found.tv {
        return DeviceType::Other;
    }
    if flags & (OPERA_MINI | OPERA_MOBI) != 0 {
        return DeviceType::Mobile;
    }
    if flags & WINDOWS_NT == 0 && found.tablet {
        return DeviceType::Tablet;
    }
    if flags & ANDROID != 0 && flags & (MOBILE | WINDOWS_PHONE) == 0 {
        return DeviceType::Tablet;
    }
    match category {
        "smartphone" | "mobilephone" => DeviceType::Mobile,
        "pc" => DeviceType::Desktop,
        _ if flags & (IPHONE | MOBILE) != 0 => DeviceType::Mobile,
        _ => DeviceType::Other,
    }
}

/// App and browser tokens woothee does not name, most specific first.
const BROWSER_TOKENS: &[(&str, &str)] = &[
    ("Instagram ", "Instagram"),
    ("FBAV/", "Facebook"),
    ("FB_IAB/", "Facebook"),
    ("MicroMessenger/", "WeChat"),
    ("BytedanceWebview/", "TikTok"),
    ("musical_ly_", "TikTok"),
    ("TikTok ", "TikTok"),
    ("Snapchat/", "Snapchat"),
    ("LinkedInApp/", "LinkedIn"),
    ("Line/", "LINE"),
    ("Twitter for", "Twitter"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("EdgiOS/", "Edge"),
    ("EdgA/", "Edge"),
    ("Edg/", "Edge"),
    ("Edge/", "Edge"),
    ("OPR/", "Opera"),
    ("OPT/", "Opera"),
    ("Opera Mini/", "Opera Mini"),
    ("YaBrowser/", "Yandex Browser"),
    ("UCBrowser/", "UC Browser"),
    ("MiuiBrowser/", "Mi Browser"),
    ("Silk/", "Silk"),
    ("Vivaldi/", "Vivaldi"),
    ("Brave/", "Brave"),
    ("DuckDuckGo/", "DuckDuckGo"),
    ("CriOS/", "Chrome"),
    ("FxiOS/", "Firefox"),
];

fn version_after(ua: &str, token: &str) -> Option<CompactString> {
    let start = ua.find(token)? + token.len();
    let v: String = ua[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '_')
        .collect();
    let v = v.replace('_', ".");
    let v = v.trim_matches('.');
    (!v.is_empty()).then(|| v.into())
}

fn known(s: &str) -> Option<CompactString> {
    (!s.is_empty() && s != "UNKNOWN").then(|| s.into())
}

/// `token`: the index of the first of `BROWSER_TOKENS` in `ua`.
fn browser_of(
    ua: &str,
    token: Option<usize>,
    w: Option<&WootheeResult>,
) -> (Option<CompactString>, Option<CompactString>) {
    if let Some((token, name)) = token.map(|i| BROWSER_TOKENS[i]) {
        return (Some((*name).into()), version_after(ua, token.trim_end()));
    }
    if ua.contains("; wv)") {
        return (Some("Android WebView".into()), version_after(ua, "Chrome/"));
    }
    let Some(w) = w else { return (None, None) };
    let name = match w.name {
        "SamsungBrowser" => Some("Samsung Internet".into()),
        "Webview" => Some("WebView".into()),
        other => known(other),
    };
    (name, known(w.version))
}

fn os_of(flags: u8, w: Option<&WootheeResult>) -> (Option<CompactString>, Option<CompactString>) {
    let Some(w) = w else { return (None, None) };
    let version = known(&w.os_version).map(|v| {
        if v.contains('_') {
            v.replace('_', ".").into()
        } else {
            v
        }
    });
    match w.os {
        "iPhone" | "iPod" | "iOS" => (Some("iOS".into()), version),
        "iPad" => (Some("iPadOS".into()), version),
        "Mac OSX" => (Some("macOS".into()), version),
        "ChromeOS" => (Some("ChromeOS".into()), version),
        os if os.starts_with("Windows Phone") => (Some("Windows Phone".into()), version),
        os if os.starts_with("Windows") => {
            let v = os
                .strip_prefix("Windows ")
                .filter(|v| !v.contains("UNKNOWN"))
                .map(CompactString::from);
            (Some("Windows".into()), v)
        }
        "Linux" if flags & ANDROID != 0 => (Some("Android".into()), version),
        other => (known(other), version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ua: &str) -> Agent {
        parse(&Parser::new(), Some(ua))
    }

    /// What `found_in` must find, one substring search at a time.
    fn found_naively(ua: &str) -> Found {
        let lower = ua.to_ascii_lowercase();
        let any = |list: &[&str]| list.iter().any(|t| lower.contains(&t.to_ascii_lowercase()));
        Found {
            flags: FLAG_TOKENS
                .iter()
                .enumerate()
                .filter(|(_, t)| lower.contains(*t))
                .fold(0, |acc, (i, _)| acc | 1 << i),
            tv: any(TV_MARKERS),
            tablet: any(TABLET_MARKERS),
            browser: BROWSER_TOKENS.iter().position(|(t, _)| ua.contains(t)),
        }
    }

    #[test]
    fn one_pass_finds_what_a_search_per_token_finds() {
        let corpora = [
            include_str!("../../tests/data/user_agents.tsv"),
            include_str!("../../tests/data/corpus/humans_user_agents.tsv"),
            include_str!("../../tests/data/corpus/humans_fake_useragent.tsv"),
            include_str!("../../tests/data/corpus/bots_crawler_user_agents.tsv"),
        ];
        let uas = corpora
            .iter()
            .flat_map(|c| c.lines())
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit('\t').next());
        let mut with_browser = 0;
        for ua in uas {
            // Each as sent, and with the case of its letters changed, which
            // browser tokens must notice and the other lists must not.
            for ua in [
                ua.to_owned(),
                ua.to_ascii_uppercase(),
                ua.to_ascii_lowercase(),
            ] {
                assert_eq!(found_in(&ua), found_naively(&ua), "{ua}");
                with_browser += usize::from(found_in(&ua).browser.is_some());
            }
        }
        assert!(with_browser > 500, "{with_browser}");
        // A token found in the wrong case, then in its own; two tokens in
        // one agent, where the list's order decides, not the position.
        let name = |ua: &str| found_in(ua).browser.map(|i| BROWSER_TOKENS[i].1);
        let ua = "Mozilla/5.0 (Linux; Android 9; KFTRWI) silk/1 Silk/114.2";
        assert_eq!(found_in(ua), found_naively(ua));
        assert_eq!(name(ua), Some("Silk"));
        assert!(found_in(ua).tablet && found_in(ua).flags & ANDROID != 0);
        assert_eq!(
            name("Mozilla/5.0 (Linux; Android 9) Silk/114.2 EdgA/2"),
            Some("Edge")
        );
    }

    #[test]
    fn human_names() {
        let iphone = p(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(iphone.device_type, Some(DeviceType::Mobile));
        assert_eq!(iphone.os.as_deref(), Some("iOS"));
        assert_eq!(iphone.os_version.as_deref(), Some("17.2"));
        assert_eq!(iphone.browser.as_deref(), Some("Safari"));
        let samsung = p(
            "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        );
        assert_eq!(samsung.browser.as_deref(), Some("Samsung Internet"));
        assert_eq!(samsung.browser_version.as_deref(), Some("23.0"));
        assert_eq!(samsung.os.as_deref(), Some("Android"));
        let mac = p(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        );
        assert_eq!(mac.os.as_deref(), Some("macOS"));
        assert_eq!(mac.browser.as_deref(), Some("Chrome"));
        let win = p(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        );
        assert_eq!(
            (win.os.as_deref(), win.os_version.as_deref()),
            (Some("Windows"), Some("10"))
        );
        assert_eq!(win.browser.as_deref(), Some("Edge"));
    }

    #[test]
    fn a_cubot_phone_is_not_a_bot_but_a_bot_beside_it_is() {
        let phone = p(
            "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        );
        assert!(!phone.bot);
        assert_eq!(phone.device_type, Some(DeviceType::Mobile));
        assert!(p("Mozilla/5.0 (Linux; Android 10; CUBOT X30) MyCrawler/1.0").bot);
        assert!(p("NODE").bot);
    }

    #[test]
    fn no_user_agent_is_a_bot() {
        assert!(parse(&Parser::new(), None).bot);
        assert!(parse(&Parser::new(), Some("  ")).bot);
    }
}
