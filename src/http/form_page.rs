//! The form step's page: small, accessible, mobile-first HTML with no
//! external asset and no script. Every string that comes from a link's
//! owner (title, labels) or from the person scanning (their answers) is
//! escaped, in text and in attribute values alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::domain::{Form, FormFieldType};

/// Escapes `s` for HTML text and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:1.25rem;\
background:#f6f7f9;color:#1b1f24;line-height:1.5}\
main{max-width:30rem;margin:0 auto;background:#fff;border-radius:12px;padding:1.5rem;\
box-shadow:0 1px 3px rgba(0,0,0,.12)}\
h1{font-size:1.4rem;margin:0 0 1rem}\
label{display:block;font-weight:600;margin:1rem 0 .35rem}\
.req{color:#b42318}\
input,textarea{width:100%;font:inherit;padding:.7rem .8rem;border:1px solid #8c959f;border-radius:8px;\
background:#fff;color:inherit}\
input:focus,textarea:focus{outline:3px solid #0969da;outline-offset:1px;border-color:#0969da}\
textarea{min-height:6rem}\
.error{color:#b42318;margin:.3rem 0 0;font-size:.95rem}\
[aria-invalid=true]{border-color:#b42318}\
.summary{background:#fff1f0;border:1px solid #b42318;border-radius:8px;padding:.7rem .9rem;margin:0 0 1rem}\
button{margin-top:1.5rem;width:100%;font:inherit;font-weight:600;padding:.85rem;border:0;\
border-radius:8px;background:#0969da;color:#fff;cursor:pointer}\
button:focus{outline:3px solid #1b1f24;outline-offset:2px}";

fn input_type(t: FormFieldType) -> Option<(&'static str, &'static str)> {
    // (type, autocomplete / inputmode hints)
    match t {
        FormFieldType::Email => Some(("email", " autocomplete=\"email\" inputmode=\"email\"")),
        FormFieldType::Tel => Some(("tel", " autocomplete=\"tel\" inputmode=\"tel\"")),
        FormFieldType::Number => Some(("text", " inputmode=\"decimal\"")),
        FormFieldType::Text => Some(("text", "")),
        FormFieldType::Textarea => None,
    }
}

/// The page for `form` on the scan `scan_id`, with its CSRF `token`; after
/// a refused submission, with the `values` sent and an `errors` message per
/// field.
pub fn render(
    form: &Form,
    action: &str,
    scan_id: &str,
    token: &str,
    values: &BTreeMap<String, String>,
    errors: &BTreeMap<String, String>,
) -> String {
    let title = escape(&form.title);
    let mut body = String::new();
    if !errors.is_empty() {
        let _ = write!(
            body,
            "<p class=\"summary\" role=\"alert\">Please correct the {} marked below.</p>",
            if errors.len() == 1 { "field" } else { "fields" }
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}\" novalidate>\
         <input type=\"hidden\" name=\"scan_id\" value=\"{}\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">",
        escape(action),
        escape(scan_id),
        escape(token)
    );
    for (i, f) in form.fields.iter().enumerate() {
        let id = format!("f{i}");
        let name = escape(&f.name);
        let value = values.get(&f.name).map(String::as_str).unwrap_or_default();
        let error = errors.get(&f.name);
        let required = if f.required {
            " <span class=\"req\" aria-hidden=\"true\">*</span>"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<label for=\"{id}\">{}{required}</label>",
            escape(&f.label)
        );
        let mut attrs = format!(" id=\"{id}\" name=\"{name}\"");
        if f.required {
            attrs.push_str(" required aria-required=\"true\"");
        }
        if error.is_some() {
            let _ = write!(
                attrs,
                " aria-invalid=\"true\" aria-describedby=\"{id}-error\""
            );
        }
        match input_type(f.field_type) {
            Some((ty, hints)) => {
                let _ = write!(
                    body,
                    "<input type=\"{ty}\"{attrs}{hints} value=\"{}\">",
                    escape(value)
                );
            }
            None => {
                let _ = write!(body, "<textarea{attrs}>{}</textarea>", escape(value));
            }
        }
        if let Some(message) = error {
            let _ = write!(
                body,
                "<p class=\"error\" id=\"{id}-error\">{}</p>",
                escape(message)
            );
        }
    }
    body.push_str("<button type=\"submit\">Continue</button></form>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    )
}

/// Checks one answer; `None` when it is fine. Answers are trimmed first.
pub fn check(t: FormFieldType, required: bool, value: &str) -> Option<String> {
    if value.is_empty() {
        return required.then(|| "This field is required.".to_owned());
    }
    let max = match t {
        FormFieldType::Textarea => MAX_TEXTAREA,
        _ => MAX_LINE,
    };
    if value.chars().count() > max {
        return Some(format!("At most {max} characters, please."));
    }
    if value.chars().any(|c| {
        c.is_control() && !(t == FormFieldType::Textarea && (c == '\n' || c == '\r' || c == '\t'))
    }) {
        return Some("This contains characters that cannot be used here.".to_owned());
    }
    match t {
        FormFieldType::Email if !is_email(value) => {
            Some("Enter an email address such as name@example.com.".to_owned())
        }
        FormFieldType::Tel if !is_phone(value) => {
            Some("Enter a phone number: digits, spaces and + ( ) - . only.".to_owned())
        }
        FormFieldType::Number if parse_number(value).is_none() => {
            Some("Enter a number such as 42 or 4.5.".to_owned())
        }
        _ => None,
    }
}

/// Longest single-line answer, in characters.
pub const MAX_LINE: usize = 200;
/// Longest textarea answer, in characters (at most 1,000 keeps every answer
/// within a visitor attribute's 1024 bytes only for ASCII; the store cuts to
/// the byte limit on a character boundary).
pub const MAX_TEXTAREA: usize = 1000;

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

fn is_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    (3..=20).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +()-./".contains(c))
}

/// A number answer: finite, `.` or `,` as the decimal separator.
pub fn parse_number(s: &str) -> Option<f64> {
    s.replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FormField;

    fn form() -> Form {
        Form {
            title: "Win a <b>prize</b> & more".into(),
            fields: vec![
                FormField {
                    name: "email".into(),
                    label: "E-mail <script>alert(1)</script>".into(),
                    field_type: FormFieldType::Email,
                    required: true,
                },
                FormField {
                    name: "note".into(),
                    label: "Note".into(),
                    field_type: FormFieldType::Textarea,
                    required: false,
                },
            ],
        }
    }

    #[test]
    fn every_string_is_escaped_and_every_input_labelled() {
        let values = BTreeMap::from([("note".to_owned(), "\"><script>x()</script>".to_owned())]);
        let errors = BTreeMap::from([("email".to_owned(), "This field is required.".to_owned())]);
        let html = render(&form(), "/s/form", "evt_1", "tok\"en", &values, &errors);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>prize"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;x()&lt;/script&gt;</textarea>"));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("<label for=\"f0\">") && html.contains("id=\"f0\""));
        assert!(html.contains("<label for=\"f1\">") && html.contains("id=\"f1\""));
        assert!(html.contains("aria-describedby=\"f0-error\""));
        for external in ["src=", "href=", "http://", "https://", "<script"] {
            assert!(!html.contains(external), "{external}");
        }
    }

    #[test]
    fn answers_are_checked_by_type() {
        use FormFieldType::*;
        assert!(check(Email, true, "").is_some());
        assert!(check(Email, false, "").is_none());
        assert!(check(Email, true, "a@b.co").is_none());
        for bad in ["a@b", "a b@c.de", "@c.de", "a@.de", "a@de.", "a@@b.de"] {
            assert!(check(Email, true, bad).is_some(), "{bad}");
        }
        assert!(check(Tel, true, "+43 (1) 234-56.78").is_none());
        assert!(check(Tel, true, "12").is_some());
        assert!(check(Tel, true, "call me").is_some());
        assert!(check(Number, true, "4,5").is_none());
        assert!(check(Number, true, "-12.5").is_none());
        assert!(check(Number, true, "inf").is_some());
        assert!(check(Number, true, "1e999").is_some());
        assert!(check(Text, true, &"x".repeat(201)).is_some());
        assert!(check(Text, true, "a\u{7}").is_some());
        assert!(check(Textarea, true, "line\r\nline").is_none());
        assert!(check(Textarea, true, &"x".repeat(1001)).is_some());
    }
}
