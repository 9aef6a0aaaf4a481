#!/usr/bin/env python3
"""Rebuilds the bot and human user-agent corpora in this folder from public
registry packages (see README.md here for each source, its version and its
licence). Run from this folder after fetching the packages into SRC:

    SRC=/tmp/corp python3 build.py

Everything is deterministic: rows are deduplicated and sorted, and samples are
taken by a stable hash of the user agent, never at random.
"""

import glob
import json
import os
import re
import sys
from pathlib import Path

import yaml

try:
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader

SRC = Path(os.environ.get("SRC", "/tmp/corp"))
OUT = Path(__file__).resolve().parent

# In-app browsers of the big apps, first match wins (WeChat UAs can also carry
# an MQQBrowser token, so WeChat comes before QQ).
APPS = [
    ("baidu", ["baiduboxapp"]),
    ("wechat", ["MicroMessenger"]),
    ("qq", ["MQQBrowser", " QQ/"]),
    ("yandex", ["YaBrowser", "YaApp", "YaSearchBrowser", "YandexSearch"]),
    ("line", ["Line/"]),
    ("instagram", ["Instagram"]),
    ("facebook", ["FBAN/", "FBAV/", "FB_IAB"]),
    ("tiktok", ["musical_ly", "BytedanceWebview", "TikTok", "trill_"]),
    ("snapchat", ["Snapchat"]),
    ("pinterest", ["Pinterest"]),
]


def app_of(ua):
    for name, tokens in APPS:
        if any(t in ua for t in tokens):
            return name
    return None


def fnv1a(ua):
    h = 0xCBF29CE484222325
    for b in ua.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def current(ua):
    """A browser release of about the last four years (2022 on)."""
    for pattern, floor in [
        (r"(?:Chrome|CriOS|Chromium)/(\d+)\.", 100),
        (r"(?:Firefox|FxiOS)/(\d+)", 100),
        (r"(?:iPhone|iPad|CPU) OS (\d+)_", 15),
        (r"Version/(\d+)[.\d]* (?:Mobile/\w+ )?Safari", 15),
    ]:
        m = re.search(pattern, ua)
        if m:
            return int(m.group(1)) >= floor
    return False


def browser_like(ua):
    """What a browser or in-app browser sends (not an app's HTTP library)."""
    return ua.startswith("Mozilla/5.0 (") and ("AppleWebKit/" in ua or "Gecko/" in ua)


# Listed as a bot by one source and as a browser by another: left out of both.
AMBIGUOUS = {
    # Fluid, a site-specific browser: crawler-user-agents has it, Matomo's
    # desktop fixtures too.
    "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_5_6; en-us) AppleWebKit/528.16 (KHTML, like Gecko) Fluid/0.9.6 Safari/528.16",
}


def clean(s):
    s = s.strip().replace("\t", " ")
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1]
    s = s.strip()
    return "" if s in AMBIGUOUS else s


def write(name, header, rows):
    rows = sorted({(c, u) for c, u in rows if u and "\n" not in u})
    with open(OUT / name, "w", encoding="utf-8") as f:
        for line in header:
            f.write(f"# {line}\n")
        f.write("# Columns: category <TAB> user_agent\n")
        for c, u in rows:
            f.write(f"{c}\t{u}\n")
    print(f"{name}: {len(rows)}", file=sys.stderr)
    return {u for _, u in rows}


def crawler_user_agents():
    path = SRC / "cua167/x/crawleruseragents/crawler-user-agents.json"
    rows = []
    for entry in json.load(open(path)):
        tag = (entry.get("tags") or ["untagged"])[0]
        rows += [(tag, clean(i)) for i in entry.get("instances", [])]
    write(
        "bots_crawler_user_agents.tsv",
        [
            "Bots: every `instances` string of crawler-user-agents 1.67.0 (PyPI wheel crawler_user_agents-1.67.0,",
            "file crawleruseragents/crawler-user-agents.json; github monperrus/crawler-user-agents). MIT, (c) 2017 Martin Monperrus.",
            "category = the entry's first tag.",
        ],
        rows,
    )


def matomo_fixtures():
    base = SRC / "py/device_detector-6.5.1/device_detector/tests/fixtures/upstream"
    bots = []
    for x in yaml.load(open(base / "bots.yml"), Loader=Loader):
        cat = ((x.get("bot") or {}).get("category") or "uncategorised").lower().replace(" ", "-")
        bots.append((cat, clean(x["user_agent"])))
    write(
        "bots_matomo.tsv",
        [
            "Bots: every user_agent of Matomo Device Detector's tests/fixtures/bots.yml, as shipped in the PyPI sdist",
            "device_detector-6.5.1 (device_detector/tests/fixtures/upstream/bots.yml). LGPL-3.0-or-later, (c) Matomo.",
            "category = the fixture's bot category, lower-case.",
        ],
        bots,
    )
    humans = []
    for f in sorted(base.glob("*.yml")):
        if f.name == "bots.yml":
            continue
        for x in yaml.load(open(f), Loader=Loader) or []:
            if not isinstance(x, dict) or "user_agent" not in x:
                continue
            ua = clean(x["user_agent"])
            device = (x.get("device") or {}).get("type") or ""
            device = {"smartphone": "mobile", "phablet": "mobile"}.get(device, device)
            client = (x.get("client") or {}).get("type")
            # Browsers and the in-app browsers of apps; not feed readers,
            # media players, mail clients or HTTP libraries.
            if client not in ("browser", "mobile app"):
                continue
            if device not in ("mobile", "tablet", "desktop") or not browser_like(ua):
                continue
            humans.append((device, ua))
    # Keep every in-app browser and every current browser; sample the older
    # rest by hash so that the file stays small.
    rows = []
    for device, ua in humans:
        app = app_of(ua)
        if app:
            rows.append((app, ua))
        elif current(ua) or fnv1a(ua) % 100 < 12:
            rows.append((device, ua))
    write(
        "humans_matomo.tsv",
        [
            "Humans: browser user agents (Mozilla/5.0 with AppleWebKit or Gecko; client type browser or mobile app) of smartphone,",
            "phablet, tablet and desktop devices from Matomo Device Detector's test fixtures (PyPI sdist device_detector-6.5.1,",
            "device_detector/tests/fixtures/upstream/*.yml). LGPL-3.0-or-later, (c) Matomo.",
            "Kept: every in-app browser of the big apps, every browser of 2022 or later, and a 12% stable-hash sample of older ones.",
            "category = the app (baidu, wechat, qq, yandex, line, instagram, facebook, tiktok, snapchat, pinterest) or the device type.",
        ],
        rows,
    )


