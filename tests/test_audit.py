"""The reproduction audit (cape_hpc.audit) really computes: altered data change the affected verdicts."""
import csv

import numpy as np
import pytest
from roundtrip import assert_roundtrip

from cape_hpc.audit import (VERDICT_ALT, VERDICT_DATA, VERDICT_INTERNALS, VERDICT_METHOD, VERDICT_NO, VERDICT_OK,
                            VERDICT_UNINFORMATIVE, AuditOptions, AuditResult, Partial, load_claims, match, parse_target,
                            run_audit)
from cape_hpc.audit.targets import verdict_key
from cape_hpc.cli import main
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.data import data_dir
from cape_hpc.io.scores import load_frontier, load_loss, load_scores

CLAIMS = ["pythia-r-hs-tqa", "frontier-r", "frontier-line", "isocline-opt", "width-pythia", "loss-r2",
          "olmo-gamma-zero", "competing-heads", "bayes-factor", "nc-qwen3-none", "competing-heads-wilson",
          "sign-flip-families"]


def _rewrite(src, dst, edit):
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0].keys())
    for r in rows:
        edit(r)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return dst


def _verdicts(res):
    """Verdict per claim; 'not reproduced by any of K combinations tried' as VERDICT_NO."""
    return {c.id: (verdict_key(c.verdict) if verdict_key(c.verdict) in (VERDICT_NO, VERDICT_UNINFORMATIVE) else c.verdict)
            for c in res.claims}


@pytest.fixture(scope="module")
def shipped():
    return run_audit(load_scores(), AuditOptions(only=tuple(CLAIMS), n_resamples=50), frontier=load_frontier(),
                     loss=load_loss())


def test_registry_loads_and_every_claim_has_a_computation():
    claims = load_claims()
    assert len(claims) >= 60
    assert len({c.id for c in claims}) == len(claims)
    for c in claims:
        for p in (c.paper if isinstance(c.paper, list) else [c.paper]):
            parse_target(p, c.tolerance)


def test_shipped_verdicts(shipped):
    v = _verdicts(shipped)
    assert {c.id: c.verdict for c in shipped.claims}["olmo-gamma-zero"] == "not reproduced by any of 1 combination tried"
    assert v["pythia-r-hs-tqa"] == VERDICT_OK
    assert v["frontier-r"] == VERDICT_OK
    # with the corrected OLMo rows (issue 25) the calibration k falls: 0/7 stated, 7/7 reversed, never 6/7
    assert v["isocline-opt"] == VERDICT_NO
    assert v["olmo-gamma-zero"] == VERDICT_NO
    assert v["competing-heads"] == VERDICT_INTERNALS
    assert v["bayes-factor"] == VERDICT_METHOD
    assert v["nc-qwen3-none"] == VERDICT_DATA
    assert v["sign-flip-families"] == VERDICT_NO  # even the missing families could not make 14
    # the stated value is the computed one, independently: numpy's Pearson r
    df = load_scores()
    py = df[df.family == "Pythia"]
    c = {c.id: c for c in shipped.claims}["pythia-r-hs-tqa"]
    assert float(c.value) == pytest.approx(np.corrcoef(py.HS, py.TQA)[0, 1], abs=5e-5)


