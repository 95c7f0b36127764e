"""The claims' verdicts follow from the runs they are given (dino_rnn/report/claims.py)."""

from __future__ import annotations

import pytest

from dino_rnn.report import claims as C

PARAMS = {"scratch": 10856, "rnn": 7707, "lstm": 25563, "gru": 19611}


def run(arch, seed, test_loss, spe=0.2, layers=1, nonlinearity=None, status="ok", epochs=40, params=None, **more):
    return {
        "architecture": arch, "status": status, "test_loss": test_loss, "valid_loss": test_loss,
        "seconds_per_epoch": spe, "learnable_parameters": params or PARAMS[arch] * layers,
        "parameters": {"num_layers": layers, "hidden": 64, "lr": 4e-4, "epochs": epochs, "max_names": None,
                       "seed": seed, "nonlinearity": (nonlinearity or "tanh") if arch == "scratch" else None, **more},
    }


def grid(losses: dict, spe: dict | None = None, seeds=range(5)):
    """``losses[(arch, layers, nonlinearity)] = base loss``; seed s adds a shared 0.01·s (paired noise)."""
    out = []
    for (arch, layers, nl), base in losses.items():
        for s in seeds:
            jitter = 0.001 * ((s * 7919) % 5)  # differs per seed, not per model: pairs see it cancel
            own = 0.0005 * ((s * 31 + layers) % 3)  # a little per-model noise
            out.append(run(arch, s, base + 0.01 * s + jitter + own, (spe or {}).get((arch, layers, nl), 0.2),
                           layers, nl))
    return out


def base_grid(changes=None):
    losses = {(a, L, None): 1.60 for a in ("rnn", "lstm", "gru") for L in (1, 2, 3)}
    losses[("scratch", 1, "tanh")] = 1.70
    losses[("scratch", 1, "none")] = 1.80
    losses.update(changes or {})
    return losses


BENCH = {"scratch": {"reference": 4.0}, "rnn": {"reference": 1.8}, "lstm": {"reference": 1.9},
         "gru": {"reference": 4.1}}


def test_multilayer_futile_when_no_deeper_model_is_lower():
    assert C.claim_multilayer(grid(base_grid()))["verdict"].startswith("holds")
    # deeper models that are worse do not break the claim either
    worse = base_grid({("gru", 3, None): 1.7})
    assert C.claim_multilayer(grid(worse))["verdict"].startswith("holds")


def test_multilayer_does_not_hold_when_a_deeper_model_is_clearly_lower():
    better = base_grid({("lstm", 2, None): 1.50})
    v = C.claim_multilayer(grid(better))["verdict"]
    assert v.startswith("does not hold") and "nn.LSTM with 2 layers" in v


def test_multilayer_not_measured_without_the_deeper_runs():
    losses = {k: v for k, v in base_grid().items() if k[1] == 1}
    assert C.claim_multilayer(grid(losses))["verdict"].startswith("not measured")


def test_gru_lstm_at_par_and_faster():
    spe = {("gru", 1, None): 0.17, ("lstm", 1, None): 0.23}
    r = C.claim_gru_lstm(grid(base_grid(), spe, seeds=range(20)), {**BENCH, "gru": {"reference": 1.5}})
    assert r["verdict"].startswith("holds:"), r
    assert "over 20 seeds" in r["measured"]


def test_gru_lstm_not_at_par_and_slower_in_the_published_loop():
    spe = {("gru", 1, None): 0.17, ("lstm", 1, None): 0.23}
    r = C.claim_gru_lstm(grid(base_grid({("gru", 1, None): 1.65}), spe), BENCH)
    assert r["verdict"].startswith("holds in part") and "the LSTM's loss is lower" in r["verdict"]
    assert "slower in the published-style loop" in r["verdict"]
    r = C.claim_gru_lstm(grid(base_grid({("gru", 1, None): 1.65}), {("gru", 1, None): 0.3}), BENCH)
    assert r["verdict"].startswith("does not hold")


def test_rnn_speed_ratio():
    spe = {("scratch", 1, "tanh"): 0.16, ("rnn", 1, None): 0.09}
    r = C.claim_rnn_speed(grid(base_grid(), spe), BENCH)
    assert r["verdict"].startswith("does not hold"), r
    assert "2.2×" in r["measured"] and "1.8×" in r["measured"]
    fast = C.claim_rnn_speed(grid(base_grid(), {("scratch", 1, "tanh"): 0.5, ("rnn", 1, None): 0.1}),
                             {**BENCH, "scratch": {"reference": 8.0}})
    assert fast["verdict"] == "holds"


def test_parameter_ratios():
    r = C.claim_parameters(grid(base_grid()))
    assert r["verdict"] == "holds: 3.32× and 2.54×"
    bad = [m for m in grid(base_grid()) if m["architecture"] != "gru"] + [run("gru", 0, 1.6, params=30000)]
    assert C.claim_parameters(bad)["verdict"].startswith("holds in part")


def test_linear_cell_is_worse():
    r = C.claim_linear_cell(grid(base_grid()))
    assert "worse" in r["verdict"]
    same = base_grid({("scratch", 1, "none"): 1.70})
    assert "no difference" in C.claim_linear_cell(grid(same))["verdict"]


def test_runs_outside_the_protocol_or_diverged_are_left_out():
    ms = grid(base_grid())
    # diverged deeper runs and 2-epoch runs of the same seeds, with low losses, must not count
    diverged = ms + [run("lstm", s, 0.1 + 0.01 * s, layers=2, status="diverged") for s in range(5)]
    short = ms + [run("lstm", s, 0.1 + 0.01 * s, layers=2, epochs=2) for s in range(5)]
    assert C.claim_multilayer(diverged)["verdict"].startswith("holds")
    assert C.claim_multilayer(short)["verdict"].startswith("holds")
    # any compared setting off its default (clipping here, or one added later) is not the protocol
    clipped = ms + [run("lstm", s, 0.1 + 0.01 * s, layers=2, clip=1.0) for s in range(5)]
    assert C.claim_multilayer(clipped)["verdict"].startswith("holds")
    hot = ms + [run("lstm", s, 0.1 + 0.01 * s, layers=2, temperature=1.0) for s in range(5)]
    assert C.claim_multilayer(hot)["verdict"].startswith("holds")


def test_the_protocol_is_every_compared_setting_at_its_default():
    from dino_rnn.settings import COMPARED, DEFAULTS

    assert C.protocol("lstm", num_layers=2) == {**{k: DEFAULTS[k] for k in COMPARED}, "arch": "lstm",
                                                 "num_layers": 2, "nonlinearity": None}
    assert C.protocol("scratch")["nonlinearity"] == "tanh"


def test_markdown_has_every_claim():
    md = C.claims_markdown(grid(base_grid()), BENCH)
    assert md.count("\n| ") == 5  # one row per claim
    for i in range(1, 6):
        assert f"| {i}. " in md


@pytest.mark.parametrize("n", [1])
def test_one_seed_gives_no_interval(n):
    assert C.claim_linear_cell(grid(base_grid(), seeds=range(n)))["verdict"] == "not measured"
