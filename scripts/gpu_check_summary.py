#!/usr/bin/env python3
"""The short table scripts/gpu-check.sh prints last, from the files it wrote:

    gpu_check_summary.py OUT_DIR DEVICE

Exits 1 when conformance or parity failed or a run is missing, so the check's status says so.
"""

import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main() -> int:
    out, device = sys.argv[1], sys.argv[2]
    ok = True
    rows = []

    for name, label in (("conformance.txt", "conformance"),
                        ("conformance-dequantize.txt", "conformance, qmatmul=dequantize")):
        path = os.path.join(out, name)
        if name != "conformance.txt" and not os.path.exists(path):
            continue
        conf = open(path).read() if os.path.exists(path) else ""
        m = re.search(r"passed (\d+), failed (\d+), skipped (\d+)", conf)
        if m:
            failed = re.findall(r"^\| ([^ |]+) \|.*FAILED", conf, re.M)
            text = f"{m[1]} passed, {m[2]} failed, {m[3]} skipped"
            if failed:
                text += " (" + ", ".join(failed) + ")"
            rows.append((label, text))
            ok &= m[2] == "0"
        else:
            rows.append((label, "did not run: " + (conf.strip().splitlines() or ["no output"])[-2:][0]))
            ok = False

    parity = {}
    try:
        for line in open(os.path.join(out, "parity.jsonl")):
            r = json.loads(line)
            res = r["result"] or {"ok": False}
            d = "embeddings" if "max_abs_error" in res or res.get("dtype") == "embeddings" else res.get("dtype", "?")
            p = parity.setdefault(d, {"ok": 0, "n": 0, "worst": 0.0, "fail": []})
            p["n"] += 1
            if res.get("ok"):
                p["ok"] += 1
            else:
                p["fail"].append(r["arch"])
            p["worst"] = max(p["worst"], res.get("max_abs_logit_error") or res.get("max_abs_error") or 0.0)
    except OSError:
        pass
    for d in ("f32", "bf16"):
        p = parity.get(d)
        if not p:
            rows.append((f"parity {d}", "did not run"))
            ok = False
            continue
        text = f"{p['ok']}/{p['n']} architectures, worst logit error {p['worst']:.2e}"
        if p["fail"]:
            text += " (failed: " + ", ".join(p["fail"]) + ")"
            ok = False
        rows.append((f"parity {d}", text))
    p = parity.get("embeddings")
    if p:
        text = f"{p['ok']}/{p['n']} encoders, worst vector error {p['worst']:.2e} (f32, bound 1e-4)"
        if p["fail"]:
            text += " (failed: " + ", ".join(p["fail"]) + ")"
            ok = False
        rows.append(("embeddings f32", text))

    bench = load(os.path.join(out, "bench.json"))
    torch = load(os.path.join(out, "torch.json"))
    gpu_tg = None
    bytes_per_token = None
    if bench:
        for run in bench["devices"]:
            if run.get("skipped"):
                rows.append((f"{run['device']}", "skipped: " + run["skipped"]))
                if run["device"] == device:
                    ok = False
                continue
            for r in run["results"]:
                t = r["tokens_per_s"]
                text = f"{t['median']:.1f} tok/s median (min {t['min']:.1f}, max {t['max']:.1f}), {run['dtype']}"
                if r.get("roofline_fraction") is not None:
                    text += f", {100 * r['roofline_fraction']:.0f}% of the reported peak bandwidth"
                rows.append((f"{run['display_name']} {test_label(r['test'])}", text))
                if run["device"] == device and is_tg(r["test"]):
                    gpu_tg = t["median"]
                    bytes_per_token = r.get("bytes_per_token")
        proj = bench.get("projection") or {}
        for c in proj.get("calibration", []):
            rows.append(
                (
                    f"{c['device']} {test_label(c['test'])} measured vs projected",
                    f"{c['measured_tokens_per_s']:.1f} vs {c['projected_tokens_per_s']:.1f} tok/s "
                    f"(projected; {c['measured_over_projected']:.2f}x, {100 * c['achieved_fraction']:.0f}% of the roofline; spec {c['spec'].split(' (')[0]})",
                )
            )
        for n in proj.get("notes", []):
            rows.append(("projection note", n))
    else:
        rows.append(("switchyard bench", "did not run"))
        ok = False
    if torch:
        rows.append(
            (
                f"PyTorch {torch['torch']} transformers {torch['transformers']} {torch['test']}",
                f"{torch['tokens_per_s_median']:.1f} tok/s median (min {torch['tokens_per_s_min']:.1f}, max {torch['tokens_per_s_max']:.1f}), {torch['dtype']}",
            )
        )
        if gpu_tg:
            rows.append(("switchyard / PyTorch (tg)", f"{gpu_tg / torch['tokens_per_s_median']:.2f}x"))
        bw = torch.get("copy_bandwidth_bytes_per_s")
        if bw and gpu_tg and bytes_per_token:
            rows.append(
                (
                    "switchyard tg vs measured copy bandwidth",
                    f"{100 * gpu_tg * bytes_per_token / bw:.0f}% ({bytes_per_token / 1e9:.2f} GB/token, copy {bw / 1e12:.2f} TB/s)",
                )
            )
    else:
        rows.append(("PyTorch baseline", "did not run"))

    name = device
    if bench:
        for run in bench["devices"]:
            if run["device"] == device and run.get("info"):
                name = f"{device}: {run['info']['description']}"
    print(f"### GPU check on {name}\n")
    print("| check | result |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(f"\nstatus: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def test_label(test) -> str:
    if isinstance(test, dict):
        (kind, n), = test.items()
        return f"{kind.lower()}{n}"
    return str(test)


def is_tg(test) -> bool:
    return test_label(test).startswith("tg")


if __name__ == "__main__":
    sys.exit(main())
