#!/usr/bin/env python3
"""Compares `switchyard generate --format json --logits` output with a fixture's golden.json (made
by Hugging Face transformers, see make_fixtures.py).

    check_parity.py GOLDEN.json OUTPUT.json --dtype f32|f16|bf16

f32: greedy tokens identical and last-prompt logits within 1e-4 (absolute).
f16/bf16: last-prompt logits within 2 % / 10 % of the largest |logit|; the greedy tokens that
match are reported, not required (on the tiny random fixtures near-ties flip in half precision,
for the reference as much as for us).
Prints one JSON line with the figures; exits 1 when the check fails.
"""

import argparse
import json
import sys

TOLERANCE = {"f32": ("abs", 1e-4), "f16": ("rel", 0.02), "bf16": ("rel", 0.10)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("golden")
    ap.add_argument("output")
    ap.add_argument("--dtype", choices=sorted(TOLERANCE), required=True)
    a = ap.parse_args()
    with open(a.golden) as f:
        golden = json.load(f)
    with open(a.output) as f:
        out = json.load(f)
    want_logits = golden["last_prompt_logits"]
    got_logits = out.get("last_prompt_logits") or []
    if len(got_logits) != len(want_logits):
        print(json.dumps({"ok": False, "error": f"{len(got_logits)} logits, expected {len(want_logits)}"}))
        return 1
    err = max(abs(x - y) for x, y in zip(got_logits, want_logits))
    scale = max(abs(x) for x in want_logits)
    kind, tol = TOLERANCE[a.dtype]
    bound = tol if kind == "abs" else tol * scale
    want_ids = golden["greedy_ids"]
    got_ids = out["generated_ids"][: len(want_ids)]
    same = 0
    while same < min(len(got_ids), len(want_ids)) and got_ids[same] == want_ids[same]:
        same += 1
    tokens_ok = same == len(want_ids) if a.dtype == "f32" else True
    ok = err <= bound and tokens_ok
    print(
        json.dumps(
            {
                "ok": ok,
                "dtype": a.dtype,
                "max_abs_logit_error": err,
                "bound": bound,
                "matching_greedy_tokens": same,
                "greedy_tokens": len(want_ids),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
