//! QR codes of links: the image decodes back to the `short_url`, the options
//! are checked for scannability, and clients can cache by ETag.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, TestApp, spawn_app};

/// Reads the one QR code in a PNG: its text, its version's modules across,
/// and its error-correction bits as stored in the code (L=1, M=0, Q=3, H=2).
fn decode_png(png: &[u8]) -> (String, usize, u16) {
    let img = image::load_from_memory(png).expect("a PNG").to_luma8();
    let (w, h) = img.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            img.get_pixel(x as u32, y as u32).0[0]
        });
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one code in the image");
    let (meta, text) = grids[0].decode().expect("decodes");
    (text, 17 + 4 * meta.version.0, meta.ecc_level)
}

async fn link(app: &TestApp) -> (String, String) {
    let link = app
        .create_link(json!({"destination": "https://example.com/menu", "slug": "menu-2026"}))
        .await;
    let id = link["id"].as_str().unwrap().to_owned();
    (id, link["short_url"].as_str().unwrap().to_owned())
}

#[actix_rt::test]
async fn the_png_decodes_to_the_short_url_at_every_ecc_level_and_size() {
    let app = spawn_app().await;
    let (id, short_url) = link(&app).await;
    for (ecc, bits) in [("L", 1), ("M", 0), ("Q", 3), ("H", 2)] {
        for size in [128, 512, 1024] {
            let r = app
                .get(&format!(
                    "/v1/links/{id}/qr?format=png&size={size}&ecc={ecc}"
                ))
                .await;
            assert_eq!(r.status.as_u16(), 200, "{}", r.text());
            assert_eq!(r.header("content-type"), Some("image/png"));
            let img = image::load_from_memory(&r.body).unwrap();
            assert_eq!((img.width(), img.height()), (size, size));
            let (text, _, ecc_bits) = decode_png(&r.body);
            assert_eq!(text, short_url, "ecc {ecc}, size {size}");
            assert_eq!(ecc_bits, bits, "ecc {ecc}");
        }
    }
}

#[actix_rt::test]
async fn a_dark_on_light_brand_pair_is_drawn_in_its_colours_and_decodes() {
    let app = spawn_app().await;
    let (id, short_url) = link(&app).await;
    let r = app
        .get(&format!(
            "/v1/links/{id}/qr?format=PNG&fg=1A237E&bg=fff8e1&margin=2"
        ))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(decode_png(&r.body).0, short_url);
    let img = image::load_from_memory(&r.body).unwrap().to_rgb8();
    assert_eq!(
        img.get_pixel(0, 0).0,
        [0xff, 0xf8, 0xe1],
        "bg in the corner"
    );
    let dark = img.pixels().filter(|p| p.0 == [0x1a, 0x23, 0x7e]).count();
    let light = img.pixels().filter(|p| p.0 == [0xff, 0xf8, 0xe1]).count();
    assert_eq!(dark + light, img.pixels().count(), "only fg and bg");
}

/// The dark modules of an SVG's path (`M{x} {y}h1v1h-1z` each).
fn svg_modules(svg: &str) -> (u32, Vec<(u32, u32)>) {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let view: Vec<u32> = root
        .attribute("viewBox")
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let path = root.descendants().find(|n| n.has_tag_name("path")).unwrap();
    let dark = path
        .attribute("d")
        .unwrap()
        .split('M')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (x, rest) = s.split_once(' ').unwrap();
            let y = rest.split_once('h').unwrap().0;
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    (view[2], dark)
}

