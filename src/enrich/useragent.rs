//! User-agent parsing: woothee, plus the rules it lacks.
//!
//! - Tablets: woothee calls iPads and Android tablets smartphones. An `iPad`
//!   token, Kindle/Silk/`KF..` Fire devices, Android without `Mobile`, and
//!   explicit tablet keywords make a tablet.
//! - Desktop-mode iPadOS sends a macOS Safari UA; nothing in it tells an iPad
//!   from a Mac, so it stays `desktop` (we do not guess from screen size, which
//!   a redirect never sees).
//! - Bots: woothee's crawler and misc categories, plus link previewers,
//!   monitors, HTTP libraries and headless browsers it misses. A request with
//!   no user agent at all is treated as a bot: every real browser sends one.
//! - TVs and consoles are `other`.

use woothee::parser::{Parser, WootheeResult};

use crate::domain::DeviceType;

/// What a user agent says about the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    pub device_type: Option<DeviceType>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub bot: bool,
}

/// Lower-case substrings that mark automated clients woothee does not know.
const BOT_MARKERS: &[&str] = &[
    "bot/",
    "bot;",
    "bot ",
    "bot)",
    "-bot",
    "_bot",
    "bot-",
    "crawler",
    "spider",
    "slurp",
    "facebookexternalhit",
    "facebot",
    "whatsapp",
    "telegrambot",
    "skypeuripreview",
    "microsoftpreview",
    "embedly",
    "iframely",
    "preview",
    "http.rb",
    "mastodon",
    "viber/",
    "google-read-aloud",
    "google-inspectiontool",
    "gptbot",
    "chatgpt-user",
    "claudebot",
    "claude-web",
    "perplexity",
    "ccbot",
    "ahrefs",
    "semrush",
    "mj12bot",
    "dotbot",
    "petalbot",
    "bytespider",
    "uptimerobot",
    "pingdom",
    "statuscake",
    "betteruptime",
    "better uptime",
    "betterstack",
    "site24x7",
    "datadog",
    "newrelicpinger",
    "checkly",
    "monitor",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python/",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "java-http-client",
    "apache-httpclient",
    "okhttp",
    "node-fetch",
    "axios/",
    "undici",
    "postmanruntime",
    "insomnia",
    "libwww-perl",
    "lwp::",
    "ruby",
    "faraday",
    "guzzlehttp",
    "headlesschrome",
    "phantomjs",
    "scrapy",
    "puppeteer",
    "playwright",
    "selenium",
    "lighthouse",
    "pagespeed",
    "zgrab",
    "masscan",
    "nmap",
    "httpclient",
    "feedfetcher",
    "validator",
    "archive.org",
    "ia_archiver",
    "yandex",
    "baidu",
    "bingpreview",
    "applebot",
    "duckduckbot",
    "pinterestbot",
    "redditbot",
    "discordbot",
    "slackbot",
    "slack-imgproxy",
    "linkedinbot",
    "twitterbot",
    "snap url preview",
    "zoominfobot",
    "qwantify",
    "sogou",
    "exabot",
    "seznambot",
    "adsbot",
    "mediapartners",
    "apis-google",
    "feedly",
    "nutch",
    "heritrix",
    "wappalyzer",
    "googleother",
    "google favicon",
    "yeti/",
    "facebookcatalog",
    "existence discovery",
    "cardyb",
    "vkshare",
    "deno/",
    "bun/",
    "windowspowershell",
];

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

/// Parses a user agent; `None` means the request had none.
pub fn parse(parser: &Parser, ua: Option<&str>) -> Agent {
    let Some(ua) = ua.map(str::trim).filter(|s| !s.is_empty()) else {
        return Agent {
            device_type: Some(DeviceType::Bot),
            bot: true,
            ..Agent::default()
        };
    };
    let lower = ua.to_ascii_lowercase();
    let w = parser.parse(ua);
    let (browser, browser_version) = browser_of(ua, w.as_ref());
    let (os, os_version) = os_of(&lower, w.as_ref());
    let category = w.as_ref().map_or("UNKNOWN", |w| w.category);
    let bot = matches!(category, "crawler" | "misc") || is_bot(&lower);
    let device_type = if bot {
        DeviceType::Bot
    } else {
        device_of(&lower, category)
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

/// Whole user agents of HTTP runtimes that send only their name.
const BOT_NAMES: &[&str] = &["node", "deno", "bun", "go", "python", "java", "dart"];

fn is_bot(lower: &str) -> bool {
    if BOT_NAMES.contains(&lower) {
        return true;
    }
    // "cubot" is a phone brand, not a bot.
    let scrubbed = lower.replace("cubot", "cu-phone");
    BOT_MARKERS.iter().any(|m| scrubbed.contains(m))
}

fn device_of(lower: &str, category: &str) -> DeviceType {
    if TV_MARKERS.iter().any(|m| lower.contains(m)) || category == "appliance" {
        return DeviceType::Other;
    }
    if lower.contains("opera mini") || lower.contains("opera mobi") {
        return DeviceType::Mobile;
    }
    let windows = lower.contains("windows nt");
    if !windows && TABLET_MARKERS.iter().any(|m| lower.contains(m)) {
        return DeviceType::Tablet;
    }
    if lower.contains("android") && !lower.contains("mobile") && !lower.contains("windows phone") {
        return DeviceType::Tablet;
    }
    match category {
        "smartphone" | "mobilephone" => DeviceType::Mobile,
        "pc" => DeviceType::Desktop,
        _ if lower.contains("iphone") || lower.contains("mobile") => DeviceType::Mobile,
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

fn version_after(ua: &str, token: &str) -> Option<String> {
    let start = ua.find(token)? + token.len();
    let v: String = ua[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '_')
        .collect();
    let v = v.replace('_', ".").trim_matches('.').to_owned();
    (!v.is_empty()).then_some(v)
}

fn known(s: &str) -> Option<String> {
    (!s.is_empty() && s != "UNKNOWN").then(|| s.to_owned())
}

fn browser_of(ua: &str, w: Option<&WootheeResult>) -> (Option<String>, Option<String>) {
    if let Some((token, name)) = BROWSER_TOKENS.iter().find(|(t, _)| ua.contains(t)) {
        return (
            Some((*name).to_owned()),
            version_after(ua, token.trim_end()),
        );
    }
    if ua.contains("; wv)") {
        return (Some("Android WebView".into()), version_after(ua, "Chrome/"));
    }
    let Some(w) = w else { return (None, None) };
    let name = match w.name {
        "SamsungBrowser" => Some("Samsung Internet".to_owned()),
        "Webview" => Some("WebView".to_owned()),
        other => known(other),
    };
    (name, known(w.version))
}

fn os_of(lower: &str, w: Option<&WootheeResult>) -> (Option<String>, Option<String>) {
    let Some(w) = w else { return (None, None) };
    let version = known(&w.os_version).map(|v| v.replace('_', "."));
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
                .map(str::to_owned);
            (Some("Windows".into()), v)
        }
        "Linux" if lower.contains("android") => (Some("Android".into()), version),
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
    fn no_user_agent_is_a_bot() {
        assert!(parse(&Parser::new(), None).bot);
        assert!(parse(&Parser::new(), Some("  ")).bot);
    }
}
