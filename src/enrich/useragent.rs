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

/// The marker lists compiled once into case-insensitive automata: one pass
/// over the user agent per list instead of one substring search per marker.
struct Markers {
    tv: AhoCorasick,
    tablet: AhoCorasick,
    flags: AhoCorasick,
}

fn automaton(patterns: &[&str], kind: MatchKind) -> AhoCorasick {
    // The patterns are fixed literals; building can only fail on absurd sizes.
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(kind)
        .build(patterns)
        .expect("marker automaton")
}

static MARKERS: LazyLock<Markers> = LazyLock::new(|| Markers {
    tv: automaton(TV_MARKERS, MatchKind::LeftmostFirst),
    tablet: automaton(TABLET_MARKERS, MatchKind::LeftmostFirst),
    flags: automaton(&FLAG_TOKENS, MatchKind::Standard),
});

fn flags_of(ua: &str) -> u8 {
    MARKERS
        .flags
        .find_overlapping_iter(ua)
        .fold(0, |acc, m| acc | (1 << m.pattern().as_usize()))
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
    let flags = flags_of(ua);
    let w = parser.parse(ua);
    let (browser, browser_version) = browser_of(ua, w.as_ref());
    let (os, os_version) = os_of(flags, w.as_ref());
    let category = w.as_ref().map_or("UNKNOWN", |w| w.category);
    let bot = matches!(category, "crawler" | "misc") || super::bots::is_bot(ua);
    let device_type = if bot {
        DeviceType::Bot
    } else {
        device_of(ua, flags, category)
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

fn device_of(ua: &str, flags: u8, category: &str) -> DeviceType {
    if category == "appliance" || MARKERS.tv.is_match(ua) {
        return DeviceType::Other;
    }
    if flags & (OPERA_MINI | OPERA_MOBI) != 0 {
        return DeviceType::Mobile;
    }
    if flags & WINDOWS_NT == 0 && MARKERS.tablet.is_match(ua) {
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

fn browser_of(
    ua: &str,
    w: Option<&WootheeResult>,
) -> (Option<CompactString>, Option<CompactString>) {
    if let Some((token, name)) = BROWSER_TOKENS.iter().find(|(t, _)| ua.contains(t)) {
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
