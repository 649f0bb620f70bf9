"""Loads tfconv's converted folders with `transformers` and compares them with TensorFlow's outputs.

Usage: python check.py CASES_JSON

CASES_JSON lists cases: {"name", "folder", "class", "probes", "expected", "atol", "rtol",
"expect_failure", "expect_divergence_at"}. `probes` is a golden probes.json, `expected` the golden
expected.safetensors (TensorFlow's outputs, named as tfconv names them). Imports torch only, never
TensorFlow: the two bundle LLVM builds that clash in one process.

`expect_failure` says why a deliberately broken case must fail: "numeric" (it loads cleanly and
its outputs fall outside tolerance, first at `expect_divergence_at` when given) or "load"
(transformers reports unused or newly initialized weights in its log). Failing for any other
reason does not count as caught.

Prints one row per case and exits 1 if any case that should pass fails, or any case that should
fail passes or fails for another reason.
"""

import json
import logging
import re
import sys
import warnings

import torch
import transformers
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

# What transformers logs when the folder and the model built from its config.json disagree:
# 4.x "Some weights of ... were not used when initializing ..." / "... were not initialized from
# the model checkpoint ... and are newly initialized"; 5.x a "LOAD REPORT" table of UNEXPECTED,
# MISSING, MISMATCH and CONVERSION keys.
LOAD_PHRASES = ("were not used when initializing", "were not initialized", "newly initialized", "LOAD REPORT",
                "UNEXPECTED", "MISSING", "MISMATCH", "CONVERSION")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Logged on purpose and harmless: transformers 5's T5Config forces tie_word_embeddings to True, so
# every T5 v1.1 checkpoint, the hub's own included, reports that its separate lm_head is kept
# untied: the weights are loaded exactly as stored (the comparison below still checks them).
EXPECTED = (re.compile(r"specifies to tie shared\.weight to lm_head\.weight, but both are present in the checkpoints "
                       r"with different values, so we will NOT tie them"),)


class Captured(logging.Handler):
    """Keeps every record transformers logs while attached."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def load_problems(records):
    """The captured log lines that report weights not loaded as stored, shortened for a table."""
    problems = []
    for r in records:
        text = ANSI.sub("", r.getMessage())
        flagged = any(p in text for p in LOAD_PHRASES)
        # Any other warning about weights is suspect too, as for Python warnings below.
        flagged |= r.levelno >= logging.WARNING and any(w in text for w in ("weight", "initialized", "checkpoint"))
        if flagged and not any(e.search(text) for e in EXPECTED):
            problems.append(f"log {r.levelname}: {' '.join(text.split())[:300]}")
    return problems


def load(case):
    """from_pretrained with transformers' log captured: (model, load problems)."""
    cls = getattr(transformers, case["class"])
    root = hf_logging.get_logger()  # the library root, "transformers": every module's logger propagates to it
    handler = Captured()
    verbosity = hf_logging.get_verbosity()
    # 4.x logs unused weights at INFO when the class is not the config's architecture, so listen
    # from INFO; the default stderr handler is off meanwhile, the table shows what matters.
    hf_logging.set_verbosity_info()
    hf_logging.disable_default_handler()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = cls.from_pretrained(case["folder"], output_loading_info=True)
    finally:
        root.removeHandler(handler)
        hf_logging.enable_default_handler()
        hf_logging.set_verbosity(verbosity)
    logged = load_problems(handler.records)
    problems = logged + [f"{key}: {sorted(info[key])}"[:300] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
                         if info.get(key)]
    for w in caught:
        text = str(w.message)
        if "weight" in text or "initialized" in text or "checkpoint" in text:
            problems.append(f"warning: {text[:200]}")
    return model, problems, bool(logged)


DTYPES = {"int64": torch.int64, "float32": torch.float32}


def probe_inputs(probes):
    """A golden probes.json ({"seed", "inputs": [{"name", "dtype", "shape", "data"}, ...]}) as torch
    tensors by name. tfconv names probe inputs as the HF model's forward arguments (BERT:
    input_ids, token_type_ids, attention_mask), so they are passed as keywords unchanged."""
    return {t["name"]: torch.tensor(t["data"], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]) for t in probes["inputs"]}


def tfconv_outputs(model, case, probes):
    """The model's outputs under tfconv's names, in forward order. Each of `case["passes"]` is
    one forward call: on the probe inputs it names (all when null), the base model's hidden-state
    tuples (`hidden_states`, or T5's encoder/decoder ones) are named in order by `hidden`, and head
    outputs are read from the attributes `fields` names. transformers 5 records ALBERT's hidden states per inner layer: when
    it reports a whole multiple of the names given, every k-th one ends a layer."""
    all_inputs = probe_inputs(probes)
    out = {}
    previous = None
    with torch.no_grad():
        for p in case["passes"]:
            inputs = {k: v for k, v in all_inputs.items() if p["inputs"] is None or k in p["inputs"]}
            carry = p.get("carry")
            if carry:  # a continuing call (Transformer-XL's second segment): the state of the one before
                for probe_name, argument in carry["rename"]:
                    inputs[argument] = inputs.pop(probe_name)
                inputs[carry["argument"]] = getattr(previous, carry["output"])
            base = model.base_model(**inputs, output_hidden_states=True)
            for attribute, names in p["hidden"]:
                hidden = getattr(base, attribute)
                if len(hidden) != len(names) and len(names) > 1 and (len(hidden) - 1) % (len(names) - 1) == 0:
                    step = (len(hidden) - 1) // (len(names) - 1)
                    hidden = hidden[::step]
                for name, h in zip(names, hidden):
                    out[name] = h
                if len(hidden) != len(names):
                    out[f"{attribute} count"] = f"{len(hidden)} {attribute} for {len(names)} names"
            if getattr(base, "pooler_output", None) is not None:
                out["pooler"] = base.pooler_output
            full = model(**inputs)
            for ours, theirs in p["fields"]:
                out[ours] = getattr(full, theirs)
            previous = full
    return out


