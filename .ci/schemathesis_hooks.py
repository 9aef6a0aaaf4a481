"""Schemathesis hooks for .ci/run: only what a JSON Schema cannot say.

Every rule the document can state is in the document; these hooks cover the
three it cannot, and change a request only where the fuzzer would otherwise
test something the contract does not promise:

- The fuzzer must not revoke the token it runs with. Schemathesis reuses IDs
  from earlier answers (`GET /v1/tokens` lists that token), and the
  documented behaviour of `DELETE /v1/tokens/{id}` is to revoke it, after
  which every request is a 401 and nothing else gets tested.
- A page token is opaque: only a `next_page_token` the server issued for the
  same query is valid, and any other non-empty one is a documented 400. In a
  case meant to be valid, a made-up token is left out.
- Form field names must be unique within a form. In a case meant to be valid,
  a field repeating an earlier name is left out (at least one field stays).
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["SCANHOP_FUZZ_BASE"]
TOKEN = os.environ["SCANHOP_FUZZ_TOKEN"]
# An ID of the right shape that names no token: its revocation is a 404.
NO_SUCH_TOKEN = "tok_01h455vb4pex5vsknk084sn02q"


def _tokens_at_start():
    """IDs of the tokens that exist before fuzzing: the one .ci/run uses."""
    request = urllib.request.Request(
        f"{BASE}/v1/tokens", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {token["id"] for token in json.load(answer)["data"]}


PROTECTED = _tokens_at_start()


def _is_positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path == "/v1/tokens/{id}" and case.method.upper() == "DELETE":
        if case.path_parameters and case.path_parameters.get("id") in PROTECTED:
            case.path_parameters["id"] = NO_SUCH_TOKEN
    if not _is_positive(case):
        return
    if case.query and case.query.get("page_token"):
        del case.query["page_token"]
    form = case.body.get("form") if isinstance(case.body, dict) else None
    if isinstance(form, dict) and isinstance(form.get("fields"), list):
        seen, kept = set(), []
        for field in form["fields"]:
            name = field.get("name") if isinstance(field, dict) else None
            if name not in seen:
                seen.add(name)
                kept.append(field)
        form["fields"] = kept
