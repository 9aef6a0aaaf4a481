"""Schemathesis hooks for .ci/run: only what a JSON Schema cannot say.

Every rule the document can state is in the document; these hooks cover the
four it cannot, and change a request only where the fuzzer would otherwise
test something the contract does not promise:

- The fuzzer must not revoke the token it runs with. Schemathesis reuses IDs
  from earlier answers (`GET /v1/tokens` lists that token), and the
  documented behaviour of `DELETE /v1/tokens/{id}` is to revoke it, after
  which every request is a 401 and nothing else gets tested. Such a call
  revokes a token made for it instead: a made-up ID would be a 404, which
  the stateful phase reads as a token it has just created going missing.
- A page token is opaque: only a `next_page_token` the server issued for the
  same query is valid, and any other non-empty one is a documented 400. In a
  case meant to be valid, a made-up token is left out.
- Form field names must be unique within a form. In a case meant to be valid,
  a field repeating an earlier name is left out (at least one field stays).
- A QR code's colours must be dark on light with 3:1 contrast (WCAG), and
  the code with its margin must fit in `size` pixels. In a case meant to be
  valid, a failing `fg`/`bg` pair is left out, and a `size` under 128 (where
  a long slug at `ecc=H` with a wide margin may not fit) is raised to 128.
- Visitor attributes are limited in UTF-8 bytes (keys 64, strings 1024),
  while JSON Schema counts characters. In a case meant to be valid, keys and
  strings are cut to their byte limits on a character boundary (a key cut
  to nothing, or onto another key, is left out).
- A webhook sends real requests to its URL (on scans and on `test`). In a
  case meant to be valid, the URL is replaced by one under `.invalid`, a
  name that never resolves, so fuzzing sends nothing anywhere. Its
  `link_ids` must name links of the workspace, which a schema cannot say: in
  a case meant to be valid they become `null` (all links).
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["SCANHOP_FUZZ_BASE"]
TOKEN = os.environ["SCANHOP_FUZZ_TOKEN"]
# Where fuzzed webhooks point: `.invalid` never resolves (RFC 2606).
HARMLESS_WEBHOOK_URL = "https://hooks.scanhop-fuzz.invalid/receiver"


def _tokens_at_start():
    """IDs of the tokens that exist before fuzzing: the one .ci/run uses."""
    request = urllib.request.Request(
        f"{BASE}/v1/tokens", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {token["id"] for token in json.load(answer)["data"]}


PROTECTED = _tokens_at_start()


def _throwaway_token():
    """The ID of a new publishable token, for a revocation to take."""
    request = urllib.request.Request(
        f"{BASE}/v1/tokens",
        data=json.dumps({"type": "publishable"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["id"]


def _luminance(hex6):
    """WCAG 2 relative luminance of a 6-hex-digit sRGB colour."""

    def lin(c):
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex6[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _scannable_qr(query):
    """Leaves out what the QR check refuses but a JSON Schema cannot say."""
    fg, bg = query.get("fg", "000000"), query.get("bg", "ffffff")
    try:
        lf, lb = _luminance(fg), _luminance(bg)
        ok = lf <= lb and (lb + 0.05) / (lf + 0.05) >= 3
    except (TypeError, ValueError):
        ok = True  # Not ours to fix: the schema's pattern decides.
    if not ok:
        query.pop("fg", None)
        query.pop("bg", None)
    try:
        small = int(query.get("size", 512)) < 128
    except (TypeError, ValueError):
        small = False
    if small:
        query["size"] = 128


def _cut(text, limit):
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def _byte_limited_attributes(body):
    attributes = body.get("attributes")
    if not isinstance(attributes, dict):
        return
    kept = {}
    for key, value in attributes.items():
        key = _cut(key, 64)
        if not key or key in kept:
            continue
        kept[key] = _cut(value, 1024) if isinstance(value, str) else value
    body["attributes"] = kept


def _is_positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path == "/v1/tokens/{id}" and case.method.upper() == "DELETE":
        if case.path_parameters and case.path_parameters.get("id") in PROTECTED:
            case.path_parameters["id"] = _throwaway_token()
    if not _is_positive(case):
        return
    if case.query and case.query.get("page_token"):
        del case.query["page_token"]
    if case.query and case.operation.path == "/v1/links/{id}/qr":
        _scannable_qr(case.query)
    if case.operation.path == "/v1/visitors/identify" and isinstance(case.body, dict):
        _byte_limited_attributes(case.body)
    if case.operation.path.startswith("/v1/webhooks") and isinstance(case.body, dict):
        if isinstance(case.body.get("url"), str):
            case.body["url"] = HARMLESS_WEBHOOK_URL
        if isinstance(case.body.get("link_ids"), list):
            case.body["link_ids"] = None
    form = case.body.get("form") if isinstance(case.body, dict) else None
    if isinstance(form, dict) and isinstance(form.get("fields"), list):
        seen, kept = set(), []
        for field in form["fields"]:
            name = field.get("name") if isinstance(field, dict) else None
            if name not in seen:
                seen.add(name)
                kept.append(field)
        form["fields"] = kept