def tensor_type_as_dtype():
    """transformers 4.57's TransfoXLModel.forward calls `Tensor.type_as(dtype=...)`, which torch
    rejects (transformers#29650): let type_as take a dtype, as `Tensor.to` does."""
    original = torch.Tensor.type_as
    if getattr(original, "tfconv_workaround", False):
        return

    def type_as(self, other=None, dtype=None):
        return self.to(dtype) if other is None else original(self, other)

    type_as.tfconv_workaround = True
    torch.Tensor.type_as = type_as


WORKAROUNDS = {"tensor_type_as_dtype": tensor_type_as_dtype}


def unsupported(case):
    """Why this transformers release cannot load the case's class at all, or None."""
    for prefix, why in case.get("support", {}).get("unsupported", []):
        if transformers.__version__.startswith(prefix):
            return why
    return None


def check(case):
    """What is wrong with one case, by kind: {"load", "logged", "other", "numeric", "first", "worst"}.
    `numeric` lists outputs outside tolerance, `first` the first of them in forward order;
    `other` outputs missing or misshapen; `logged` whether transformers' log reported weights."""
    model, load_issues, logged = load(case)
    for name, _why in case.get("support", {}).get("workarounds", []):
        WORKAROUNDS[name]()
    model.eval()
    with open(case["probes"]) as f:
        probes = json.load(f)
    expected = load_file(case["expected"])
    for p in case["passes"]:  # outputs transformers keeps to itself; verify compares them
        for name in p["unexposed"]:
            expected.pop(name, None)
    got = tfconv_outputs(model, case, probes)
    result = {"load": load_issues, "logged": logged, "other": [], "numeric": [], "first": None, "worst": 0.0}
    result["other"] += [f"no output {name}" for name in expected if name not in got]
    result["other"] += [f"unexpected output {name}" for name, v in got.items() if name not in expected and not isinstance(v, str)]
    result["other"] += [v for v in got.values() if isinstance(v, str)]
    for name, mine in got.items():  # forward order
        if name not in expected or isinstance(mine, str):
            continue
        ref, mine = expected[name], mine.float()
        if tuple(mine.shape) != tuple(ref.shape):
            result["other"].append(f"{name}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}")
            continue
        scale = ref.abs().max().item()
        err = (mine - ref).abs().max().item()
        allowed = case["atol"] + case["rtol"] * scale
        result["worst"] = max(result["worst"], err / scale if scale > 0 else err)
        if not err <= allowed:  # also true for NaN
            result["numeric"].append(f"{name}: max|d| {err:.3e} > allowed {allowed:.3e}")
            result["first"] = result["first"] or name
    return result


def verdict(case, result):
    """(counts as expected, label, detail) for one case's result, or for its exception."""
    want = case.get("expect_failure")
    if isinstance(result, Exception):
        detail = f"{type(result).__name__}: {result}"[:300]
        return False, "FAIL" if not want else "WRONG FAILURE (exception)", detail
    problems = result["load"] + result["other"] + result["numeric"]
    detail = "; ".join(problems) if problems else f"worst rel {result['worst']:.2e}"
    if not want:
        return not problems, "PASS" if not problems else "FAIL", detail
    if not problems:
        return False, "NOT CAUGHT", detail
    if want == "numeric":
        at = case.get("expect_divergence_at")
        if result["load"] or result["other"]:
            return False, "WRONG FAILURE (not numeric)", detail
        if at and result["first"] != at:
            return False, f"WRONG FAILURE (first divergence {result['first']}, expected {at})", detail
        return True, "caught", detail
    if want == "load":
        # The log is what this case proves is read: info dicts alone do not count.
        return result["logged"], "caught" if result["logged"] else "WRONG FAILURE (nothing logged)", detail
    raise ValueError(f"unknown expect_failure {want!r}")


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    version = transformers.__version__
    hf_logging.disable_progress_bar()
    bad = 0
    skipped = {}
    print(f"{'case':<38} {'transformers':<13} {'class':<31} result")
    for case in cases:
        why = unsupported(case)
        if why:
            skipped.setdefault(why, []).append(case["name"])
            print(f"{case['name']:<38} {version:<13} {case['class']:<31} SKIPPED: {why}")
            continue
        for name, note in case.get("support", {}).get("workarounds", []):
            print(f"{case['name']:<38} {version:<13} {case['class']:<31} workaround {name}: {note}")
        try:
            result = check(case)
        except Exception as e:  # a load failure is a failed case, reported like any other
            result = e
        ok, label, detail = verdict(case, result)
        if not ok:
            bad += 1
        print(f"{case['name']:<38} {version:<13} {case['class']:<31} {label}: {detail}")
    skips = sum(len(v) for v in skipped.values())
    print(f"{len(cases) - bad - skips} passed, {bad} failed, {skips} skipped")
    for why, names in skipped.items():
        print(f"skipped with transformers {version} ({len(names)} cases: {', '.join(sorted({n.split('/')[0] for n in names}))}): {why}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
