"""How many epochs ASHA can save when each trial's budget is a few epochs, with rungs of
whole epochs and with the half-epoch checks trainserve makes for trials this short, by
Optuna's own pruner (the one app/studies.py replays), on trials whose values are random:
no training, so it runs in seconds.

    .venv/bin/python bench/asha_budget.py [--epochs 2] [--trials 8,16,32] [--factors 3,4,5,8]
        [--checks-per-epoch 1,2] [--goal 0.4]

For each number of checks per epoch, number of trials and reduction factor it prints the
share of epochs saved against the same trials run to the end, averaged over `--repeats`
random orders, and in brackets the share of those orders that save at least `--goal`
(40 %, the sweeps issue's). A trial's value after e epochs is its quality plus noise
that shrinks with e, so rankings mostly hold from rung to rung, as they do in training.

The last row, "1/factor", is what a sweep saves when exactly 1/factor of its trials go
on at each rung (min_resource * factor^k checks): it trains its first rung, then
1/factor of the rest to the next, and so on. With 1-epoch rungs and 2 epochs that is one
decision and 37.5 % saved at a factor of 4; with half-epoch checks, 56.2 %. Many trials
approach it. A short sweep can save more (8 trials let 1 on where 8/4 would be 2) or
less: Optuna's rule lets on every trial that is the best so far while fewer than
`factor` trials have reached the rung.
"""

import argparse
import itertools
import random
import statistics

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def epochs_trained(trials: int, checks: int, factor: int, seed: int, per_epoch: int) -> float:
    """The epochs a sequential ASHA sweep of `trials` trials trains, each trial reporting
    its value at each of its `checks` checks (`per_epoch` an epoch) and stopping when the
    pruner says so."""
    rng = random.Random(seed)
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=factor),
    )
    trained = 0
    for _ in range(trials):
        trial = study.ask()
        quality = rng.random()
        for check in range(1, checks + 1):
            trained += 1
            trial.report(quality + rng.gauss(0, 0.1 * per_epoch / check), check)
            if check < checks and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, quality)
    return trained / per_epoch


def kept_one_in_factor(checks: int, factor: int) -> float:
    """What ASHA saves of a budget of `checks` checks, with rungs at factor^k, when
    exactly 1/factor of the trials go on at each."""
    rungs = [factor**k for k in range(checks) if factor**k < checks] + [checks]
    trained = rungs[0] + sum(
        (later - rung) / factor ** (k + 1)
        for k, (rung, later) in enumerate(itertools.pairwise(rungs))
    )
    return 1 - trained / checks


def table(args, per_epoch: int, factors: list[int]) -> None:
    checks = args.epochs * per_epoch
    every = "1-epoch" if per_epoch == 1 else f"1/{per_epoch}-epoch"
    print(f"epochs saved by ASHA ({every} checks, {args.epochs}-epoch budget),")
    print(f"mean of {args.repeats} random orders (share of orders saving >= {args.goal:.0%})")
    print("  trials  " + "  ".join(f"{f'factor {f}':>14}" for f in factors))
    for trials in (int(t) for t in args.trials.split(",")):
        cells = []
        for factor in factors:
            saved = [
                1 - epochs_trained(trials, checks, factor, seed, per_epoch) / (trials * args.epochs)
                for seed in range(args.repeats)
            ]
            reached = sum(s >= args.goal for s in saved) / len(saved)
            cells.append(f"{100 * statistics.mean(saved):5.1f} % ({100 * reached:3.0f} %)")
        print(f"{trials:>8}  " + "  ".join(cells))
    limits = "  ".join(f"{100 * kept_one_in_factor(checks, f):12.1f} %" for f in factors)
    print(f"{'1/factor':>8}  {limits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="each trial's budget")
    parser.add_argument("--trials", default="8,16,32")
    parser.add_argument("--factors", default="3,4,5,8")
    parser.add_argument("--checks-per-epoch", default="1,2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--goal", type=float, default=0.4, help="a share of epochs saved")
    args = parser.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    for number, per_epoch in enumerate(int(c) for c in args.checks_per_epoch.split(",")):
        if number:
            print()
        table(args, per_epoch, factors)


if __name__ == "__main__":
    main()