#[actix_rt::test]
async fn the_svg_is_well_formed_and_has_the_modules_of_the_png() {
    let app = spawn_app().await;
    let (id, _) = link(&app).await;
    let svg = app.get(&format!("/v1/links/{id}/qr?size=330")).await;
    assert_eq!(svg.status.as_u16(), 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    let (across, dark) = svg_modules(&svg.text());
    let png = app
        .get(&format!("/v1/links/{id}/qr?format=png&size=330"))
        .await;
    let (_, modules, _) = decode_png(&png.body);
    assert_eq!(across as usize, modules + 2 * 4, "modules plus margin 4");
    // Sample the PNG at each module's centre: the same modules are dark.
    let img = image::load_from_memory(&png.body).unwrap().to_luma8();
    let scale = 330 / across;
    let offset = (330 - scale * modules as u32) / 2;
    let mut png_dark = Vec::new();
    for y in 0..modules as u32 {
        for x in 0..modules as u32 {
            let at = |m: u32| offset + m * scale + scale / 2;
            if img.get_pixel(at(x), at(y)).0[0] < 128 {
                png_dark.push((x + 4, y + 4));
            }
        }
    }
    assert_eq!(dark, png_dark);
}

#[actix_rt::test]
async fn unscannable_or_invalid_options_are_refused_naming_the_fix() {
    let app = spawn_app().await;
    let (id, _) = link(&app).await;
    let cases = [
        ("fg=777777&bg=888888", "contrast"),
        ("fg=ffffff&bg=000000", "lighter than `bg`"),
        ("margin=1", "at least 2"),
        ("margin=0", "at least 2"),
        ("margin=17", "`margin`"),
        ("size=63", "`size`"),
        ("size=4097", "`size`"),
        ("size=big", "`size`"),
        ("ecc=X", "`ecc`"),
        ("format=gif", "`format`"),
        ("fg=%23000000", "`fg`"),
        ("bg=fffff", "`bg`"),
        ("bg=gggggg", "`bg`"),
        ("size=", "`size` is empty"),
    ];
    for (query, says) in cases {
        let r = app.get(&format!("/v1/links/{id}/qr?{query}")).await;
        let body: Value = r.assert_problem(400, "bad_request");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{query}: {detail}");
    }
}

#[actix_rt::test]
async fn the_etag_answers_304_and_changes_with_the_options() {
    let app = spawn_app().await;
    let (id, _) = link(&app).await;
    let path = format!("/v1/links/{id}/qr?format=png");
    let first = app.get(&path).await;
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(first.header("cache-control"), Some("private, max-age=3600"));
    let req = app
        .client
        .get(app.url(&path))
        .insert_header(("If-None-Match", etag.clone()));
    let again = app.send(req, None).await;
    assert_eq!(again.status.as_u16(), 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = app
        .get(&format!("/v1/links/{id}/qr?format=png&ecc=H"))
        .await;
    assert_ne!(other.header("etag"), Some(etag.as_str()));
}

#[actix_rt::test]
async fn another_workspaces_link_is_not_found_and_a_bad_id_is_a_bad_request() {
    let app = spawn_app().await;
    let (id, _) = link(&app).await;
    let other = app.other_workspace();
    let req = app.client.get(app.url(&format!("/v1/links/{id}/qr")));
    app.send_as(&other, req, None)
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/links/lnk_nope/qr")
        .await
        .assert_problem(400, "bad_request");
}

#[actix_rt::test]
async fn the_cli_writes_a_png_of_the_short_url_by_slug_or_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = ("SCANHOP__SERVER__PUBLIC_BASE_URL", "https://scan.example");
    let mut server = BinaryServer::start(&data, &[base]);
    let token = server.token.clone().expect("first start makes a token");
    let mut r = awc::Client::default()
        .post(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/", "slug": "menu-2026"}))
        .await
        .unwrap();
    let link: Value = r.json().await.unwrap();
    // A clean stop flushes the store and frees it for the CLI.
    server.signal(libc::SIGTERM);
    assert!(server.wait().success());
    let by_slug = run_cli(
        &data,
        &["qr", "menu-2026", "--format", "png", "--size", "256"],
    );
    assert!(
        by_slug.status.success(),
        "{}",
        String::from_utf8_lossy(&by_slug.stderr)
    );
    assert_eq!(
        decode_png(&by_slug.stdout).0,
        "https://scan.example/menu-2026"
    );
    let id = link["id"].as_str().unwrap();
    let svg = run_cli(&data, &["qr", id, "--ecc", "H"]);
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    svg_modules(&String::from_utf8(svg.stdout).unwrap());
    let bad = run_cli(&data, &["qr", "menu-2026", "--margin", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 2"));
    assert!(!run_cli(&data, &["qr", "no-such-slug"]).status.success());
}

fn run_cli(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(args)
        .env("SCANHOP__STORAGE__PATH", data)
        .env("SCANHOP__SERVER__PUBLIC_BASE_URL", "https://scan.example")
        .env("SCANHOP__LOG__LEVEL", "warn")
        .output()
        .expect("run scanhop")
}

#[actix_rt::test]
async fn a_new_slug_gives_a_new_code_and_etag() {
    let app = spawn_app().await;
    let (id, _) = link(&app).await;
    let path = format!("/v1/links/{id}/qr?format=png");
    let before = app.get(&path).await;
    let patched = app
        .patch(&format!("/v1/links/{id}"), json!({"slug": "menu-2027"}))
        .await;
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.text());
    let req = app
        .client
        .get(app.url(&path))
        .insert_header(("If-None-Match", before.header("etag").unwrap()));
    let after = app.send(req, None).await;
    assert_eq!(after.status.as_u16(), 200, "the old ETag is stale");
    assert_eq!(decode_png(&after.body).0, "https://scan.example/menu-2027");
}

#[actix_rt::test]
async fn a_code_wider_than_size_is_refused_with_the_size_that_fits() {
    let app = spawn_app().await;
    let slug = "a".repeat(64);
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": slug}))
        .await;
    let id = link["id"].as_str().unwrap();
    let r = app
        .get(&format!("/v1/links/{id}/qr?size=64&margin=16&ecc=H"))
        .await;
    let body = r.assert_problem(400, "bad_request");
    assert!(
        body["detail"].as_str().unwrap().contains("raise `size`"),
        "{body}"
    );
    let fits = app
        .get(&format!(
            "/v1/links/{id}/qr?size=256&margin=16&ecc=H&format=png"
        ))
        .await;
    assert_eq!(decode_png(&fits.body).0, link["short_url"]);
}

#[actix_rt::test]
async fn the_document_describes_the_options_and_both_image_types() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let op = &doc["paths"]["/v1/links/{id}/qr"]["get"];
    let content = op["responses"]["200"]["content"].as_object().unwrap();
    assert!(content.contains_key("image/png") && content.contains_key("image/svg+xml"));
    assert!(op["responses"]["304"].is_object());
    assert_eq!(
        content["image/png"]["schema"]["$ref"],
        "#/components/schemas/PngImage"
    );
    assert_eq!(doc["components"]["schemas"]["PngImage"]["format"], "binary");
    let params = op["parameters"].as_array().unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))["schema"]
            .clone()
    };
    assert_eq!(param("size")["minimum"], 64);
    assert_eq!(param("size")["maximum"], 4096);
    assert_eq!(param("margin")["minimum"], 2);
    assert_eq!(param("margin")["maximum"], 16);
    assert!(param("fg")["pattern"].is_string());
    for (name, schema, values) in [
        ("format", "QrFormat", json!(["svg", "png"])),
        ("ecc", "QrEcc", json!(["L", "M", "Q", "H"])),
    ] {
        let reference = param(name).to_string();
        assert!(reference.contains(schema), "{name}: {reference}");
        assert_eq!(doc["components"]["schemas"][schema]["enum"], values);
    }
}
