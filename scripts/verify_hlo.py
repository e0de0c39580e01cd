#!/usr/bin/env python3
"""Executes Switchyard's exported HLO modules with XLA (the peer that defines HLO semantics) and
compares the results with Switchyard's CPU device on the same inputs.

    python scripts/verify_hlo.py BUNDLE_DIR

BUNDLE_DIR comes from `cargo run --release --example hlo_verification_bundle -- BUNDLE_DIR`.
Each case is a serialized HloModuleProto, its inputs in parameter order and the CPU device's
outputs (graph outputs, then the updated state). A case passes when every XLA output is within
|xla - cpu| <= atol + atol_rms * rms(cpu) + rtol * |cpu| (integers exactly), and every state output
is declared as aliasing its parameter in the module (so the KV cache is updated in place).
Needs jax and jaxlib (verified with 0.10.2 from PyPI). Exits non-zero on any failure.
"""
import json
import re
import sys
from pathlib import Path

import jax
import jaxlib
import numpy as np
from jax._src.lib import xla_client

try:
    import ml_dtypes

    BF16 = ml_dtypes.bfloat16
except ImportError:  # jax depends on ml_dtypes; kept optional only for the message
    BF16 = None

DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "bf16": BF16,
    "i32": np.int32,
    "i64": np.int64,
    "u32": np.uint32,
    "u8": np.uint8,
}


def load(root, desc):
    dtype = DTYPES[desc["dtype"]]
    data = np.fromfile(root / desc["file"], dtype=dtype)
    return data.reshape(desc["dims"])


def compile_module(client, proto):
    comp = jaxlib._hlo.XlaComputation(proto)
    mlir = xla_client._xla.mlir.xla_computation_to_mlir_module(comp)
    exe = client.compile_and_load(mlir, client.devices()[:1], xla_client.CompileOptions())
    return comp, exe


def aliases(comp):
    """{output index: parameter number} from the module's input_output_alias."""
    text = comp.as_hlo_text()
    header = next((line for line in text.splitlines() if line.startswith("HloModule")), "")
    return {int(o): int(p) for o, p in re.findall(r"\{(\d+)\}:\s*\((\d+),", header)}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    manifest = json.loads((root / "manifest.json").read_text())
    # 64-bit integer inputs stay 64-bit (jax narrows them to 32 bits by default).
    jax.config.update("jax_enable_x64", True)
    client = jax.devices("cpu")[0].client
    device = client.devices()[0]
    print(f"XLA via jax {jax.__version__} / jaxlib {jaxlib.__version__}, {len(manifest['cases'])} cases")
    failures = []
    covered = set()
    worst = {}  # dtype -> (relative error, case)
    worst_model = (0.0, "")
    for case in manifest["cases"]:
        name = case["name"]
        try:
            comp, exe = compile_module(client, (root / case["module"]).read_bytes())
            inputs = [jax.device_put(load(root, d), device) for d in case["inputs"]]
            results = exe.execute(inputs)
            if len(results) != len(case["outputs"]):
                raise AssertionError(f"{len(results)} outputs, expected {len(case['outputs'])}")
            declared = aliases(comp)
            tol = case["tolerance"]
            for j, (got, want_desc) in enumerate(zip(results, case["outputs"])):
                want = load(root, want_desc)
                got = np.asarray(got)
                what = want_desc["name"]
                if got.shape != want.shape:
                    raise AssertionError(f"{what}: shape {got.shape}, expected {want.shape}")
                if want_desc["alias_of"] is not None and declared.get(j) != want_desc["alias_of"]:
                    raise AssertionError(
                        f"{what}: output {j} should alias parameter {want_desc['alias_of']}, "
                        f"the module declares {declared}")
                if want.dtype.kind in "iu":
                    bad = np.flatnonzero(got != want)
                    if bad.size:
                        i = bad[0]
                        raise AssertionError(
                            f"{what}: {bad.size} integer mismatches, first at {i}: "
                            f"{got.flat[i]} vs {want.flat[i]}")
                    continue
                g, w = got.astype(np.float64), want.astype(np.float64)
                if not np.array_equal(np.isnan(g), np.isnan(w)):
                    raise AssertionError(f"{what}: NaN in different places")
                fin = ~np.isnan(w)
                diff = np.abs(g[fin] - w[fin])
                diff[np.isinf(w[fin]) & (g[fin] == w[fin])] = 0.0
                rms = float(np.sqrt(np.mean(np.square(w[fin][np.isfinite(w[fin])])))) if fin.any() else 0.0
                limit = tol["atol"] + tol["atol_rms"] * rms + tol["rtol"] * np.abs(w[fin])
                rel = diff / np.maximum(np.abs(w[fin]), 1.0)
                r = float(rel.max()) if rel.size else 0.0
                key = want_desc["dtype"]
                if r >= worst.get(key, (0.0, ""))[0]:
                    worst[key] = (r, f"{name} {what}")
                if case["kind"] == "model" and r >= worst_model[0]:
                    worst_model = (r, f"{name} {what}")
                over = diff > limit
                if over.any():
                    i = int(np.argmax(diff - limit))
                    raise AssertionError(
                        f"{what}: {int(over.sum())} values out of tolerance, worst |d| = "
                        f"{float(diff[i]):.3g} at ref {float(w[fin][i]):.6g} (limit {float(limit[i] if np.ndim(limit) else limit):.3g})")
            covered.update(case["ops"])
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the run fails
            failures.append(f"{name}: {e}")
            print(f"FAIL {name}: {e}")
    missing = sorted(set(manifest["op_names"]) - covered)
    if missing:
        failures.append(f"ops never verified: {', '.join(missing)}")
    print()
    print(f"{len(manifest['cases']) - len(failures)} of {len(manifest['cases'])} cases passed; "
          f"{len(manifest['skipped'])} skipped (block-quantized weights have no HLO type)")
    print(f"ops verified: {len(covered & set(manifest['op_names']))} of {len(manifest['op_names'])}")
    for dtype, (r, where) in sorted(worst.items()):
        print(f"worst relative error {dtype}: {r:.3g} ({where})")
    if worst_model[1]:
        print(f"worst relative error in a model step: {worst_model[0]:.3g} ({worst_model[1]})")
    if failures:
        print("\nFAILURES:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