def test_altered_data_change_the_affected_verdicts(tmp_path, shipped):
    # Pythia TQA flattened upward, OLMo-7B TQA set equal to OLMo-1B, an OPT model moved,
    # frontier GPQA scrambled: the affected claims must flip, the others must not.
    def edit_scores(r):
        if r["family"] == "Pythia":
            r["TQA"] = f"{30 + 0.2 * float(r['HS']):.2f}"
        if r["model"] == "OLMo-7B":
            r["TQA"] = olmo_1b_tqa
        if r["model"] == "OPT-350M":
            r["TQA"] = "47.0"

    olmo_1b_tqa = str(load_scores().set_index("model").loc["OLMo-1B", "TQA"])
    rng = np.random.default_rng(0)

    def edit_frontier(r):
        r["GPQA"] = f"{rng.uniform(30, 95):.1f}"

    scores = _rewrite(data_dir() / "base_models.csv", tmp_path / "scores.csv", edit_scores)
    frontier = _rewrite(data_dir() / "frontier.csv", tmp_path / "frontier.csv", edit_frontier)
    res = run_audit(load_scores(scores), AuditOptions(only=tuple(CLAIMS), n_resamples=50),
                    frontier=load_frontier(frontier), loss=load_loss())
    before, after = _verdicts(shipped), _verdicts(res)
    assert before["pythia-r-hs-tqa"] == VERDICT_OK and after["pythia-r-hs-tqa"] == VERDICT_NO
    # the sign after width normalisation holds under every random width ordering (issue 25 item 5)
    assert before["width-pythia"] == VERDICT_UNINFORMATIVE and after["width-pythia"] != before["width-pythia"]
    assert before["frontier-r"] == VERDICT_OK and after["frontier-r"] == VERDICT_NO
    assert before["frontier-line"] == VERDICT_OK and after["frontier-line"] == VERDICT_NO
    assert before["olmo-gamma-zero"] == VERDICT_NO and after["olmo-gamma-zero"] == VERDICT_OK
    # OPT-350M moved and the OLMo calibration changed: the count of intervals the isocline predicts changes
    assert res.by_id()["isocline-opt"].value != shipped.by_id()["isocline-opt"].value
    for unaffected in ("loss-r2", "competing-heads", "bayes-factor", "competing-heads-wilson"):
        assert after[unaffected] == before[unaffected]


def test_cli_reproduce_json_and_store(tmp_path):
    out = tmp_path / "r.h5"
    rc = main(["reproduce", "--claim", "pythia-r-hs-tqa,frontier-r", "--n-resamples", "20", "--out", str(out),
               "--json"])
    assert rc == 0 and out.exists()
    from cape_hpc.io.store import read_results
    res = AuditResult.from_tree(read_results(out, "/reproduce"), where="/reproduce")
    assert {c.id for c in res.claims} == {"pythia-r-hs-tqa", "frontier-r"}
    assert res.provenance.options["only"] == ["pythia-r-hs-tqa", "frontier-r"]
    assert res.provenance.options["n_resamples"] == 20
    assert main(["reproduce", "--claim", "no-such-claim"]) == 2


def test_engine_on_a_registry_of_its_own(tmp_path):
    """A tiny registry: stated method matches / only an alternative matches / neither."""
    reg = tmp_path / "claims.yaml"
    reg.write_text("""
claims:
  - id: a
    gist: g
    paper: "-0.989"
    method: m
    compute: {fn: pearson, args: {families: [Pythia]}}
  - id: b
    gist: g
    paper: "-0.950"
    method: m
    compute: {fn: pearson, args: {families: [Pythia], stat: rho}}
    alternatives:
      - {name: "Pearson instead", args: {stat: r}}
      - {name: "GPT-Neo", args: {families: [GPT-Neo], stat: r}}
  - id: c
    gist: g
    paper: "0.5"
    method: m
    compute: {fn: pearson, args: {families: [Pythia]}}
""")
    res = run_audit(load_scores(), AuditOptions(claims=str(reg)))
    v = _verdicts(res)
    assert v["a"] == VERDICT_OK
    assert v["b"] == f"{VERDICT_ALT} GPT-Neo"
    assert v["c"] == VERDICT_NO
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - {id: x, gist: g, paper: '1', method: m, compute: {fn: nope}}\n")
    with pytest.raises(DataError, match="unknown compute fn"):
        load_claims(bad)


def test_targets_and_tolerance():
    t = parse_target("-0.989")
    assert t.tol == pytest.approx(0.0005)
    assert match([t], -0.9886) and not match([t], -0.9896)
    assert parse_target("3.5").tol == pytest.approx(0.05) and parse_target("14").tol == 0.5
    assert match([parse_target("<1e-5")], 3e-6) and not match([parse_target("<1e-5")], 2e-5)
    assert match([parse_target("6/7")], (6, 7)) and not match([parse_target("6/7")], (1, 7))
    assert match([parse_target("true")], True) and not match([parse_target("true")], False)
    assert match([parse_target("14")], Partial(6, 11, ["x"])) is False
    assert match([parse_target("10")], Partial(6, 11, ["x"])) is None
    assert not match([parse_target("1.0")], float("nan"))