def user_agents_npm():
    rows = []
    files = sorted(glob.glob(str(SRC / "uav/*/package/dist/user-agents.json")))
    files.append(str(SRC / "user-agents-2.1.198/package/dist/user-agents.json"))
    versions = []
    for f in files:
        versions.append(re.search(r"(\d+\.\d+\.\d+)", f).group(1))
        for x in json.load(open(f)):
            ua = clean(x["userAgent"])
            if current(ua):
                rows.append((x["deviceCategory"], ua))
    return write(
        "humans_user_agents.tsv",
        [
            "Humans: user agents of npm package user-agents (github intoli/user-agents), dist/user-agents.json of versions",
            ", ".join(sorted(versions, key=lambda v: [int(p) for p in v.split('.')])) + ". BSD-2-Clause, (c) Intoli, LLC.",
            "Only browsers of 2022 or later are kept: most rows of these files are randomized Chrome/39-60 strings of",
            "DevTools device emulation (Android 5 SM-G900P, Nexus 5, Pixel 2, iPhone OS 11 with a 4-digit patch number),",
            "i.e. automation, not devices of today. category = the package's deviceCategory.",
        ],
        rows,
    )


def fake_useragent(seen):
    rows = []
    files = sorted(glob.glob(str(SRC / "fua/*/fake_useragent/data/browsers.jsonl")))
    files.append(str(SRC / "py/fake_useragent-2.2.0/src/fake_useragent/data/browsers.jsonl"))
    for f in files:
        for line in open(f):
            x = json.loads(line)
            ua = clean(x["useragent"])
            if current(ua) and ua not in seen:
                rows.append((x["type"], ua))
    write(
        "humans_fake_useragent.tsv",
        [
            "Humans: user agents of PyPI package fake-useragent 2.0.3, 2.1.0 and 2.2.0 (fake_useragent/data/browsers.jsonl;",
            "github fake-useragent/fake-useragent), browsers of 2022 or later, minus those already in humans_user_agents.tsv.",
            "Apache-2.0. category = the package's device type.",
        ],
        rows,
    )


def crawlerdetect_bots():
    path = SRC / "py/crawlerdetect-0.4.2/tests/fixtures/user_agent/crawlers.txt"
    rows = [("crawlerdetect", clean(line)) for line in open(path, errors="replace")]
    write(
        "bots_crawlerdetect.tsv",
        [
            "Bots: every line of CrawlerDetect's crawler fixtures (PyPI sdist crawlerdetect-0.4.2,",
            "tests/fixtures/user_agent/crawlers.txt; the fixtures of github JayBizzle/Crawler-Detect). MIT.",
            "The fixtures have no categories: category = crawlerdetect.",
        ],
        rows,
    )


def crawlerdetect_inapp():
    path = SRC / "py/crawlerdetect-0.4.2/tests/fixtures/user_agent/devices.txt"
    per_app = {}
    for line in open(path, errors="replace"):
        ua = clean(line)
        app = app_of(ua)
        if app and browser_like(ua):
            per_app.setdefault(app, set()).add(ua)
    rows = []
    for app, uas in per_app.items():
        # At most 150 per app (Facebook alone has 27,000), by stable hash.
        rows += [(app, ua) for ua in sorted(uas, key=fnv1a)[:150]]
    write(
        "humans_crawlerdetect_inapp.tsv",
        [
            "Humans: in-app browsers of the big apps among the human fixtures of CrawlerDetect (PyPI sdist crawlerdetect-0.4.2,",
            "tests/fixtures/user_agent/devices.txt; the fixtures of github JayBizzle/Crawler-Detect). MIT.",
            "At most 150 per app, chosen by stable hash. category = the app.",
        ],
        rows,
    )


def isbot_fixture_inapp():
    path = Path(os.path.expanduser("~/.cargo/registry/src")).glob(
        "*/isbot-0.1.3/fixtures/omrilotan-browsers.json"
    )
    rows = []
    for p in path:
        for ua in json.load(open(p)):
            ua = clean(ua)
            app = app_of(ua)
            if app and browser_like(ua):
                rows.append((app, ua))
        break
    write(
        "humans_isbot_inapp.tsv",
        [
            "Humans: in-app browsers among the human fixtures of the isbot crate 0.1.3 (fixtures/omrilotan-browsers.json,",
            "a copy of the isbot project's browser fixtures). MIT (crate), Unlicense (isbot project).",
            "category = the app.",
        ],
        rows,
    )


if __name__ == "__main__":
    crawler_user_agents()
    matomo_fixtures()
    seen = user_agents_npm()
    fake_useragent(seen)
    crawlerdetect_bots()
    crawlerdetect_inapp()
    isbot_fixture_inapp()