def test_seed_spread_of_values_near_the_float64_range_equals_the_exact_stdev():
    import statistics
    import warnings

    from cape_hpc.audit.audit import seed_spread

    # the five seeds of a claim whose extrapolated N_c runs away (np.std overflowed in its squares)
    xs = np.array([5.41844452e169, 6.78742523e189, 3.55880530e44, 4.46904934e218, 3.56379935e15])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = seed_spread(xs)
    assert got == pytest.approx(statistics.stdev(xs.tolist()), rel=1e-12)     # exact (fractions) reference
    ys = np.array([0.25, -1.5, 3.0, 2.0])
    assert seed_spread(ys) == pytest.approx(statistics.stdev(ys.tolist()), rel=1e-12)
    assert seed_spread(np.zeros(3)) == 0.0


def test_every_claim_of_the_registry_evaluates_on_the_shipped_data():
    res = run_audit(load_scores(), AuditOptions(n_resamples=50), frontier=load_frontier(), loss=load_loss())
    assert len(res.claims) == len(load_claims())
    errors = [(c.id, c.reason) for c in res.claims if c.reason.startswith("error:")]
    assert not errors
    kinds = {verdict_key(c.verdict).split(" only with")[0] for c in res.claims}
    assert {VERDICT_OK, VERDICT_NO, VERDICT_INTERNALS, VERDICT_DATA, VERDICT_METHOD} <= kinds
    assert any(c.verdict.startswith(VERDICT_ALT) for c in res.claims)
    # a verdict of "reproduced" always carries a computed value, from a clean (non-degenerate) fit
    assert all(c.value not in ("-", "nan") for c in res.claims if c.verdict == VERDICT_OK)
    for c in res.claims:
        if c.verdict == VERDICT_OK:
            assert c.alternatives_tried[0].name == "stated method" and not c.alternatives_tried[0].degenerate
        if c.verdict.startswith(VERDICT_ALT):
            t = {a.name: a for a in c.alternatives_tried}[c.alternative]
            assert t.matches and not t.degenerate
        assert c.n_tried <= 64 and c.decided_by or c.verdict.startswith(("needs", "not computable"))


def test_audit_result_round_trips_and_counts_its_verdicts(tmp_path, shipped):
    back = assert_roundtrip(shipped, tmp_path, "/reproduce")
    assert back.by_id()["pythia-r-hs-tqa"].alternatives_tried[0].matches
    assert sum(shipped.counts.values()) == len(CLAIMS)
    assert shipped.counts[VERDICT_OK] == sum(c.verdict == VERDICT_OK for c in shipped.claims)
    assert shipped.provenance.options == AuditOptions(only=tuple(CLAIMS), n_resamples=50).to_dict()


def test_wilson_computation_equals_the_closed_form():
    """38/40 at 95%: the Wilson interval by hand (z = 1.959964).  The registry's Wilson claim takes
    its counts from the internals (never the paper's own counts), so it needs internals here."""
    from cape_hpc.audit.computations import COMPUTE, AuditContext

    lo, hi = COMPUTE["wilson"](AuditContext(load_scores()), k=38, n=40)
    z, k, n = 1.959963984540054, 38, 40
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert lo == pytest.approx(100 * (centre - half), abs=1e-9) and hi == pytest.approx(100 * (centre + half), abs=1e-9)
    res = run_audit(load_scores(), AuditOptions(only=("competing-heads-wilson",)))
    assert res.claims[0].verdict == VERDICT_INTERNALS and res.claims[0].needs == "internals"


def test_audit_options_validate_and_split_ids():
    assert AuditOptions(only=("a,b", "c")).only == ("a", "b", "c")
    with pytest.raises(OptionError, match="--n-resamples"):
        AuditOptions(n_resamples=0)
    with pytest.raises(OptionError, match="--claim"):
        run_audit(load_scores(), AuditOptions(only=("nope",)))
